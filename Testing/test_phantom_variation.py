"""Training-data variation: extra hot lesions and textured uptake never touch the CT."""

from __future__ import annotations

import numpy as np
import pytest

from SPECTDenoiseLib.phantoms import make_phantom
from SPECTDenoiseLib.phantoms.variation import with_background_scale, with_hot_lesions, with_texture


@pytest.fixture(scope="module")
def phantom():
    return make_phantom("torso", seed=4, voxel_mm=8.0)


def test_hot_lesions_get_their_own_labels_and_leave_the_ct_alone(phantom):
    varied = with_hot_lesions(phantom, np.random.default_rng(0), 4, diameter_mm=(16.0, 20.0), contrast=(5.0, 6.0))
    new = {value: name for value, name in varied.label_names.items() if value not in phantom.label_names}
    assert len(new) == 4 and all(name.startswith("hot_lesion_") for name in new.values())
    np.testing.assert_array_equal(varied.ct, phantom.ct)
    for value in new:
        inside = varied.labels == value
        if inside.any():
            assert varied.activity[inside].mean() > 2 * np.median(phantom.activity[phantom.activity > 0])


def test_texture_varies_uptake_but_keeps_its_mean_and_the_ct(phantom):
    textured = with_texture(phantom, np.random.default_rng(1), strength=0.2)
    body = phantom.activity > 0
    ratio = textured.activity[body] / phantom.activity[body]
    assert ratio.std() > 0.1 and ratio.mean() == pytest.approx(1.0, abs=0.05)
    np.testing.assert_array_equal(textured.ct, phantom.ct)
    assert not textured.activity[~body].any()


def test_background_scale_empties_only_the_background():
    iec = make_phantom("iec", seed=4, voxel_mm=8.0)
    emptied = with_background_scale(iec, 0.01)
    background = iec.labels == next(v for v, n in iec.label_names.items() if n == "background")
    np.testing.assert_allclose(emptied.activity[background], 0.01 * iec.activity[background], rtol=1e-6)
    np.testing.assert_array_equal(emptied.activity[~background], iec.activity[~background])
    np.testing.assert_array_equal(emptied.ct, iec.ct)
