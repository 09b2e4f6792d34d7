"""Rough edges a new user hits in info, metrics, train/finetune help, the model cards and the README's first command."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import REPOSITORY

from SPECTDenoiseLib.cli import build_parser
from SPECTDenoiseLib.dicom import write_dicom_series
from SPECTDenoiseLib.hub import read_catalogue
from SPECTDenoiseLib.io import read_label_names
from SPECTDenoiseLib.train import card
from SPECTDenoiseLib.train.settings import TrainSettings

SAMPLES = REPOSITORY / "Resources" / "Samples"


@pytest.mark.parametrize(("name", "kind", "units", "suv"), [
    ("iec_low10.nrrd", "SPECT/PET (emission)", "not stated in the file", True),
    ("iec_ct.nrrd", "CT", "HU", False),
    ("iec_labels.nrrd", "label map", "label numbers", False),
])
def test_info_names_kind_and_units_and_gives_the_suv_hint_only_for_emission_images(run_cli, name, kind, units, suv):
    result = run_cli("info", SAMPLES / name)
    assert result.returncode == 0, result.stderr
    assert f"Kind:            {kind}\n" in result.stdout and f"Units:           {units}\n" in result.stdout
    assert ("SUV factor" in result.stdout) is suv


@pytest.mark.parametrize(("modality", "tags", "units"), [("NM", {"Units": "BQML"}, "BQML"), ("CT", {}, "HU")])
def test_info_json_of_dicom_takes_units_from_the_tags(run_cli, make_image, tmp_path, modality, tags, units):
    write_dicom_series(make_image(integer=True), tmp_path / "series", modality, tags=tags)
    report = json.loads(run_cli("info", tmp_path / "series", "--json").stdout)
    assert report["units"] == units and (report["suv"] is None) is (modality == "CT")


def test_float64_beyond_float32_is_named_not_called_nan(run_cli, tmp_path):
    values = np.full((8, 8, 8), 1.0)
    values[4, 4, 4] = 1e39
    path = tmp_path / "huge.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(values), str(path))
    info = run_cli("info", path)
    assert info.returncode == 0 and "max 1e+39" in info.stdout
    result = run_cli("metrics", path, "--reference", path)
    assert result.returncode == 3 and "beyond the float32 range" in result.stderr, result.stderr


@pytest.fixture
def pair(tmp_path):
    """A reference with a hot cube and a noisy image of it (16³, 2 mm)."""
    reference = np.ones((16, 16, 16), np.float32)
    reference[5:11, 5:11, 5:11] = 4.0
    image = reference + np.random.default_rng(1).normal(0, 0.2, reference.shape).astype(np.float32)
    paths = {}
    for name, array in (("reference", reference), ("image", image)):
        paths[name] = tmp_path / f"{name}.nrrd"
        volume = sitk.GetImageFromArray(array)
        volume.SetSpacing((2.0, 2.0, 2.0))
        sitk.WriteImage(volume, str(paths[name]))
    return paths


def _write_like(pair, array, name):
    volume = sitk.GetImageFromArray(array)
    volume.SetSpacing((2.0, 2.0, 2.0))
    sitk.WriteImage(volume, str(pair["reference"].parent / name))
    return pair["reference"].parent / name


@pytest.mark.parametrize("inside", [-1.0, 0.7, 255.0])
def test_every_non_zero_mask_value_is_inside(run_cli, pair, inside):
    mask = np.zeros((16, 16, 16), np.float32)
    mask[4:12, 4:12, 4:12] = inside
    binary = _write_like(pair, (mask != 0).astype(np.uint8), "binary.nrrd")
    result = run_cli("metrics", pair["image"], "--reference", pair["reference"], "--json",
                     "--mask", _write_like(pair, mask, "mask.nrrd"))
    assert result.returncode == 0, result.stderr
    expected = run_cli("metrics", pair["image"], "--reference", pair["reference"], "--json", "--mask", binary)
    assert json.loads(result.stdout)["quality"] == json.loads(expected.stdout)["quality"]
    assert json.loads(result.stdout)["whole"]["voxels"] == 512


def test_metrics_labels_take_their_names_from_the_file_beside_the_label_map(run_cli, tmp_path):
    assert run_cli("phantom", "iec", "-o", tmp_path, "--size", "48", "--voxel-mm", "8").returncode == 0
    labels = tmp_path / "iec_labels.nrrd"
    names = read_label_names(labels)
    assert names, "spectdenoise phantom writes the label names beside the label map"
    activity = tmp_path / "iec_activity.nrrd"
    report = json.loads(run_cli("metrics", activity, "--reference", activity, "--labels", labels, "--json").stdout)
    present = {record["label"]: record["name"] for record in report["labels"]}
    assert present and present == {label: names[label] for label in present}
    table = run_cli("metrics", activity, "--reference", activity, "--labels", labels).stdout
    assert all(f"{label} {name} " in table for label, name in present.items())


@pytest.mark.parametrize("command", ["train", "finetune"])
def test_train_help_has_a_description_and_every_default(command):
    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    parser = subparsers.choices[command]
    assert parser.description and len(parser.description) > 80
    for action in parser._actions:
        if action.default not in (None, False) and action.dest != "help":
            assert "default" in (action.help or ""), f"{command} {action.option_strings} hides its default"


def test_shipped_cards_reproduce_only_from_shipped_things():
    catalogue = {entry["id"] for entry in read_catalogue()["models"]}
    for readme in (REPOSITORY / "Resources" / "Models").glob("*/README.md"):
        for command in re.findall(r"`(spectdenoise [^`]+)`", readme.read_text(encoding="utf-8")):
            words = shlex.split(command)
            for option, value in zip(words, words[1:]):
                if option == "--model":
                    assert value in catalogue or (REPOSITORY / value).is_dir(), f"{readme}: {command}"
                if option == "--config":
                    assert (REPOSITORY / value).is_file(), f"{readme}: {command}"
            if "--data" in words:
                data = words[words.index("--data") + 1:words.index("-o")]
                made = re.findall(r"spectdenoise dataset\s+-o\s+(\S+)", readme.read_text(encoding="utf-8"))
                assert set(data) == set(made), f"{readme}: --data {data} but the data are made in {made}"


def test_generated_card_names_repository_paths_and_an_existing_settings_file(tmp_path):
    tuned = TrainSettings(model={}, data=[str(REPOSITORY / "data" / "train_a")], output="out", run_dir="run",
                          patch=[64, 64], name="x fine-tuned",
                          initial_weights=str(REPOSITORY / "Resources" / "Models" / "spect-unet25d"))
    assert "--model Resources/Models/spect-unet25d --data data/train_a -o OUTPUT" in card._reproduce(tuned)
    own = TrainSettings(model={}, data=["d"], output="out", run_dir="run", patch=[64, 64], name="my-model")
    assert "SETTINGS.json" in card._reproduce(own)
    shipped = TrainSettings(model={}, data=["d"], output="out", run_dir="run", patch=[64, 64],
                            name="spect-diffusion-refine")
    assert "benchmarks/training/spect-diffusion-refine.json" in card._reproduce(shipped)


def test_outputs_of_the_readme_first_command_are_git_ignored():
    if not (REPOSITORY / ".git").exists():
        pytest.skip("not a git checkout")
    readme = (REPOSITORY / "README.md").read_text(encoding="utf-8")
    first = re.search(r"spectdenoise denoise [^\n]+", readme)[0]
    words = shlex.split(first)
    outputs = [words[words.index(option) + 1] for option in ("-o", "--difference") if option in words]
    assert outputs
    ignored = subprocess.run(["git", "check-ignore", *outputs], cwd=REPOSITORY, capture_output=True, text=True)
    assert sorted(ignored.stdout.split()) == sorted(outputs)


def test_a_reader_that_stops_early_ends_the_command_quietly():
    process = subprocess.Popen([sys.executable, "-m", "SPECTDenoiseLib", "info", SAMPLES / "iec_low10.nrrd", "--json"],
                               cwd=REPOSITORY, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # as `| head` does once it has read enough
    stderr = process.communicate(timeout=120)[1].decode()
    assert (process.returncode, stderr) == (0, "")


def test_simulate_shows_progress_and_writes_no_negative_values(run_cli, tmp_path):
    assert run_cli("phantom", "iec", "-o", tmp_path, "--size", "40", "--voxel-mm", "9").returncode == 0
    low, full = tmp_path / "low.nrrd", tmp_path / "full.nrrd"
    result = run_cli("simulate", tmp_path / "iec_activity.nrrd", "-o", low, "--full-output", full, "--fraction", "0.1",
                     "--angles", "16", "--ct", tmp_path / "iec_ct.nrrd")
    assert result.returncode == 0, result.stderr
    assert "[  0%] projecting" in result.stderr and "reconstructing" in result.stderr
    for path in (low, full):
        assert sitk.GetArrayFromImage(sitk.ReadImage(str(path))).min() >= 0.0


def test_errors_md_lists_every_exit_code():
    from SPECTDenoiseLib import errors

    table = {int(code) for code in re.findall(r"^\|\s*(\d+)\s*\|", (REPOSITORY / "docs" / "ERRORS.md").read_text(
        encoding="utf-8"), re.MULTILINE)}
    codes = {value.exit_code for value in vars(errors).values()
             if isinstance(value, type) and issubclass(value, errors.SPECTDenoiseError)}
    assert codes | {0, 1, 2} <= table


def test_card_keeps_the_repository_path_of_data_reached_through_a_link(tmp_path, monkeypatch):
    (tmp_path / "disk" / "train_a").mkdir(parents=True)
    (tmp_path / "repository").mkdir()
    (tmp_path / "repository" / "data").symlink_to(tmp_path / "disk")
    monkeypatch.setattr(card, "REPOSITORY", tmp_path / "repository")
    tuned = TrainSettings(model={}, data=[str(tmp_path / "repository" / "data" / "train_a")], output="out",
                          run_dir="run", patch=[64, 64], name="x", initial_weights="spect-unet25d")
    assert "--model spect-unet25d --data data/train_a -o OUTPUT" in card._reproduce(tuned)
