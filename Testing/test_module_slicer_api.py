"""Every Slicer name the module uses exists in Slicer, and every Slicer function it calls accepts the arguments given.

The module cannot run in the real application here, so its source is read with ``ast`` and checked against the real
code we have: slicer-core's ``slicer_core`` namespace (the MRML classes the application puts into ``slicer``) and
its ``slicer/util.py`` (Slicer's own), and Slicer's ``packaging.py``, ``parameterNodeWrapper`` and
``ScriptedLoadableModule.py`` from the Slicer source tree (see ``slicer_application.py``). Attributes that only the
running application adds to ``slicer`` are allowed by an explicit list.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path

import pytest
from slicer_application import MODULE_DIR, require_slicer_sources

slicer_core = pytest.importorskip("slicer_core")
import slicer.util  # noqa: E402

# Set by the running application (qSlicerApplication / the DICOM module), not importable anywhere else.
APPLICATION_ATTRIBUTES = {"app", "mrmlScene", "modules", "dicomDatabase"}
# Python submodules of the real ``slicer`` package (Base/Python/slicer/*.py in Slicer's source tree).
SUBMODULES = {"util", "i18n", "packaging", "parameterNodeWrapper", "ScriptedLoadableModule"}


@dataclasses.dataclass(frozen=True)
class Use:
    """One use of a Slicer name: where, the dotted name, and for calls the number of positional and the keyword
    arguments (``None`` for a plain attribute use)."""

    where: str
    name: str
    positional: int | None = None
    keywords: tuple[str, ...] = ()


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    root = aliases.get(node.id, node.id)
    return ".".join([root, *reversed(parts)])


def slicer_uses(source: str, where: str) -> list[Use]:
    """The ``slicer.*`` names a module's source uses, and its ``from slicer... import`` names (as dotted names).

    A variable assigned from ``slicerPackaging()`` stands for ``slicer.packaging``.
    """
    tree = ast.parse(source)
    aliases = {}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                and isinstance(node.value.func, ast.Name) and node.value.func.id == "slicerPackaging"):
            aliases.update({target.id: "slicer.packaging" for target in node.targets if isinstance(target, ast.Name)})
    uses: list[Use] = []
    calls = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    for node in ast.walk(tree):
        line = f"{where}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "slicer":
            uses += [Use(line, f"{node.module}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Call):
            name = _dotted(node.func, aliases)
            if name and name.startswith("slicer."):
                uses.append(Use(line, name, len(node.args), tuple(k.arg for k in node.keywords if k.arg)))
        elif isinstance(node, ast.Attribute) and id(node) not in calls and isinstance(node.value, ast.Name):
            name = _dotted(node, aliases)
            if name and name.startswith("slicer."):
                uses.append(Use(line, name))
    return uses


def _reference_functions(path: Path) -> dict[str, inspect.Signature]:
    """Signatures of the top-level functions of a Slicer source file, read without importing it."""
    return {node.name: _signature(node.args) for node in ast.parse(path.read_text(encoding="utf-8")).body
            if isinstance(node, ast.FunctionDef)}


def _signature(arguments: ast.arguments) -> inspect.Signature:
    kind = inspect.Parameter
    positional = [(a.arg, kind.POSITIONAL_ONLY) for a in arguments.posonlyargs]
    positional += [(a.arg, kind.POSITIONAL_OR_KEYWORD) for a in arguments.args]
    first_default = len(positional) - len(arguments.defaults)
    parameters = [kind(name, how, default=None if index >= first_default else kind.empty)
                  for index, (name, how) in enumerate(positional)]
    if arguments.vararg:
        parameters.append(kind(arguments.vararg.arg, kind.VAR_POSITIONAL))
    parameters += [kind(a.arg, kind.KEYWORD_ONLY, default=kind.empty if d is None else None)
                   for a, d in zip(arguments.kwonlyargs, arguments.kw_defaults)]
    if arguments.kwarg:
        parameters.append(kind(arguments.kwarg.arg, kind.VAR_KEYWORD))
    return inspect.Signature(parameters)


def _exported(path: Path) -> set[str]:
    """The names in a Slicer source file's (or package's) ``__all__`` lists and its top-level definitions."""
    files = sorted(path.glob("*.py")) if path.is_dir() else [path]
    names = set()
    for file in files:
        for node in ast.parse(file.read_text(encoding="utf-8")).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in node.targets):
                names |= {element.value for element in node.value.elts}
    return names


def _accepts(signature: inspect.Signature, positional: int, keywords: tuple[str, ...]) -> str:
    """"" when a call with ``positional`` positional and these keyword arguments binds, else why not."""
    try:
        signature.bind(*range(positional), **dict.fromkeys(keywords))
    except TypeError as error:
        return str(error)
    return ""


def problems(uses: list[Use], slicer_python: Path) -> list[str]:
    """What is wrong with ``uses`` against Slicer: unknown names and calls whose arguments do not bind."""
    packaging = _reference_functions(slicer_python / "packaging.py")
    exported = {"parameterNodeWrapper": _exported(slicer_python / "parameterNodeWrapper"),
                "ScriptedLoadableModule": _exported(slicer_python / "ScriptedLoadableModule.py"),
                "i18n": _exported(slicer_python / "i18n.py"), "packaging": set(packaging),
                "util": {n for n in dir(slicer.util) if not n.startswith("_")}}
    found = []
    for use in uses:
        parts = use.name.split(".")
        top = parts[1]
        if top in SUBMODULES:
            if len(parts) == 2:
                continue
            if parts[2] not in exported[top]:
                found.append(f"{use.where}: slicer.{top} has no '{parts[2]}'")
            elif use.positional is not None and top in ("util", "packaging"):
                signature = (inspect.signature(getattr(slicer.util, parts[2])) if top == "util"
                             else packaging[parts[2]])
                why = _accepts(signature, use.positional, use.keywords)
                if why:
                    found.append(f"{use.where}: slicer.{top}.{parts[2]}{signature} called with {use.positional} "
                                 f"positional and keywords {list(use.keywords)}: {why}")
        elif top not in APPLICATION_ATTRIBUTES and not hasattr(slicer_core, top):
            found.append(f"{use.where}: 'slicer.{top}' is not in Slicer's namespace")
    return found


def _module_uses() -> list[Use]:
    uses = []
    for path in sorted(MODULE_DIR.rglob("*.py")):
        uses += slicer_uses(path.read_text(encoding="utf-8"), str(path.relative_to(MODULE_DIR)))
    return uses


def test_every_slicer_name_and_call_in_the_module_exists_with_those_arguments():
    python = require_slicer_sources()
    uses = _module_uses()
    assert {"slicer.util.tryWithErrorDisplay", "slicer.packaging.pip_ensure", "slicer.mrmlScene"} <= {
        use.name for use in uses}
    assert problems(uses, python) == []


def test_the_checker_finds_unknown_names_and_wrong_arguments():
    python = require_slicer_sources()
    source = ("import slicer\nfrom slicer.util import arrayFromVolumes\n"
              "slicer.vtkCommand.ModifiedEvent\nslicer.arrayFromVolume(node)\n"
              "slicer.util.tryWithErrorDisplay('x', wait=True)\nslicer.util.setSliceViewerLayers(None, None, None, 1, 2,"
              " 3, 4, 5)\npackaging = slicerPackaging()\npackaging.pip_ensure(['x'], requestor='me')\n")
    found = problems(slicer_uses(source, "snippet"), python)
    assert sorted(line.split(":")[1] for line in found) == ["2", "3", "4", "5", "6", "8"], found


def test_torch_is_installed_through_pytorchutils_with_keyword_arguments_only():
    source = (MODULE_DIR / "SPECTDenoise.py").read_text(encoding="utf-8")
    calls = [node for node in ast.walk(ast.parse(source))
             if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "installTorch"]
    assert calls and all(not call.args for call in calls)
    assert {k.arg for call in calls for k in call.keywords} == {"askConfirmation", "torchVersionRequirement"}


GUI_THREAD_FILES = ("SPECTDenoise.py", "SPECTDenoiseLogic/models.py", "SPECTDenoiseLogic/dependencies.py",
                    "SPECTDenoiseLogic/runner.py")


@pytest.mark.parametrize("name", GUI_THREAD_FILES)
def test_gui_thread_code_imports_no_network_hashing_or_torch(name):
    tree = ast.parse((MODULE_DIR / name).read_text(encoding="utf-8"))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                 and node.module}
    assert imported & {"socket", "hashlib", "urllib", "requests", "huggingface_hub", "torch", "monai"} == set()
