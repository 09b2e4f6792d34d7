"""Digital phantoms: seeded variation, consistent volumes and label tables, physical sizes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from SPECTDenoiseLib.errors import InputError
from SPECTDenoiseLib.phantoms import FAMILIES, make_phantom, phantom_images
from SPECTDenoiseLib.simulation import PRESETS, hu_to_mu

COARSE = {"iec": 8.0, "torso": 8.0, "brain": 6.0, "cardiac": 8.0, "mouse": 1.0}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_same_seed_gives_same_phantom_and_another_seed_differs(family):
    first = make_phantom(family, seed=4, voxel_mm=COARSE[family])
    again = make_phantom(family, seed=4, voxel_mm=COARSE[family])
    other = make_phantom(family, seed=5, voxel_mm=COARSE[family])
    np.testing.assert_array_equal(first.activity, again.activity)
    assert first.activity.shape != other.activity.shape or not np.array_equal(first.activity, other.activity)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_volumes_share_one_grid_and_labels_are_named(family):
    phantom = make_phantom(family, seed=1, voxel_mm=COARSE[family])
    shape = phantom.activity.shape
    assert phantom.ct.shape == phantom.mu_map.shape == phantom.labels.shape == shape and len(shape) == 3
    assert phantom.activity.dtype == np.float32 and phantom.labels.dtype == np.int16
    assert phantom.activity.min() >= 0 and phantom.activity.max() > 1.0
    assert -1000.0 <= phantom.ct.min() and phantom.ct.max() <= 3000.0
    np.testing.assert_allclose(phantom.mu_map, hu_to_mu(phantom.ct, PRESETS[phantom.collimator]))
    present = set(np.unique(phantom.labels).tolist()) - {0}
    assert present <= set(phantom.label_names)


def test_size_and_voxel_size_are_configurable():
    phantom = make_phantom("brain", seed=0, voxel_mm=5.0, size=48, slices=40)
    assert phantom.activity.shape == (40, 48, 48) and phantom.spacing_mm == (5.0, 5.0, 5.0)


def test_iec_spheres_have_their_nominal_volume():
    phantom = make_phantom("iec", seed=2, voxel_mm=2.0, slices=48)
    for label, name in phantom.label_names.items():
        if name.startswith("sphere_") and name != "sphere_10mm":
            diameter = float(name[len("sphere_"):-2])
            volume = np.count_nonzero(phantom.labels == label) * 8.0
            assert volume == pytest.approx(math.pi / 6 * diameter**3, rel=0.15)


def test_dat_brain_striatum_is_hotter_than_brain_background():
    phantom = make_phantom("brain", seed=3, voxel_mm=3.0)
    names = {v: k for k, v in phantom.label_names.items()}
    background = phantom.activity[phantom.labels == names["brain"]].mean()
    assert phantom.activity[phantom.labels == names["caudate_left"]].mean() > 1.5 * background


def test_phantom_images_are_centred_with_the_voxel_spacing():
    phantom = make_phantom("mouse", seed=0, voxel_mm=1.0)
    images = phantom_images(phantom)
    activity = images["activity"]
    assert activity.GetSpacing() == (1.0, 1.0, 1.0)
    centre = activity.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in activity.GetSize()])
    np.testing.assert_allclose(centre, 0.0, atol=1e-6)


def test_unknown_family_is_an_input_error():
    with pytest.raises(InputError, match="Unknown phantom"):
        make_phantom("liver")
