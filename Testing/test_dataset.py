"""Training-data generator: manifest layout, files, resumption, determinism."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from SPECTDenoiseLib.dataset import FamilyPlan, case_settings, family_plans, generate_dataset
from SPECTDenoiseLib.errors import InputError

QUICK = {
    "iec": FamilyPlan(1.0, (9.0, 10.0), ("Tc99m-LEHR", "I123-LEGP"), (2e6, 4e6)),
    "mouse": FamilyPlan(1.0, (1.4, 1.5), ("Tc99m-uSPECT",), (2e6, 4e6)),
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("dataset")
    manifest = generate_dataset(folder, 2, seed=3, plans=QUICK)
    return folder, manifest


def test_manifest_lists_every_case_with_relative_paths_that_exist(dataset):
    folder, manifest = dataset
    on_disk = json.loads((folder / "manifest.json").read_text())
    assert on_disk == manifest and on_disk["version"] == 2
    assert [case["id"] for case in on_disk["cases"]] == ["case_00000", "case_00001"]
    for case in on_disk["cases"]:
        for key in ("family", "collimator", "voxel_mm", "seed", "protocol", "texture", "extra_lesions", "label_names"):
            assert key in case
        assert len(case["low"]) == 2
        assert sum("hot_lesion" in name for name in case["label_names"].values()) >= 1
        for path in (case["target"], case["ct"], case["labels"], *case["low"].values()):
            assert not path.startswith("/") and (folder / path).is_file()


def test_low_and_noise_free_target_share_geometry_and_keep_the_mean(dataset):
    folder, manifest = dataset
    case = manifest["cases"][0]
    full = sitk.ReadImage(str(folder / case["target"]))
    for path in case["low"].values():
        low = sitk.ReadImage(str(folder / path))
        assert low.GetSize() == full.GetSize() and low.GetSpacing() == full.GetSpacing()
        assert sitk.GetArrayFromImage(low).mean() == pytest.approx(sitk.GetArrayFromImage(full).mean(), rel=0.1)


def test_rerun_skips_finished_cases_and_adds_new_ones(dataset):
    folder, _ = dataset
    first_full = folder / "case_00000" / "target.nii.gz"
    stamp = first_full.stat().st_mtime_ns
    seen = []
    manifest = generate_dataset(folder, 3, seed=3, plans=QUICK, progress=lambda d, n, c, s: seen.append((c, s)))
    assert seen == [("case_00000", True), ("case_00001", True), ("case_00002", False)]
    assert first_full.stat().st_mtime_ns == stamp
    assert len(manifest["cases"]) == 3


def test_case_settings_are_deterministic_and_span_the_ranges():
    settings = [case_settings(i, seed=0) for i in range(200)]
    assert settings[17] == case_settings(17, seed=0)
    assert {s["family"] for s in settings} == {"iec", "torso", "brain", "cardiac", "mouse"}
    protocols = [s["protocol"] for s in settings]
    assert {p["scatter_correction"] for p in protocols if p["scatter_fraction"] > 0} == {"exact", "window", "none"}
    assert {p["reconstruction"] for p in protocols} == {"osem-rr", "osem", "fbp"}
    assert {p["arc_deg"] for p in protocols} == {180.0, 360.0}
    assert min(p["iterations"] for p in protocols) == 2 and max(p["iterations"] for p in protocols) >= 12
    assert any(p["penetration_fraction"] > 0 for p in protocols)
    fractions = np.concatenate([s["fractions"] for s in settings])
    assert fractions.min() == pytest.approx(0.05) and fractions.max() == pytest.approx(0.5)
    clinical = [s["voxel_mm"] for s in settings if s["family"] != "mouse"]
    assert 1.9 <= min(clinical) < 2.5 and 6.0 < max(clinical) <= 6.8


def test_a_third_of_iec_cases_have_an_almost_empty_background_and_other_families_none():
    settings = [case_settings(i, seed=0) for i in range(300)]
    iec = [s["background_scale"] for s in settings if s["family"] == "iec"]
    assert 0.2 < np.mean([scale < 1 for scale in iec]) < 0.5
    assert all(0.003 <= scale <= 0.1 for scale in iec if scale < 1)
    assert all(s["background_scale"] == 1.0 for s in settings if s["family"] != "iec")


def test_family_plans_restrict_the_families_and_name_an_unknown_one():
    assert {case_settings(i, seed=4, plans=family_plans(["iec"]))["family"] for i in range(20)} == {"iec"}
    with pytest.raises(InputError, match="spleen"):
        family_plans(["iec", "spleen"])


def test_zero_cases_is_an_input_error(tmp_path):
    with pytest.raises(InputError):
        generate_dataset(tmp_path, 0)
