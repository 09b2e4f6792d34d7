"""Every bad input through the real ``spectdenoise`` CLI: documented exit code, one error line, nothing lost.

Each case runs the CLI in a subprocess against real files in ``inputs/`` (volumes, tiny model packages, a local
hub on 127.0.0.1, an empty Hugging Face cache) and checks: the exit code is the documented one
(docs/ERRORS.md), stderr holds exactly one ``spectdenoise: error: ...`` sentence and no traceback (progress lines
``[ NN%] stage: ...`` of ``denoise`` aside), no input file changed, the output folder holds nothing, and the
command's peak memory (its own ``ru_maxrss``) stays under 1 GB: hostile models (huge config values, wrong weight
dtypes, from a folder or a Hub id) and volumes (a 1.7 MB gzip NRRD declaring 1200³ voxels) are refused from their
headers, before anything is allocated.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import REPOSITORY
from hub_server import HubServer
from model_fixtures import TINY, make_package, phantom
from safetensors.torch import load_file, save_file

from SPECTDenoiseLib.errors import DeviceError, HubError, InputError, ModelError, OutputError
from SPECTDenoiseLib.io import PARTIAL_PREFIX

USAGE = 2
PROGRESS_LINE = re.compile(r"^\[\s*\d+%\] ")
MEMORY_LIMIT = 1 << 30
ADDRESS_SPACE_LIMIT = 6 << 30  # what a run may reserve at all: a run that would need more fails instead of swapping


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


def hostile_package(folder: Path, source: Path, weights: Callable[[dict], dict] | None = None, **changes) -> Path:
    """A copy of the package ``source`` with ``changes`` to its config.json and ``weights`` applied to its
    tensors; hostile on purpose (the weights file keeps the source's tensors unless ``weights`` is given)."""
    shutil.copytree(source, folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    (folder / "config.json").write_text(json.dumps({**config, **changes}), encoding="utf-8")
    if weights is not None:
        save_file(weights(load_file(str(folder / "model.safetensors"))), str(folder / "model.safetensors"))
    return folder


HUGE_CHANNELS = {"arguments": {"channels": [2048, 4096, 8192, 16384]}}


def _hostile(name: str, base: str = "unet", weights: Callable[[dict], dict] | None = None,
             **changes) -> Callable[[Study], list[str | Path]]:
    """``denoise`` with a hostile copy of the study's U-Net (``base="unet"``) or of a new tiny diffusion model."""
    def arguments(study: Study) -> list[str | Path]:
        source = study.unet if base == "unet" else make_package(study.inputs.parent / "diffusion", "diffusion")
        return study.denoise(study.spect, model=hostile_package(study.inputs / name, source, weights, **changes))
    return arguments


def _diffusion(**changes) -> dict:
    return {"diffusion": {**TINY["refine"]["diffusion"], **changes}}


def _as_int32(tensors: dict) -> dict:
    return {key: value.to(dtype=torch.int32) for key, value in tensors.items()}


def _huge_head(tensors: dict) -> dict:
    return {**tensors, "head.weight": tensors["head.weight"] * 0 + 3e38, "head.bias": tensors["head.bias"] * 0 + 3e38}


def _long_header(study: Study) -> list[str | Path]:
    folder = hostile_package(study.inputs / "long-header", study.unet)
    content = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes((1 << 40).to_bytes(8, "little") + content[8:])
    return study.denoise(study.spect, model=folder)


def huge_gzip_volume(path: Path, side: int = 1200) -> Path:
    """A gzip NRRD of about 1.7 MB declaring ``side``³ uint8 voxels (all zero; concatenated gzip members)."""
    block = 16 << 20
    member = gzip.compress(bytes(block), compresslevel=9)
    header = (f"NRRD0004\ntype: uint8\ndimension: 3\nspace: left-posterior-superior\nsizes: {side} {side} {side}\n"
              "space directions: (4,0,0) (0,4,0) (0,0,4)\nencoding: gzip\nendian: little\n\n")
    with open(path, "wb") as handle:
        handle.write(header.encode())
        for _ in range(-(-side**3 // block)):
            handle.write(member)
    return path


def _huge(study: Study) -> Path:
    return huge_gzip_volume(study.inputs / "huge.nrrd")


def _copy(study: Study, name: str, source: Path | None = None) -> Path:
    path = study.inputs / name
    shutil.copyfile(source or study.spect, path)
    return path


def _hard_link(study: Study) -> Path:
    path = study.inputs / "link.nrrd"
    os.link(study.spect, path)
    return path


def _mhd_reading(study: Study, data_name: str) -> Path:
    """``inputs/x.mhd`` whose voxels are in ``inputs/<data_name>``."""
    header = study.inputs / "x.mhd"
    sitk.WriteImage(sitk.ReadImage(str(study.spect)), str(header), True)
    (study.inputs / "x.zraw").rename(study.inputs / data_name)
    text = header.read_text(encoding="latin-1").replace("ElementDataFile = x.zraw", f"ElementDataFile = {data_name}")
    header.write_text(text, encoding="latin-1")
    return header


def _scaled(study: Study, factor: float) -> Path:
    return study.volume(f"scaled{factor:g}.nrrd", _spect_array(study) * np.float32(factor))


def _diffusion_variance(study: Study, source: Path) -> list[str | Path]:
    model = make_package(study.inputs / "diffusion", "diffusion")
    return study.denoise(source, "--variance", study.out / "variance.nrrd", model=model)


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
    Case("output-is-the-reference", lambda s: ["denoise", s.spect, "-o", _copy(s, "full.nrrd"), "--model", s.unet,
                                               "--reference", s.inputs / "full.nrrd"],
         OutputError.exit_code, "is an input (the reference"),
    Case("difference-is-the-reference", lambda s: s.denoise(s.spect, "--reference", _copy(s, "full.nrrd"),
                                                            "--difference", s.inputs / "full.nrrd"),
         OutputError.exit_code, "is an input (the reference"),
    Case("output-is-the-ct", lambda s: ["denoise", s.spect, "--ct", s.ct, "-o", s.ct, "--model", s.u2net],
         OutputError.exit_code, "is an input (the CT"),
    Case("output-is-a-hard-link-of-the-input", lambda s: ["denoise", s.spect, "-o", _hard_link(s), "--model", s.unet],
         OutputError.exit_code, "is an input (the input"),
    Case("mhd-output-would-write-the-input-data-file", lambda s: ["denoise", _mhd_reading(s, "y.zraw"),
                                                                  "-o", s.inputs / "y.mhd", "--model", s.unet],
         OutputError.exit_code, "is an input (the input"),
    Case("simulate-output-is-the-full-output", lambda s: ["simulate", s.spect, "-o", s.out / "a.nrrd", "--fraction",
                                                          "0.5", "--full-output", s.out / "a.nrrd"],
         OutputError.exit_code, "is used for two outputs"),
    Case("simulate-full-output-is-the-ct", lambda s: ["simulate", s.spect, "--ct", s.ct, "-o", s.out / "a.nrrd",
                                                      "--fraction", "0.5", "--full-output", s.ct],
         OutputError.exit_code, "is an input (the CT"),
    Case("config-huge-channels", _hostile("wide", **HUGE_CHANNELS), ModelError.exit_code,
         "'channels' must be numbers from 1 to 1024"),
    Case("config-over-the-parameter-budget", _hostile("deep", arguments={"channels": [1024] * 4}),
         ModelError.exit_code, "parameters, more than the 50,000,000"),
    Case("config-many-res-units", _hostile("units", arguments={"channels": [4, 8], "num_res_units": 20000}),
         ModelError.exit_code, "'num_res_units' must be a number from 0 to 8"),
    Case("config-huge-patch", _hostile("patch", architecture="unet3d", sampling="patches", context_slices=0,
                                       patch_size=[512, 512, 512]),
         ModelError.exit_code, "'patch_size' must be 3 integers in 8..256"),
    Case("config-huge-train-timesteps",
         _hostile("steps", "diffusion", **_diffusion(train_timesteps=2_000_000_000)),
         ModelError.exit_code, "'train_timesteps' must be 1..10000"),
    Case("config-huge-default-samples", _hostile("samples", "diffusion", **_diffusion(default_samples=10**9)),
         ModelError.exit_code, "'default_samples' 1..256"),
    Case("config-unknown-diffusion-key", _hostile("key", "diffusion", **_diffusion(eta=0.5)), ModelError.exit_code,
         "(and optionally variance_pooling_voxels), no others"),
    Case("weights-int32", _hostile("int32", weights=_as_int32), ModelError.exit_code, "is I32, the network needs F32"),
    Case("weights-header-length-huge", _long_header, ModelError.exit_code, "no valid header length"),
    Case("hub-config-huge-channels", lambda s: s.denoise(s.spect, model="org/hostile"), ModelError.exit_code,
         "'channels' must be numbers from 1 to 1024", {"HF_HUB_DISABLE_PROGRESS_BARS": "1"}),
    Case("huge-volume-denoise", lambda s: s.denoise(_huge(s)), InputError.exit_code,
         "1,728,000,000 voxels, more than the limit of 134,217,728"),
    Case("huge-volume-info", lambda s: ["info", _huge(s)], InputError.exit_code,
         "1,728,000,000 voxels, more than the limit of 134,217,728"),
    Case("huge-volume-metrics", lambda s: ["metrics", _huge(s), "--reference", s.spect], InputError.exit_code,
         "1,728,000,000 voxels, more than the limit of 134,217,728"),
    Case("variance-overflows-float32", lambda s: _diffusion_variance(s, _scaled(s, 1e30)), InputError.exit_code,
         "too large for float32 output"),
    Case("variance-underflows-float32", lambda s: _diffusion_variance(s, _scaled(s, 1e-30)), InputError.exit_code,
         "too small for float32 output"),
    Case("model-producing-infinity", _hostile("infinite", weights=_huge_head), ModelError.exit_code,
         "produced NaN or infinite values"),
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
    folder = tmp_path_factory.mktemp("hub")
    with HubServer() as server:
        server.add_repo("org/tiny", make_package(folder / "tiny", "unet2d"))
        server.add_repo("org/hostile", hostile_package(folder / "hostile", folder / "tiny", **HUGE_CHANNELS))
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
    """Run the real CLI with an empty Hugging Face cache and catalogue under tmp and the local hub; the result's
    ``peak_memory`` is the process's own peak resident memory in bytes (``ru_maxrss`` from ``wait4``)."""
    home = study.inputs.parent / "home"
    catalogue = home / "Models.json"
    home.mkdir(exist_ok=True)
    catalogue.write_text(json.dumps({"default": None, "models": []}), encoding="utf-8")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "SPECTDENOISE_"))}
    env.update(HF_HOME=str(home / "hf"), HF_ENDPOINT=study.hub_url, SPECTDENOISE_CATALOGUE=str(catalogue),
               **environment)
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "SPECTDenoiseLib", *map(str, arguments)], cwd=REPOSITORY, env=env,
            stdout=stdout, stderr=stderr, preexec_fn=_limit_address_space)
        timer = threading.Timer(180, process.kill)
        timer.start()
        _, status, usage = os.wait4(process.pid, 0)
        timer.cancel()
        process.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        stderr.seek(0)
        result = subprocess.CompletedProcess(process.args, process.returncode, stdout.read().decode(),
                                             stderr.read().decode())
    result.peak_memory = usage.ru_maxrss * 1024
    return result


def _limit_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_LIMIT, ADDRESS_SPACE_LIMIT))


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
    assert result.peak_memory < MEMORY_LIMIT, f"{result.peak_memory / 2**20:.0f} MiB"


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
