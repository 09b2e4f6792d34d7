"""The phantom / simulate / dataset commands through the real command line (subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk


def spectdenoise(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "SPECTDenoiseLib", *args], capture_output=True, text=True,
                          timeout=300, env=env, check=False)


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("phantom")
    result = spectdenoise("phantom", "iec", "-o", str(folder), "--seed", "2", "--voxel-mm", "8")
    assert result.returncode == 0, result.stderr
    return folder


def test_phantom_writes_activity_ct_mu_labels_and_names(phantom_dir):
    for kind in ("activity", "ct", "mu", "labels"):
        assert (phantom_dir / f"iec_{kind}.nrrd").is_file()
    names = json.loads((phantom_dir / "iec_labels.json").read_text())["label_names"]
    assert names["8"] == "sphere_37mm"


def test_simulate_writes_low_and_full_in_the_input_geometry(phantom_dir, tmp_path):
    low, full = tmp_path / "low.nii.gz", tmp_path / "full.nrrd"
    result = spectdenoise("simulate", str(phantom_dir / "iec_activity.nrrd"), "-o", str(low), "--fraction", "0.1",
                          "--ct", str(phantom_dir / "iec_ct.nrrd"), "--full-output", str(full), "--angles", "32",
                          "--iterations", "2", "--seed", "5")
    assert result.returncode == 0, result.stderr
    source = sitk.ReadImage(str(phantom_dir / "iec_activity.nrrd"))
    for path in (low, full):
        image = sitk.ReadImage(str(path))
        assert image.GetSize() == source.GetSize() and image.GetOrigin() == pytest.approx(source.GetOrigin())


@pytest.mark.parametrize("fraction", ["0", "1.5", "-0.2", "nan"])
def test_fraction_outside_unit_interval_fails_with_one_sentence(phantom_dir, tmp_path, fraction):
    result = spectdenoise("simulate", str(phantom_dir / "iec_activity.nrrd"), "-o", str(tmp_path / "x.nrrd"),
                          "--fraction", fraction)
    assert result.returncode == 3
    assert result.stderr.count("\n") == 1 and "fraction" in result.stderr
    assert not (tmp_path / "x.nrrd").exists()


def test_unknown_collimator_fails_with_one_sentence(phantom_dir, tmp_path):
    result = spectdenoise("simulate", str(phantom_dir / "iec_activity.nrrd"), "-o", str(tmp_path / "x.nrrd"),
                          "--fraction", "0.1", "--collimator", "Tc99m-XYZ")
    assert result.returncode == 3 and "Unknown collimator" in result.stderr


def test_nan_input_fails_with_one_sentence(tmp_path):
    array = np.ones((8, 16, 16), np.float32)
    array[2, 3, 4] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / "nan.nrrd"))
    result = spectdenoise("simulate", str(tmp_path / "nan.nrrd"), "-o", str(tmp_path / "x.nrrd"), "--fraction", "0.1")
    assert result.returncode == 3 and "NaN" in result.stderr and result.stderr.count("\n") == 1


def test_2d_input_fails_with_one_sentence(tmp_path):
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((16, 16), np.float32)), str(tmp_path / "flat.nrrd"))
    result = spectdenoise("simulate", str(tmp_path / "flat.nrrd"), "-o", str(tmp_path / "x.nrrd"), "--fraction", "0.1")
    assert result.returncode == 3 and "3D" in result.stderr


def test_dataset_with_no_cases_fails_with_one_sentence(tmp_path):
    result = spectdenoise("dataset", "-o", str(tmp_path / "d"), "--n", "0")
    assert result.returncode == 3 and result.stderr.count("\n") == 1
