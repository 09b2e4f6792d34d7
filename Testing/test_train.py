"""Training: data discovery, sampling, loss, checkpoints, the loop, resume, export, fine-tuning and torchrun.

The pairs here are tiny smooth volumes with voxel-wise Poisson noise: enough to test the mechanics of training
(the shipped models are trained on the simulator's reconstructed pairs, see benchmarks/training/).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy.ndimage import gaussian_filter

from SPECTDenoiseLib.errors import InputError
from SPECTDenoiseLib.models.config import ModelConfig
from SPECTDenoiseLib.models.package import load_package
from SPECTDenoiseLib.models.registry import build_network
from SPECTDenoiseLib.train.checkpoint import load_checkpoint, save_checkpoint
from SPECTDenoiseLib.train.data import CaseCache, PatchSampler, find_cases
from SPECTDenoiseLib.train.loop import train
from SPECTDenoiseLib.train.losses import DenoisingLoss
from SPECTDenoiseLib.train.settings import TrainSettings

REPOSITORY = Path(__file__).resolve().parents[1]
UNET25D = {"architecture": "unet2d", "arguments": {"channels": [8, 16, 16, 32]}, "context_slices": 1}


def _write_pairs(folder: Path, cases: int = 3, shape=(12, 32, 32), with_ct: bool = False) -> Path:
    rng = np.random.default_rng(7)
    for index in range(cases):
        case = folder / f"case{index}"
        case.mkdir(parents=True)
        full = gaussian_filter(rng.gamma(1.0, 1.0, shape), 2.0).astype(np.float32) * 50
        full[:, :4] = 0
        low = rng.poisson(full * 0.2).astype(np.float32) / 0.2
        mask = (full > np.percentile(full, 90)).astype(np.uint8)
        for name, array in (("full", full), ("low", low), ("mask", mask)) + ((("ct", full * 10 - 1000),) if with_ct else ()):
            image = sitk.GetImageFromArray(array)
            image.SetSpacing((4.0, 4.0, 4.0))
            sitk.WriteImage(image, str(case / f"{name}.nii.gz"))
    return folder


def _settings(tmp_path: Path, data: Path, model: dict, **overrides) -> TrainSettings:
    values = dict(model=model, data=[str(data)], output=str(tmp_path / "package"), run_dir=str(tmp_path / "run"),
                  patch=[32, 32], batch_size=4, steps=20, learning_rate=3e-3, validation_cases=1,
                  validate_every=10, seed=3, name="test model")
    values.update(overrides)
    return TrainSettings(**values)


def test_find_cases_reads_user_pairs(tmp_path):
    cases = find_cases(_write_pairs(tmp_path / "pairs", cases=2))
    assert [case.name for case in cases] == ["case0", "case1"]
    assert cases[0].target.name == "full.nii.gz" and cases[0].mask.name == "mask.nii.gz"


def test_find_cases_reads_a_dataset_manifest(tmp_path):
    data = _write_pairs(tmp_path / "pairs", cases=1)
    manifest = {"version": 1, "cases": [{"id": "c", "full": "case0/full.nii.gz", "low": {"0.2": "case0/low.nii.gz"},
                                          "labels": "case0/mask.nii.gz"}]}
    (data / "manifest.json").write_text(json.dumps(manifest))
    (case,) = find_cases(data)
    assert case.low == {0.2: data / "case0/low.nii.gz"}


def test_find_cases_refuses_an_empty_folder(tmp_path):
    with pytest.raises(InputError, match="No training pairs"):
        find_cases(tmp_path)


def test_sampler_feeds_2p5d_stacks_with_ct_in_kind_major_order(tmp_path):
    config = ModelConfig.from_dict({"architecture": "u2net", "arguments": {}, "context_slices": 1,
                                    "input_channels": ["spect", "ct"]})
    sampler = PatchSampler(CaseCache(find_cases(_write_pairs(tmp_path, with_ct=True)), True), config, (16, 24), seed=0)
    batch = sampler.batch(3)
    assert batch.inputs.shape == (3, 6, 16, 24) and batch.targets.shape == (3, 1, 16, 24)
    assert batch.masks.shape == (3, 1, 16, 24) and set(np.unique(batch.masks)) <= {0.0, 1.0}
    assert batch.inputs[:, 3:].min() >= 0 and batch.inputs[:, 3:].max() <= 4  # normalised CT channels


def test_sampler_cuts_3d_patches_padding_small_volumes(tmp_path):
    config = ModelConfig.from_dict({"architecture": "unet3d", "arguments": {}, "sampling": "patches",
                                    "patch_size": [16, 16, 16]})
    sampler = PatchSampler(CaseCache(find_cases(_write_pairs(tmp_path)), False), config, (16, 40, 40), seed=0)
    assert sampler.batch(2).inputs.shape == (2, 1, 16, 40, 40)


def test_loss_is_zero_for_a_perfect_prediction_and_lesion_attention_weighs_lesion_errors():
    target = torch.rand(2, 1, 16, 16) * 3
    mask = torch.zeros_like(target)
    mask[..., :4, :4] = 1
    plain, attentive = DenoisingLoss(2, 0.5, 0.0), DenoisingLoss(2, 0.5, 100.0)
    assert float(plain(target, target, mask)) == pytest.approx(0.0, abs=1e-5)
    lesion_error = target + mask
    assert float(attentive(lesion_error, target, mask)) > 5 * float(plain(lesion_error, target, mask))


def test_checkpoint_restores_weights_and_optimizer_state(tmp_path):
    config = ModelConfig.from_dict(UNET25D)
    network = build_network(config)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    network(torch.rand(2, 3, 16, 16)).mean().backward()
    optimizer.step()
    save_checkpoint(tmp_path / "ckpt", network, optimizer, {"step": 5, "best": 0.5})
    fresh = build_network(config)
    fresh_optimizer = torch.optim.Adam(fresh.parameters(), lr=1e-3)
    assert load_checkpoint(tmp_path / "ckpt", fresh, fresh_optimizer)["step"] == 5
    for a, b in zip(network.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)
    original, restored = optimizer.state_dict()["state"], fresh_optimizer.state_dict()["state"]
    assert torch.equal(original[0]["exp_avg"], restored[0]["exp_avg"])
    assert not any(p.suffix in (".pt", ".pth", ".pkl") for p in (tmp_path / "ckpt").iterdir())


def test_training_lowers_validation_loss_and_exports_a_loadable_package(tmp_path):
    settings = _settings(tmp_path, _write_pairs(tmp_path / "pairs"), UNET25D, steps=40)
    package = train(settings, log=lambda message: None)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [record["step"] for record in log] == [10, 20, 30, 40]
    assert min(r["validation"] for r in log[1:]) < log[0]["validation"]
    model = load_package(package)
    assert model.config.context_slices == 1
    assert "L1 + 0.5·(1 − SSIM)" in model.card and "seed 3" in model.card


@pytest.mark.parametrize("deep_supervision", [True, False])
def test_u2net_deep_supervision_trains_the_side_outputs_from_the_first_step(tmp_path, deep_supervision):
    # The fusion starts at zero, so after one step only a deeply supervised run has moved the side convolutions.
    model = {"architecture": "u2net", "arguments": {"mid": 2, "width": 4, "deep_supervision": deep_supervision},
             "input_channels": ["spect", "ct"], "size_multiple": 32}
    settings = _settings(tmp_path, _write_pairs(tmp_path / "pairs", with_ct=True), model, steps=1, validate_every=1)
    torch.manual_seed(settings.seed)
    initial = build_network(settings.model_config).sides[0].weight.detach().clone()
    trained = load_package(train(settings, log=lambda message: None)).network.sides[0].weight
    assert (not torch.equal(trained, initial)) is deep_supervision


def test_training_resumes_from_the_last_checkpoint(tmp_path):
    data = _write_pairs(tmp_path / "pairs")
    train(_settings(tmp_path, data, UNET25D, steps=10), log=lambda message: None)
    messages = []
    train(_settings(tmp_path, data, UNET25D, steps=20), log=messages.append)
    assert any("resumed" in m and "step 10" in m for m in messages)
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert steps == [10, 20]


def _run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "SPECTDenoiseLib", *args], capture_output=True, text=True,
                          cwd=REPOSITORY, env=env, timeout=600)


def test_finetune_cli_starts_from_a_package_and_writes_a_new_one(tmp_path):
    data = _write_pairs(tmp_path / "pairs")
    start = train(_settings(tmp_path, data, UNET25D, steps=5, output=str(tmp_path / "start")), log=lambda m: None)
    result = _run_cli("finetune", "--model", str(start), "--data", str(data), "-o", str(tmp_path / "tuned"),
                      "--steps", "6", "--batch-size", "2")
    assert result.returncode == 0, result.stderr
    tuned = load_package(tmp_path / "tuned")
    assert "Fine-tuned from" in tuned.card
    changed = any(not torch.equal(a, b) for a, b in zip(load_package(start).network.state_dict().values(),
                                                         tuned.network.state_dict().values()))
    assert changed


def test_finetune_cli_reports_missing_data_in_one_sentence(tmp_path):
    data = _write_pairs(tmp_path / "pairs", cases=1)
    start = train(_settings(tmp_path, data, UNET25D, steps=2, validation_cases=0), log=lambda m: None)
    result = _run_cli("finetune", "--model", str(start), "--data", str(tmp_path / "nowhere"), "-o", str(tmp_path / "o"))
    assert result.returncode == InputError.exit_code
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_training_runs_under_torchrun_with_two_gloo_processes(tmp_path):
    settings = _settings(tmp_path, _write_pairs(tmp_path / "pairs"), UNET25D, steps=6, validate_every=3)
    config_file = tmp_path / "settings.json"
    config_file.write_text(json.dumps(settings.__dict__))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
         "-m", "SPECTDenoiseLib", "train", "--config", str(config_file)],
        capture_output=True, text=True, cwd=REPOSITORY, env=env, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "2 process(es)" in result.stdout
    assert load_package(tmp_path / "package").config.architecture == "unet2d"


def test_lesion_attention_uses_only_lesion_labels_of_a_manifest(tmp_path):
    data = _write_pairs(tmp_path / "pairs", cases=1)
    labels = np.zeros((12, 32, 32), dtype=np.int16)
    labels[2:4] = 1  # soft tissue
    labels[6, 10:14, 10:14] = 20  # a lesion
    label_image = sitk.GetImageFromArray(labels)
    label_image.SetSpacing((4.0, 4.0, 4.0))
    sitk.WriteImage(label_image, str(data / "case0" / "labels.nii.gz"))
    manifest = {"version": 1, "cases": [{"id": "c", "full": "case0/full.nii.gz", "low": {"0.2": "case0/low.nii.gz"},
                                          "labels": "case0/labels.nii.gz",
                                          "label_names": {"1": "soft_tissue", "20": "hot_lesion_11mm"}}]}
    (data / "manifest.json").write_text(json.dumps(manifest))
    (case,) = find_cases(data)
    assert case.mask_labels == (20,)
    mask = CaseCache([case], False)[0].mask
    assert (mask > 0).sum() == 16 and mask[6, 11, 11] == 1
