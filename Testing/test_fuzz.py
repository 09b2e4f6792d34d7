"""Property-based fuzzing (hypothesis) of what users feed in: metrics on arbitrary arrays and masks, ROI boxes →
voxel masks, and the JSON files we parse (model config files and each of their fields, training settings, the
catalogue).

test_metrics.py already checks metric identities on non-negative volumes with full masks and test_models.py
fuzzes ``ModelConfig.from_dict`` on JSON values; here the inputs are hostile: negative and huge float32 values,
arbitrary or empty masks and label maps, arbitrary bytes in files.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from model_fixtures import TINY

from SPECTDenoiseLib import metrics
from SPECTDenoiseLib.errors import InputError, ModelError
from SPECTDenoiseLib.hub import read_catalogue
from SPECTDenoiseLib.models.config import ModelConfig
from SPECTDenoiseLib.models.registry import MAX_PARAMETERS, expected_weights
from SPECTDenoiseLib.train.settings import TrainSettings

SHAPE = (7, 8, 9)
FLOAT32_MAX = float(np.finfo(np.float32).max)
finite32 = st.floats(-FLOAT32_MAX, FLOAT32_MAX, allow_nan=False, width=32)
volumes = arrays(np.float32, SHAPE, elements=finite32)
masks = arrays(np.bool_, SHAPE)
label_maps = arrays(np.int32, SHAPE, elements=st.integers(0, 3))
spacings = st.tuples(*[st.floats(0.1, 10.0)] * 3)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=16,
)
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _finite_or_documented(value: float, documented: tuple[float, ...] = ()) -> bool:
    return math.isfinite(value) or any(value == d or (math.isnan(d) and math.isnan(value)) for d in documented)


@FUZZ
@given(volumes, volumes, masks)
def test_image_metrics_raise_only_input_errors_and_return_finite_values(image, reference, mask):
    for function, lowest, documented in ((metrics.rmse, 0.0, ()), (metrics.nrmse, 0.0, ()),
                                         (metrics.psnr, -math.inf, (math.inf,))):
        try:
            value = function(image, reference, mask)
        except InputError as error:
            assert str(error).endswith(".")
            continue
        assert isinstance(value, float) and value >= lowest and _finite_or_documented(value, documented)


@FUZZ
@given(volumes, masks, spacings)
def test_region_statistics_raise_only_input_errors_and_cov_is_the_only_nan(array, mask, spacing):
    try:
        stats = metrics.region_statistics(array, mask, spacing)
    except InputError:
        assert not mask.any()
        return
    assert stats.voxels == int(mask.sum())
    values = array[mask]
    assert stats.min == float(values.min()) and stats.max == float(values.max())
    slack = 1e-6 * float(np.abs(array).max())  # the peak sphere may reach voxels outside the mask
    assert stats.min - slack <= stats.mean <= stats.max + slack
    assert float(array.min()) - slack <= stats.peak <= float(array.max()) + slack
    assert all(math.isfinite(v) for v in (stats.volume_ml, stats.mean, stats.max, stats.min, stats.std, stats.peak))
    assert _finite_or_documented(stats.cov, (math.nan,)) and (math.isnan(stats.cov) == (stats.mean == 0))


@FUZZ
@given(volumes, label_maps, spacings)
def test_label_statistics_give_one_record_per_present_label_or_an_input_error(array, labels, spacing):
    try:
        records = metrics.label_statistics(array, labels, spacing)
    except InputError as error:
        assert not labels.any() and "holds no region" in str(error)
        return
    assert sorted(records) == sorted(int(v) for v in np.unique(labels) if v > 0)
    assert all(records[v].voxels == int((labels == v).sum()) for v in records)


hostile_ints = st.integers(-(2**70), 2**70) | st.sampled_from([0, 1, 8, 255, 256, 257, 1024, 1025, 2**31, 2**63])
hostile_numbers = hostile_ints | st.floats() | st.booleans()
argument_values = hostile_numbers | st.text(max_size=6) | st.lists(hostile_numbers, max_size=10)
_argument_names = st.sampled_from(["channels", "num_res_units", "num_res_blocks", "norm_groups", "mid", "width",
                                   "dropout", "residual_scale", "attention_levels", "norm"])
_diffusion_fields = st.dictionaries(st.sampled_from(["train_timesteps", "schedule", "default_steps",
                                                     "default_samples", "eta"]), hostile_ints | st.text(max_size=8),
                                    max_size=5)
config_changes = st.fixed_dictionaries({}, optional={
    "arguments": st.dictionaries(_argument_names, argument_values, max_size=3),
    "patch_size": st.lists(hostile_ints, max_size=4),
    "context_slices": hostile_ints,
    "size_multiple": hostile_ints,
    "voxel_mm_range": st.lists(hostile_numbers, max_size=3),
    "count_fractions": st.lists(hostile_numbers, max_size=3),
    "sampling": st.sampled_from(["slices", "patches", "volume"]),
    "kind": st.sampled_from(["deterministic", "diffusion"]),
    "diffusion": st.none() | _diffusion_fields,
})


@FUZZ
@given(st.sampled_from(sorted(TINY)), config_changes)
def test_hostile_config_fields_give_a_bounded_network_or_a_model_error(architecture, changes):
    """Any field value: a ModelError sentence, or a network within the parameter budget, found without
    allocating it (what ``load_package`` checks before reading weights)."""
    data = {**TINY[architecture], **changes}
    if "arguments" in changes:
        data["arguments"] = {**TINY[architecture]["arguments"], **changes["arguments"]}
    try:
        expected = expected_weights(ModelConfig.from_dict(data))
    except ModelError as error:
        assert str(error).endswith(".")
        return
    assert sum(math.prod(shape) for dtype, shape in expected.values() if dtype.is_floating_point) <= MAX_PARAMETERS


@FUZZ
@given(st.binary(max_size=64) | json_values.map(lambda v: json.dumps(v).encode()))
def test_model_config_files_give_a_config_or_a_model_error(tmp_path, content):
    path = tmp_path / "config.json"
    path.write_bytes(content)
    try:
        assert isinstance(ModelConfig.load(path), ModelConfig)
    except ModelError as error:
        assert str(error).endswith(".")


_settings_fields = st.sampled_from(["model", "data", "output", "run_dir", "patch", "batch_size", "steps",
                                    "learning_rate", "ssim_weight", "lesion_weight", "validation_cases",
                                    "validate_every", "seed", "name", "description", "initial_weights", "extra"])
VALID_SETTINGS = {"model": TINY["unet2d"], "data": ["cases"], "output": "model", "run_dir": "run", "patch": [32, 32]}


@FUZZ
@given(st.one_of(json_values, st.dictionaries(_settings_fields, json_values, max_size=5)
                 .map(lambda changes: {**VALID_SETTINGS, **changes}), st.binary(max_size=32)))
def test_training_settings_files_give_settings_or_an_input_or_model_error(tmp_path, data):
    path = tmp_path / "settings.json"
    path.write_bytes(data if isinstance(data, bytes) else json.dumps(data).encode())
    try:
        loaded = TrainSettings.load(path)
    except (InputError, ModelError) as error:
        assert str(error).endswith(".")
        return
    assert isinstance(loaded.model_config, ModelConfig)
    assert all(isinstance(folder, str) for folder in loaded.data)


@FUZZ
@given(st.one_of(json_values, st.fixed_dictionaries({"default": json_values, "models": st.lists(
    st.dictionaries(st.sampled_from(["id", "path", "repo_id", "revision", "sha256"]), json_values), max_size=3)})))
def test_catalogue_files_give_a_catalogue_or_a_model_error(tmp_path, data):
    path = tmp_path / "Models.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    try:
        catalogue = read_catalogue(path)
    except ModelError as error:
        assert str(error).endswith(".")
        return
    assert all(isinstance(entry["id"], str) for entry in catalogue["models"])


BOUNDARY_MM = 1e-3


@pytest.fixture(scope="module")
def volume():
    """A 6 × 7 × 8 oblique volume node (RAS geometry) in its own scene, and the module's ROI logic."""
    pytest.importorskip("slicer")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SPECTDenoise"))
    import slicer
    from SPECTDenoiseLogic import roi
    from test_slicer_logic import _oblique_node

    scene = slicer.vtkMRMLScene()
    node, _ = _oblique_node(scene, np.zeros((6, 7, 8)))
    return scene, node, roi


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(centre=st.tuples(*[st.floats(-40.0, 40.0)] * 3), size=st.tuples(*[st.floats(0.5, 60.0)] * 3),
       angles=st.tuples(*[st.floats(-180.0, 180.0)] * 3))
def test_roi_mask_agrees_with_is_point_in_roi_world_away_from_the_box_faces(volume, centre, size, angles):
    import vtk

    scene, volume, roi = volume
    box = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "box")
    try:
        rotation = vtk.vtkTransform()
        rotation.RotateZ(angles[0])
        rotation.RotateY(angles[1])
        rotation.RotateX(angles[2])
        box.SetAndObserveObjectToNodeMatrix(rotation.GetMatrix())
        box.SetCenterWorld(*centre)
        box.SetSizeWorld(*size)
        points = roi.voxel_centres_world(volume).reshape(-1, 3)
        expected = np.array([box.IsPointInROIWorld(p) for p in points])
        try:
            mask = roi.roi_mask(box, volume).reshape(-1)
        except InputError as error:
            assert not expected.any() and "contains no voxel" in str(error)
            return
        axes = [np.zeros(3) for _ in range(3)]
        box.GetXAxisWorld(axes[0])
        box.GetYAxisWorld(axes[1])
        box.GetZAxisWorld(axes[2])
        margins = [np.abs(np.abs((points - centre) @ axis) - half) for axis, half in zip(axes, np.array(size) / 2)]
        clear = np.min(margins, axis=0) > BOUNDARY_MM
        np.testing.assert_array_equal(mask[clear], expected[clear])
    finally:
        scene.RemoveNode(box)
