"""Every bad input through the real ``spectdenoise`` CLI: documented exit code, one error line, nothing lost.

Each case runs the CLI in a subprocess against real files in ``inputs/`` (volumes, tiny model packages, a local
hub on 127.0.0.1, an empty Hugging Face cache) and checks: the exit code is the documented one
(docs/ERRORS.md), stderr holds exactly one ``spectdenoise: error: ...`` sentence and no traceback (progress lines
``[ NN%] stage: ...`` of ``denoise`` aside), no input file changed, and the output folder holds nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import REPOSITORY
from hub_server import HubServer
from model_fixtures import make_package, phantom

from SPECTDenoiseLib.errors import DeviceError, HubError, InputError, ModelError, OutputError
from SPECTDenoiseLib.io import PARTIAL_PREFIX

USAGE = 2
PROGRESS_LINE = re.compile(r"^\[\s*\d+%\] ")


@dataclasses.dataclass
class Study:
    """The files a case can point at: ``inputs`` (hashed before and after) and the empty output folder ``out``."""

    inputs: Path
    out: Path
    spect: Path
    ct: Path
    unet: Path
    u2net: Path
    hub_url: str

    def volume(self, name: str, array: np.ndarray, spacing: tuple[float, ...] = (3.3, 3.3, 4.1)) -> Path:
        """Write ``array`` ([z, y, x], or [y, x]) as ``inputs/name`` and return its path."""
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(spacing[: array.ndim])
        path = self.inputs / name
        sitk.WriteImage(image, str(path))
        return path

    def denoise(self, source: Path, *extra: str | Path, model: Path | str | None = None) -> list[str | Path]:
        """Arguments of ``denoise SOURCE -o out/denoised.nrrd --model MODEL EXTRA...`` (the U-Net by default)."""
        return ["denoise", source, "-o", self.out / "denoised.nrrd", "--model", model or self.unet, *extra]


@dataclasses.dataclass(frozen=True)
class Case:
    """A bad input: CLI arguments (and extra environment) built from the study, the expected code and phrase."""

    id: str
    arguments: Callable[[Study], list[str | Path]]
    code: int
    phrase: str
    environment: dict[str, str] = dataclasses.field(default_factory=dict)


def _spect_array(study: Study) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(study.spect)))


def _with_values(study: Study, name: str, value: float) -> Path:
    array = _spect_array(study)
    array[3, 5:8, 6:9] = value
    return study.volume(name, array)


def _four_d(study: Study) -> Path:
    volume = sitk.ReadImage(str(study.spect))
    path = study.inputs / "dynamic.nrrd"
    sitk.WriteImage(sitk.JoinSeries([volume, volume, volume]), str(path))
    return path


def _far_ct(study: Study) -> Path:
    ct = sitk.ReadImage(str(study.ct))
    ct.SetOrigin((5000.0, 5000.0, 5000.0))
    path = study.inputs / "far-ct.nrrd"
    sitk.WriteImage(ct, str(path))
    return path


def _package_copy(study: Study, name: str, change: Callable[[Path], None]) -> Path:
    folder = study.inputs / name
    shutil.copytree(study.unet, folder)
    change(folder)
    return folder


def _truncate_weights(folder: Path) -> None:
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def _widen_config(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config["arguments"]["channels"] = [8, 8, 16, 16]
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")


def _text_file(study: Study) -> Path:
    path = study.inputs / "notes.txt"
    path.write_text("a regular file, not a folder\n", encoding="utf-8")
    return path


def _metrics(study: Study, *extra: str | Path) -> list[str | Path]:
    return ["metrics", study.spect, "--reference", study.spect, *extra]


def _labels(study: Study, name: str, array: np.ndarray) -> Path:
    """Write a label map; on the SPECT's grid when ``array`` has its shape."""
    labels = sitk.GetImageFromArray(array.astype(np.uint8))
    spect = sitk.ReadImage(str(study.spect))
    if array.shape == _spect_array(study).shape:
        labels.CopyInformation(spect)
    path = study.inputs / name
    sitk.WriteImage(labels, str(path))
    return path


def _simulate(fraction: str) -> Callable[[Study], list[str | Path]]:
    return lambda s: ["simulate", s.spect, "-o", s.out / "low.nrrd", "--fraction", fraction]


OFFLINE = {"HF_HUB_OFFLINE": "1"}

CASES = [
    Case("missing-file", lambda s: s.denoise(s.inputs / "absent.nrrd"), InputError.exit_code, "does not exist"),
    Case("empty-file", lambda s: s.denoise(_empty(s)), InputError.exit_code, "is an empty file"),
    Case("unreadable-file", lambda s: s.denoise(_garbage(s)), InputError.exit_code, "not an image file"),
    Case("2d-image", lambda s: s.denoise(s.volume("slice.nrrd", np.ones((20, 22), np.float32))),
         InputError.exit_code, "3D volume is needed"),
    Case("4d-image", lambda s: s.denoise(_four_d(s)), InputError.exit_code, "is 4D; a 3D volume is needed"),
    Case("nan-voxels", lambda s: s.denoise(_with_values(s, "nan.nrrd", np.nan)), InputError.exit_code,
         "NaN or infinite voxels"),
    Case("inf-voxels", lambda s: s.denoise(_with_values(s, "inf.nrrd", np.inf)), InputError.exit_code,
         "NaN or infinite voxels"),
    Case("all-zero", lambda s: s.denoise(s.volume("zero.nrrd", np.zeros((12, 20, 22), np.float32))),
         InputError.exit_code, "all zero"),
    Case("too-large", lambda s: s.denoise(s.spect), InputError.exit_code, "more than the limit of 1,000 voxels",
         {"SPECTDENOISE_MAX_VOXELS": "1000"}),
    Case("ct-not-overlapping", lambda s: s.denoise(s.spect, "--ct", _far_ct(s), model=s.u2net),
         InputError.exit_code, "do not overlap"),
    Case("ct-model-without-ct", lambda s: s.denoise(s.spect, model=s.u2net), InputError.exit_code,
         "needs the study's CT"),
    Case("labels-other-geometry", lambda s: _metrics(s, "--labels", _labels(s, "l.nrrd", np.ones((8, 8, 8)))),
         InputError.exit_code, "another geometry"),
    Case("labels-empty", lambda s: _metrics(s, "--labels", _labels(s, "l.nrrd", np.zeros(_spect_array(s).shape))),
         InputError.exit_code, "holds no region"),
    Case("mask-empty", lambda s: _metrics(s, "--mask", _labels(s, "m.nrrd", np.zeros(_spect_array(s).shape))),
         InputError.exit_code, "contains no voxels"),
    Case("info-4d-image", lambda s: ["info", _four_d(s)], InputError.exit_code, "is 4D"),
    Case("corrupt-weights", lambda s: s.denoise(s.spect, model=_package_copy(s, "corrupt", _truncate_weights)),
         ModelError.exit_code, "corrupt or not safetensors"),
    Case("config-not-matching-weights", lambda s: s.denoise(s.spect, model=_package_copy(s, "wide", _widen_config)),
         ModelError.exit_code, "do not match architecture"),
    Case("unknown-model-name", lambda s: ["models", "info", "no_such_model"], ModelError.exit_code,
         "Unknown model 'no_such_model'"),
    Case("unknown-repo", lambda s: s.denoise(s.spect, model="org/missing"), HubError.exit_code,
         "repository 'org/missing' was not found"),
    Case("unknown-revision", lambda s: ["models", "download", "org/tiny@v9"], HubError.exit_code,
         "Revision 'v9' of the model repository 'org/tiny' was not found"),
    Case("offline-not-cached", lambda s: s.denoise(s.spect, model="org/tiny"), HubError.exit_code,
         "not in the Hugging Face cache and SPECTDenoise is offline", OFFLINE),
    Case("offline-download-not-cached", lambda s: ["models", "download", "org/tiny"], HubError.exit_code,
         "SPECTDenoise is offline", OFFLINE),
    Case("output-inside-a-file", lambda s: ["denoise", s.spect, "-o", _text_file(s) / "out.nrrd", "--model", s.unet],
         OutputError.exit_code, "does not exist"),
    Case("output-folder-missing", lambda s: ["denoise", s.spect, "-o", s.out / "missing" / "out.nrrd", "--model",
                                             s.unet], OutputError.exit_code, "does not exist"),
    Case("output-is-the-input", lambda s: ["denoise", s.spect, "-o", s.spect, "--model", s.unet],
         OutputError.exit_code, "is an input"),
    Case("absent-device", lambda s: s.denoise(s.spect, "--device", "cuda:7"), DeviceError.exit_code,
         "Device 'cuda:7' is not available"),
    Case("fraction-zero", _simulate("0"), InputError.exit_code, "count fraction"),
    Case("fraction-above-one", _simulate("1.5"), InputError.exit_code, "count fraction"),
    Case("fraction-nan", _simulate("nan"), InputError.exit_code, "count fraction"),
    Case("usage-missing-output", lambda s: ["denoise", s.spect], USAGE, "required: -o/--output"),
    Case("usage-not-a-number", lambda s: s.denoise(s.spect, "--samples", "many"), USAGE, "invalid int value"),
]


def _empty(study: Study) -> Path:
    path = study.inputs / "empty.nrrd"
    path.touch()
    return path


def _garbage(study: Study) -> Path:
    path = study.inputs / "garbage.nrrd"
    path.write_bytes(bytes(range(256)) * 8)
    return path


def _hashes(folder: Path) -> dict[str, str]:
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def hub_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A local hub holding ``org/tiny`` (a tiny U-Net); nothing goes to the internet."""
    with HubServer() as server:
        server.add_repo("org/tiny", make_package(tmp_path_factory.mktemp("hub") / "tiny", "unet2d"))
        yield server.url


@pytest.fixture
def study(tmp_path: Path, hub_url: str) -> Study:
    """A SPECT phantom, a CT of it, a tiny U-Net and a tiny U²-Net (CT) package, and an empty output folder."""
    inputs, out = tmp_path / "inputs", tmp_path / "out"
    inputs.mkdir()
    out.mkdir()
    spect = phantom()
    sitk.WriteImage(spect, str(inputs / "spect.nrrd"))
    sitk.WriteImage(sitk.Cast(spect * 20 - 1000, sitk.sitkInt16), str(inputs / "ct.nrrd"))
    return Study(inputs=inputs, out=out, spect=inputs / "spect.nrrd", ct=inputs / "ct.nrrd",
                 unet=make_package(inputs / "unet", "unet2d"), u2net=make_package(inputs / "u2net", "u2net"),
                 hub_url=hub_url)


def run_cli(study: Study, arguments: list[str | Path], environment: dict[str, str]) -> subprocess.CompletedProcess:
    """Run the real CLI with an empty Hugging Face cache and catalogue under tmp and the local hub."""
    home = study.inputs.parent / "home"
    catalogue = home / "Models.json"
    home.mkdir(exist_ok=True)
    catalogue.write_text(json.dumps({"default": None, "models": []}), encoding="utf-8")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "SPECTDENOISE_"))}
    env.update(HF_HOME=str(home / "hf"), HF_ENDPOINT=study.hub_url, SPECTDENOISE_CATALOGUE=str(catalogue),
               **environment)
    return subprocess.run([sys.executable, "-m", "SPECTDenoiseLib", *map(str, arguments)], cwd=REPOSITORY,
                          env=env, capture_output=True, text=True, timeout=180, check=False)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_gives_its_exit_code_one_sentence_and_loses_nothing(study, case):
    arguments = case.arguments(study)
    before = _hashes(study.inputs)
    result = run_cli(study, arguments, case.environment)
    errors = [line for line in result.stderr.splitlines() if not PROGRESS_LINE.match(line)]
    assert result.returncode == case.code, result.stderr
    assert "Traceback" not in result.stderr
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("spectdenoise: error: ") and errors[0].endswith("."), errors[0]
    assert case.phrase in errors[0]
    assert _hashes(study.inputs) == before
    assert sorted(os.listdir(study.out)) == []


def test_negative_voxels_are_set_to_zero_with_a_warning_and_the_input_is_kept(study):
    source = _with_values(study, "undershoot.nrrd", -5.0)
    before = _hashes(study.inputs)
    result = run_cli(study, study.denoise(source), {})
    assert result.returncode == 0, result.stderr
    assert "9 negative voxels of the SPECT were set to 0 before denoising." in result.stderr
    assert _hashes(study.inputs) == before
    assert sorted(os.listdir(study.out)) == ["denoised.nrrd"]
    assert not any(name.startswith(PARTIAL_PREFIX) for name in os.listdir(study.out))
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(study.out / "denoised.nrrd"))).min() >= 0
