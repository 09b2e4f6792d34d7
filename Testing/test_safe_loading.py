"""Safe loading: no code path can run code from a model package or a config, and the shipped catalogue is pinned.

Guards the whole source tree (the library, the Slicer module, benchmarks) by parsing it: no pickle-based
loading, no eval/exec, and no dynamic import except the CLI's fixed list of sub-command modules.
test_package.py shows pickled weights are refused and test_models.py that class paths in configs are.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from pathlib import Path

import pytest
from conftest import REPOSITORY

from SPECTDenoiseLib.hub import PACKAGE_FILES, RESOURCES
from SPECTDenoiseLib.models.config import ModelConfig

SOURCE_FOLDERS = ("SPECTDenoiseLib", "SPECTDenoise", "benchmarks")
UNSAFE_MODULES = {"pickle", "cPickle", "dill", "cloudpickle", "marshal", "shelve", "joblib"}
UNSAFE_BUILTINS = {"eval", "exec", "compile", "__import__"}
ALLOWED_DYNAMIC_IMPORTS = {("SPECTDenoiseLib/cli.py", 'f"{__package__}.commands.{name}"')}
COMMIT = re.compile(r"^[0-9a-f]{40}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _sources() -> list[Path]:
    return sorted(path for folder in SOURCE_FOLDERS for path in (REPOSITORY / folder).rglob("*.py"))


def _unsafe_calls(path: Path, root: Path = REPOSITORY) -> list[str]:
    """Describe each pickle import, torch.load / numpy load with pickles, eval-like call and dynamic import."""
    source = path.read_text(encoding="utf-8")
    relative = path.relative_to(root).as_posix()
    found = []
    for node in ast.walk(ast.parse(source, filename=relative)):
        where = f"{relative}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [alias.name for alias in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{where} imports {name}" for name in names if name and name.split(".")[0] in UNSAFE_MODULES]
        if not isinstance(node, ast.Call):
            continue
        function = node.func
        if isinstance(function, ast.Name) and function.id in UNSAFE_BUILTINS:
            found.append(f"{where} calls {function.id}")
        if isinstance(function, ast.Attribute):
            owner = ast.unparse(function.value)
            if function.attr == "load" and owner == "torch":
                found.append(f"{where} calls torch.load")
            if function.attr in ("load", "loads") and owner in ("np", "numpy") and any(
                    k.arg == "allow_pickle" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                    for k in node.keywords):  # allow_pickle=False only restates numpy's safe default
                found.append(f"{where} loads numpy pickles")
            if function.attr == "import_module" and not (  # a fixed module name is not computed from data
                    node.args and isinstance(node.args[0], ast.Constant)) and (
                    relative, ast.get_source_segment(source, node.args[0])) not in ALLOWED_DYNAMIC_IMPORTS:
                found.append(f"{where} imports a module by a computed name")
    return found


def test_the_scanner_finds_each_kind_of_unsafe_call(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import pickle\nimport torch\nimport numpy as np\nimport importlib\n"
                      "torch.load('w.pt')\nnp.load('a.npy', allow_pickle=True)\nnp.load('b.npz', allow_pickle=False)\n"
                      "eval('1')\n"
                      "importlib.import_module(config['architecture'])\n", encoding="utf-8")
    found = _unsafe_calls(sample, tmp_path)
    assert [entry.split(" ", 1)[1] for entry in found] == [
        "imports pickle", "calls torch.load", "loads numpy pickles", "calls eval",
        "imports a module by a computed name"]


def test_no_source_file_can_run_code_from_data():
    found = [entry for path in _sources() for entry in _unsafe_calls(path)]
    assert found == []


def _catalogue_entries() -> list[dict]:
    catalogue = json.loads((RESOURCES / "Models.json").read_text(encoding="utf-8"))
    return catalogue["models"]


def test_the_shipped_catalogue_has_a_valid_default_and_unique_ids():
    catalogue = json.loads((RESOURCES / "Models.json").read_text(encoding="utf-8"))
    ids = [entry["id"] for entry in catalogue["models"]]
    assert len(ids) == len(set(ids))
    assert catalogue["default"] is None or catalogue["default"] in {
        entry["id"] for entry in catalogue["models"] if "path" in entry}


@pytest.mark.parametrize("entry", [e for e in _catalogue_entries() if "path" in e] or [None],
                         ids=lambda e: e["id"] if e else "no-shipped-models")
def test_shipped_catalogue_models_are_complete_packages(entry):
    if entry is None:
        pytest.skip("Resources/Models.json lists no shipped model yet")
    folder = RESOURCES / entry["path"]
    assert sorted(path.name for path in folder.iterdir() if not path.name.startswith(".")) == sorted(PACKAGE_FILES)
    assert isinstance(ModelConfig.load(folder / "config.json"), ModelConfig)
    for name, digest in entry.get("sha256", {}).items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest


@pytest.mark.parametrize("entry", [e for e in _catalogue_entries() if "repo_id" in e] or [None],
                         ids=lambda e: e["id"] if e else "no-hub-models")
def test_hub_catalogue_models_are_pinned_with_a_checksum_per_file(entry):
    if entry is None:
        pytest.skip("Resources/Models.json lists no hub model yet")
    assert COMMIT.match(entry["revision"])
    assert set(entry["sha256"]) == set(PACKAGE_FILES)
    assert all(SHA256.match(digest) for digest in entry["sha256"].values())
