"""Robustness probes (benchmarks/probes.py): they measure zero for a denoiser that ignores presentation and
catch one that does not."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import report  # noqa: E402
from probes import air_margin_padding, body_box, hot_spot, mean_shifts, run_probes  # noqa: E402

SPACING = (4.0, 4.0, 4.0)


def small_scan():
    """A 24 × 32 × 32 body with one hot cube; CT 0 HU in the body, air outside."""
    shape = (24, 32, 32)
    body = np.zeros(shape, dtype=bool)
    body[4:20, 4:28, 4:28] = True
    lesion = np.zeros(shape, dtype=bool)
    lesion[8:12, 8:12, 8:12] = True
    rng = np.random.default_rng(0)
    image = np.where(body, 1.0 + 0.1 * rng.standard_normal(shape), 0.0) + 4.0 * lesion
    ct = np.where(body, 0.0, -1000.0)
    return image.astype(np.float32), ct.astype(np.float32), body, {"lesion": lesion}


def test_hot_spot_lies_in_the_body_far_from_the_lesions():
    _, _, body, regions = small_scan()
    blob = hot_spot(body, regions["lesion"], SPACING, level=20.0, largest_diameter_mm=16.0)
    centre = np.unravel_index(np.argmax(blob), blob.shape)
    assert body[centre]
    assert np.linalg.norm((np.array(centre) - 10) * 4.0) > 40.0
    assert blob[regions["lesion"]].max() < 0.01 * blob.max()


def mouse_scan():
    """A 28 mm cube of body (2 mm voxels) with a 4 mm tumour in its middle: no 40 mm blob fits, and a blob
    placed as deep as it can be lies next to the tumour."""
    shape = (18, 18, 18)
    body = np.zeros(shape, dtype=bool)
    body[2:16, 2:16, 2:16] = True
    lesion = np.zeros(shape, dtype=bool)
    lesion[8:10, 8:10, 8:10] = True
    image = np.where(body, 1.0, 0.0) + 4.0 * lesion
    ct = np.where(body, 0.0, -1000.0)
    return image.astype(np.float32), ct.astype(np.float32), body, {"tumour": lesion}


def test_in_a_small_body_the_hot_spot_shrinks_and_stays_clear_of_the_lesions():
    image, _, body, regions = mouse_scan()
    blob = hot_spot(body, regions["tumour"], (2.0, 2.0, 2.0), level=20.0)
    assert body[np.unravel_index(np.argmax(blob), blob.shape)]
    assert blob[regions["tumour"]].max() < 0.02 * blob.max()


def test_the_hot_spot_probe_reports_the_denoisers_change_net_of_the_blob():
    image, ct, body, regions = mouse_scan()
    shifts = run_probes(lambda spect, _ct: spect.copy(), image, ct, body, regions, (2.0, 2.0, 2.0), air_margin=2)
    assert shifts["hot spot added"]["tumour"] == pytest.approx(0.0, abs=1e-4)


def test_body_box_is_the_bounding_box_plus_margin():
    _, _, body, _ = small_scan()
    assert body_box(body, margin=1) == (slice(3, 21), slice(3, 29), slice(3, 29))


def test_mean_shifts_in_percent():
    plain = np.ones((2, 2, 2))
    mask = np.ones((2, 2, 2), dtype=bool)
    assert mean_shifts(plain, 1.1 * plain, {"a": mask})["a"] == pytest.approx(10.0)


def test_a_linear_shift_invariant_filter_passes_every_probe():
    from scipy.ndimage import uniform_filter

    image, ct, body, regions = small_scan()
    shifts = run_probes(lambda spect, _ct: uniform_filter(spect, 3, mode="constant"), image, ct, body, regions,
                        SPACING, air_margin=4)
    for probe, values in shifts.items():
        assert abs(values["lesion"]) < 1e-3, probe


def test_a_denoiser_that_normalises_by_the_image_maximum_is_caught():
    image, ct, body, regions = small_scan()

    def clip_at_fixed_level(spect, _ct):  # depends on absolute units, as a model trained on one scale might
        return np.minimum(spect, 2.0)

    shifts = run_probes(clip_at_fixed_level, image, ct, body, regions, SPACING, air_margin=4)
    assert abs(shifts["units x0.01"]["lesion"]) > 50


def test_the_air_margin_goes_only_where_the_scan_shows_air():
    image, ct, body, regions = small_scan()
    assert air_margin_padding(body, 4) == ((4, 4), (4, 4), (4, 4))
    cut = body.copy()
    cut[:5] = cut[5]  # a body cut by the field of view at the first slices
    assert air_margin_padding(cut, 4) == ((0, 4), (4, 4), (4, 4))


def test_a_denoiser_blind_to_the_ends_of_a_cut_body_is_not_blamed_for_them():
    """Replicating the end slices (as a 2.5D network's context does) is right for a body cut by the field of view;
    air beyond the cut would change a lesion there, and the probe does not add it."""
    from scipy.ndimage import uniform_filter

    image, ct, body, regions = small_scan()
    cut = slice(0, 10)
    body[cut] |= body[10]
    image[cut] = np.where(body[cut], image[cut] + 1.0, 0.0)
    regions = {"end": np.zeros_like(body)}
    regions["end"][0:2, 10:14, 10:14] = True
    image[regions["end"]] += 4.0
    shifts = run_probes(lambda spect, _ct: uniform_filter(spect, 3, mode="nearest"), image, ct, body, regions,
                        SPACING, air_margin=4)
    assert abs(shifts["air margin 4 voxels"]["end"]) < 1e-3


def test_the_probe_table_names_the_case_and_region_of_a_change_above_one_percent():
    records = [{"case": {"name": "mouse-1"}, "probes": {"m": {"hot spot": {"tumour": -10.0, "lesion": 0.2},
                                                              "units": {"tumour": 0.0, "lesion": 0.0}}}},
               {"case": {"name": "iec-2"}, "probes": {"m": {"hot spot": {"sphere": 3.0},
                                                            "units": {"sphere": 0.5}}}}]
    header, _, row = report.probe_table(records)
    assert header == "| model | hot spot | units |"
    assert row == "| m | 10.0 % (3; mouse-1 tumour) | 0.5 % (3) |"
