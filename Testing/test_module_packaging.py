"""The extension's CMake files ship what the module reads, in the build tree and the install tree, and register
its self-test; the metadata follows Slicer's conventions."""

from __future__ import annotations

import re
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
MODULE_CMAKE = (REPOSITORY / "SPECTDenoise" / "CMakeLists.txt").read_text(encoding="utf-8")
EXTENSION_CMAKE = (REPOSITORY / "CMakeLists.txt").read_text(encoding="utf-8")
MODULE_SOURCE = (REPOSITORY / "SPECTDenoise" / "SPECTDenoise.py").read_text(encoding="utf-8")


def _cmake_list(name: str) -> list[str]:
    body = re.search(rf"set\({name}\n(.*?)\n\s*\)", MODULE_CMAKE, re.S).group(1)
    return [line.strip().replace("${MODULE_NAME}", "SPECTDenoise") for line in body.splitlines() if line.strip()]


def test_every_resource_the_module_reads_is_built_and_exists():
    used = set(re.findall(r'resourcePath\("([^"]+)"\)', MODULE_SOURCE))
    used |= {f"Icons/{name}" for name in re.findall(r'"Icons" / "([^"]+)"', MODULE_SOURCE)}
    assert {"UI/SPECTDenoise.ui", "requirements.txt", "Icons/SPECTDenoiseSample.png"} <= used
    listed = set(_cmake_list("MODULE_PYTHON_RESOURCES"))
    assert {f"Resources/{name}" for name in used} <= listed
    assert all((REPOSITORY / "SPECTDenoise" / name).is_file() for name in listed)


def test_the_core_catalogue_models_and_samples_go_to_the_build_tree_and_the_install_tree():
    for pattern in ("SPECTDenoiseLib/*.py", "Resources/Models.json", "Resources/Models/*", "Resources/Samples/*.nrrd"):
        assert f"${{REPOSITORY_DIR}}/{pattern}" in MODULE_CMAKE
    assert "${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}/${shared_file} COPYONLY" in MODULE_CMAKE
    assert "DESTINATION ${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}/${shared_dir}" in MODULE_CMAKE
    assert list((REPOSITORY / "Resources" / "Models").glob("*/model.safetensors"))


def test_the_self_test_is_registered_with_ctest():
    testing = MODULE_CMAKE[MODULE_CMAKE.index("if(BUILD_TESTING)"):]
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in testing
    assert "class SPECTDenoiseTest(ScriptedLoadableModuleTest)" in MODULE_SOURCE


def test_contributors_are_named_name_organisation_alike_in_the_extension_and_the_module():
    extension = re.search(r'set\(EXTENSION_CONTRIBUTORS "([^"]+)"\)', EXTENSION_CMAKE).group(1)
    module = re.search(r"self\.parent\.contributors = \[(.*)\]", MODULE_SOURCE).group(1)
    names = [name.strip().strip('"') for name in module.split('",')]
    assert ", ".join(names) == extension
    assert all(re.fullmatch(r"[^()]+ \([^()]+\)", name) for name in names)


def test_the_license_file_is_the_license_the_package_declares():
    assert (REPOSITORY / "LICENSE").read_text(encoding="utf-8").lstrip().startswith("Apache License")
    assert 'license = { text = "Apache-2.0" }' in (REPOSITORY / "pyproject.toml").read_text(encoding="utf-8")
