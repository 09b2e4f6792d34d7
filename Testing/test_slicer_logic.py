"""The Slicer module's MRML logic on a real vtkMRMLScene from the slicer-core wheel."""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SPECTDenoise"))

from SPECTDenoiseLogic import comparison, outputs, roi, teaching, volumes

from SPECTDenoiseLib.errors import InputError


def _matrix(vtk_matrix) -> np.ndarray:
    return np.array([[vtk_matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _ijk_to_ras(node) -> np.ndarray:
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return _matrix(matrix)


def _rotation(degrees_z: float, degrees_x: float) -> np.ndarray:
    a, b = math.radians(degrees_z), math.radians(degrees_x)
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    return rz @ rx


def _oblique_node(scene, array: np.ndarray, name: str = "SPECT"):
    """A volume node with an oblique direction, anisotropic spacing and a ramp (RAS geometry)."""
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.SetSpacing((2.0, 3.0, 4.5))
    image.SetOrigin((-12.0, 25.0, 7.5))
    image.SetDirection(tuple(_rotation(30, 15).ravel()))
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    volumes.image_to_node(image, node)
    node.CreateDefaultDisplayNodes()
    return node, image


def _ramp(shape=(6, 7, 8)) -> np.ndarray:
    return np.arange(np.prod(shape), dtype=np.float32).reshape(shape)


def test_node_written_to_file_is_read_by_slicer_with_the_same_ras_geometry(scene, tmp_path):
    node, _ = _oblique_node(scene, _ramp())
    path = volumes.write_node(node, tmp_path / "spect.nrrd")
    loaded = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "loaded")
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    assert storage.ReadData(loaded)
    np.testing.assert_allclose(_ijk_to_ras(loaded), _ijk_to_ras(node), atol=1e-5)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(loaded), _ramp())


def test_file_on_disk_holds_lps_geometry(scene, tmp_path):
    node, _ = _oblique_node(scene, _ramp())
    on_disk = sitk.ReadImage(str(volumes.write_node(node, tmp_path / "spect.nii.gz")))
    ras = _ijk_to_ras(node)
    flip = np.diag([-1.0, -1.0, 1.0])
    np.testing.assert_allclose(on_disk.GetOrigin(), flip @ ras[:3, 3], atol=1e-5)
    np.testing.assert_allclose(on_disk.GetSpacing(), (2.0, 3.0, 4.5), atol=1e-6)
    direction = np.array(on_disk.GetDirection()).reshape(3, 3)
    np.testing.assert_allclose(direction * on_disk.GetSpacing(), flip @ ras[:3, :3], atol=1e-5)


def test_file_written_by_slicer_reads_into_a_node_with_the_same_geometry(scene, tmp_path):
    node, _ = _oblique_node(scene, _ramp())
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(tmp_path / "by_slicer.nrrd"))
    assert storage.WriteData(node)
    read = volumes.read_node(scene, tmp_path / "by_slicer.nrrd", "read")
    np.testing.assert_allclose(_ijk_to_ras(read), _ijk_to_ras(node), atol=1e-5)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(read), _ramp())


def test_variance_units_are_the_input_units_squared(scene):
    node, _ = _oblique_node(scene, _ramp())
    units = slicer.vtkCodedEntry()
    units.SetValueSchemeMeaning("Bq/ml", "UCUM", "Bq/ml")
    node.SetVoxelValueUnits(units)
    target = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "variance")
    volumes.copy_voxel_units(node, target, squared=True)
    assert target.GetVoxelValueUnits().GetCodeValue() == "(Bq/ml)2"
    assert target.GetVoxelValueUnits().GetCodeMeaning() == "(Bq/ml)²"  # not Bq/ml², which reads as Bq per ml²


def test_roi_mask_matches_is_point_in_roi_world_for_a_rotated_roi(scene):
    node, image = _oblique_node(scene, np.zeros((10, 12, 14)))
    box = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "box")
    centre = np.array(image.TransformContinuousIndexToPhysicalPoint((6.5, 5.5, 4.5))) * [-1, -1, 1]
    box.SetCenterWorld(centre)
    box.SetSizeWorld(14.0, 9.0, 20.0)
    import vtk

    rotation = vtk.vtkMatrix4x4()
    for r, row in enumerate(_rotation(-20, 40)):
        for c, value in enumerate(row):
            rotation.SetElement(r, c, value)
    box.SetAndObserveObjectToNodeMatrix(rotation)
    box.SetCenterWorld(centre)
    mask = roi.roi_mask(box, node)
    centres = roi.voxel_centres_world(node)
    expected = np.array([box.IsPointInROIWorld(p) for p in centres.reshape(-1, 3)]).reshape(mask.shape)
    assert 10 < mask.sum() < mask.size / 2
    np.testing.assert_array_equal(mask, expected)


def test_roi_outside_the_volume_raises_a_clear_input_error(scene):
    node, _ = _oblique_node(scene, np.zeros((6, 6, 6)))
    box = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "far away")
    box.SetCenterWorld(1000.0, 1000.0, 1000.0)
    box.SetSizeWorld(5.0, 5.0, 5.0)
    with pytest.raises(InputError, match="far away.*contains no voxel"):
        roi.roi_mask(box, node)


def test_unplaced_roi_raises_input_error(scene):
    node, _ = _oblique_node(scene, np.zeros((6, 6, 6)))
    box = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "unplaced")
    with pytest.raises(InputError, match="not been placed"):
        roi.roi_mask(box, node)


def _labelmap_segmentation(scene, reference, labels: np.ndarray):
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    labelmap.CopyOrientation(reference)
    slicer.util.updateVolumeFromArray(labelmap, labels.astype(np.uint8))
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "segmentation")
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentation)
    return segmentation


def test_segmentation_gives_one_mask_per_segment_on_the_volume_grid(scene):
    node, _ = _oblique_node(scene, np.zeros((8, 9, 10)))
    labels = np.zeros((8, 9, 10), np.uint8)
    labels[2:5, 3:6, 1:4] = 1
    labels[6, 7, 8] = 2
    regions = roi.regions_from_node(_labelmap_segmentation(scene, node, labels), node)
    assert len(regions) == 2
    np.testing.assert_array_equal(regions[0].mask, labels == 1)
    np.testing.assert_array_equal(regions[1].mask, labels == 2)


def test_measuring_segments_leaves_no_temporary_nodes_in_the_scene(scene):
    """Exporting a segment makes a labelmap, its display node and a colour table; all three are removed again
    (as slicer.util.arrayFromSegmentBinaryLabelmap does), so each Compute table leaves the scene as it was."""
    node, _ = _oblique_node(scene, np.zeros((8, 9, 10)))
    labels = np.zeros((8, 9, 10), np.uint8)
    labels[2:5, 3:6, 1:4] = 1
    labels[6, 7, 8] = 2
    segmentation = _labelmap_segmentation(scene, node, labels)
    slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)  # always there in the application
    before = {n.GetID() for n in scene.GetNodes()}
    for _ in range(2):
        roi.regions_from_node(segmentation, node)
    assert [n.GetName() for n in scene.GetNodes() if n.GetID() not in before] == []


def _sphere_phantom(shape=(32, 32, 32), radius=6.0, hot=10.0, background=1.0) -> tuple[np.ndarray, np.ndarray]:
    z, y, x = np.indices(shape)
    sphere = (z - 16) ** 2 + (y - 16) ** 2 + (x - 16) ** 2 <= radius**2
    return np.where(sphere, hot, background).astype(np.float32), sphere


def _axis_aligned_node(scene, array, name):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    node.SetSpacing(2.0, 2.0, 2.0)
    slicer.util.updateVolumeFromArray(node, array)
    return node


def test_roi_table_reports_known_sphere_values_suv_and_percent_vs_reference(scene):
    phantom, _ = _sphere_phantom()
    reference = _axis_aligned_node(scene, phantom, "full")
    low = _axis_aligned_node(scene, phantom * 0.8, "low")
    denoised = _axis_aligned_node(scene, phantom * 0.95, "denoised")
    box = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "sphere core")
    box.SetCenterWorld(32.0, 32.0, 32.0)  # voxel 16 at 2 mm spacing, RAS origin 0
    box.SetSizeWorld(12.0, 12.0, 12.0)  # 7 voxel centres per axis, all inside the 6-voxel sphere
    rows = comparison.compare_volume_nodes(
        {"low-count": low, "denoised": denoised, "reference": reference}, box, suv_scale=2.0, reference="reference"
    )
    by_volume = {row.volume: row for row in rows}
    assert [row.region for row in rows] == ["sphere core"] * 3
    assert by_volume["reference"].volume_ml == pytest.approx(7**3 * 8 / 1000)
    assert by_volume["reference"].mean == pytest.approx(10.0)
    assert by_volume["reference"].suv_max == pytest.approx(20.0)
    assert by_volume["low-count"].suv_mean == pytest.approx(16.0)
    assert by_volume["low-count"].mean_vs_reference_percent == pytest.approx(-20.0)
    assert by_volume["denoised"].max_vs_reference_percent == pytest.approx(-5.0)
    assert by_volume["reference"].cov_percent == pytest.approx(0.0, abs=1e-6)
    assert by_volume["reference"].mean_vs_reference_percent == pytest.approx(0.0)



def test_a_volume_moved_by_another_transform_is_not_measured_as_if_it_were_in_place(scene):
    """A full-count scan registered in Slicer sits under a transform: on its own grid it equals the low-count one,
    but in the world it lies elsewhere. Measuring both through the same voxel masks would compare different places
    (the regions are taken on the first volume's world grid), so it is refused in one sentence; under the same
    transform as the first volume it is measured."""
    import vtk

    phantom, _ = _sphere_phantom()
    low = _axis_aligned_node(scene, phantom * 0.8, "low")
    reference = _axis_aligned_node(scene, phantom, "full")
    moved = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    shift = vtk.vtkMatrix4x4()
    shift.SetElement(0, 3, 20.0)
    moved.SetMatrixTransformToParent(shift)
    reference.SetAndObserveTransformNodeID(moved.GetID())
    box = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "sphere core")
    box.SetCenterWorld(32.0, 32.0, 32.0)
    box.SetSizeWorld(12.0, 12.0, 12.0)
    with pytest.raises(InputError, match="'full' .*transform"):
        comparison.compare_volume_nodes({"low-count": low, "reference": reference}, box, reference="reference")
    low.SetAndObserveTransformNodeID(moved.GetID())
    box.SetCenterWorld(52.0, 32.0, 32.0)
    rows = comparison.compare_volume_nodes({"low-count": low, "reference": reference}, box, reference="reference")
    assert rows[0].mean_vs_reference_percent == pytest.approx(-20.0)

def test_roi_table_fills_a_table_node_and_exports_csv(scene, tmp_path):
    phantom, sphere = _sphere_phantom()
    node = _axis_aligned_node(scene, phantom, "full")
    segmentation = _labelmap_segmentation(scene, node, sphere.astype(np.uint8))
    rows = comparison.compare_volume_nodes({"reference": node}, segmentation)
    table = comparison.fill_table(scene.AddNewNodeByClass("vtkMRMLTableNode", "comparison"), rows)
    assert table.GetNumberOfRows() == 1
    assert table.GetNumberOfColumns() == len(comparison.COLUMNS)
    assert table.GetCellText(0, 0) == rows[0].region
    assert float(table.GetCellText(0, 3)) == pytest.approx(10.0)
    written = comparison.write_csv(rows, tmp_path / "rois.csv")
    records = list(csv.DictReader(written.open()))
    assert records[0]["Volume ml"] == str(rows[0].volume_ml)
    assert records[0]["SUVmean"] == ""  # no SUV factor known


def test_volumes_on_different_grids_are_refused(scene):
    phantom, _ = _sphere_phantom()
    a = _axis_aligned_node(scene, phantom, "a")
    b = _axis_aligned_node(scene, phantom, "b")
    b.SetSpacing(3.0, 3.0, 3.0)
    box = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "box")
    box.SetCenterWorld(32.0, 32.0, 32.0)
    box.SetSizeWorld(10.0, 10.0, 10.0)
    with pytest.raises(InputError, match="resample"):
        comparison.compare_volume_nodes({"a": a, "b": b}, box)


def _study_with_input(scene):
    node, _ = _oblique_node(scene, _ramp())
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    patient = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "Patient")
    study = hierarchy.CreateStudyItem(patient, "Study")
    item = hierarchy.GetItemByDataNode(node)
    if item:
        hierarchy.SetItemParent(item, study)
    else:
        hierarchy.CreateItem(study, node)
    return node, hierarchy, study


def _make_output(scene, node, kind, values):
    output = outputs.get_or_create_output(scene, node, kind)
    slicer.util.updateVolumeFromArray(output, values.astype(np.float32))
    output.CopyOrientation(node)
    outputs.finish_output(node, output, kind)
    return output


def test_outputs_are_named_after_the_input_and_placed_in_its_study(scene):
    node, hierarchy, study = _study_with_input(scene)
    made = {kind: _make_output(scene, node, kind, _ramp()) for kind in outputs.KINDS}
    assert [made[k].GetName() for k in outputs.KINDS] == ["SPECT denoised", "SPECT difference", "SPECT variance"]
    for output in made.values():
        assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(output)) == study


def test_denoised_is_displayed_like_the_input(scene):
    node, _ = _oblique_node(scene, _ramp())
    node.GetDisplayNode().SetAndObserveColorNodeID("vtkMRMLPETProceduralColorNodePET-Rainbow2")
    node.GetDisplayNode().SetAutoWindowLevel(False)
    node.GetDisplayNode().SetWindowLevel(40.0, 25.0)
    display = _make_output(scene, node, "denoised", _ramp()).GetDisplayNode()
    assert display.GetColorNodeID() == "vtkMRMLPETProceduralColorNodePET-Rainbow2"
    assert (display.GetWindow(), display.GetLevel()) == (40.0, 25.0)


def test_difference_uses_a_diverging_map_centred_on_zero(scene):
    node, _ = _oblique_node(scene, _ramp())
    values = _ramp() - 100.0
    display = _make_output(scene, node, "difference", values).GetDisplayNode()
    colors = display.GetColorNode()
    assert display.GetLevel() == 0.0
    assert display.GetWindow() == pytest.approx(2 * np.abs(values).max())
    low, middle, high = ([0.0] * 4 for _ in range(3))
    for index, rgba in zip((0, 128, 255), (low, middle, high)):
        assert colors.GetColor(index, rgba)
    assert low[2] > 0.9 and low[0] < 0.1 and high[0] > 0.9 and high[2] < 0.1 and min(middle[:3]) > 0.9


def test_variance_uses_a_heat_map_from_zero(scene):
    node, _ = _oblique_node(scene, _ramp())
    display = _make_output(scene, node, "variance", _ramp()).GetDisplayNode()
    assert display.GetColorNodeID() == "vtkMRMLPETProceduralColorNodePET-Heat"
    assert display.GetWindowLevelMin() == 0.0


def test_teaching_fractions_accept_decimals_and_percent():
    assert teaching.parse_fractions("0.5, 25%;0.1") == [0.5, 0.25, 0.1]
    with pytest.raises(InputError, match="outside"):
        teaching.parse_fractions("1.5")


def test_teaching_layout_puts_views_side_by_side_row_by_row(scene):
    layout = scene.AddNewNodeByClass("vtkMRMLLayoutNode")
    layout_id = teaching.use_side_by_side_layout(layout, 2, 3)
    assert layout.GetViewArrangement() == layout_id
    description = layout.GetCurrentLayoutDescription()
    assert description.count('class="vtkMRMLSliceNode"') == 6 and description.count('type="horizontal"') == 2
    assert teaching.use_side_by_side_layout(layout, 1, 3) != layout_id
    composites = []
    for name in teaching.view_names(6):
        composite = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
        composite.SetLayoutName(name)
        composites.append(composite)
    shown = [_axis_aligned_node(scene, np.zeros((4, 4, 4), np.float32), f"v{i}") for i in range(6)]
    assert teaching.show_side_by_side(scene, shown) == 6
    assert [c.GetBackgroundVolumeID() for c in composites] == [v.GetID() for v in shown]


def test_a_denoised_volume_is_shown_in_the_standard_views_and_not_in_the_teaching_views(scene):
    views = {}
    for name in ("Red", "Yellow", "Teaching1", "Teaching2"):
        views[name] = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
        views[name].SetLayoutName(name)
    series = _axis_aligned_node(scene, np.zeros((4, 4, 4), np.float32), "series")
    views["Teaching1"].SetBackgroundVolumeID(series.GetID())
    denoised = _axis_aligned_node(scene, np.ones((4, 4, 4), np.float32), "denoised")
    assert teaching.show_in_standard_views(scene, denoised) == 2
    assert [views[n].GetBackgroundVolumeID() for n in ("Red", "Yellow")] == [denoised.GetID()] * 2
    assert views["Teaching1"].GetBackgroundVolumeID() == series.GetID()
    assert views["Teaching2"].GetBackgroundVolumeID() is None


def test_suv_scale_uses_hand_entered_values_over_dicom_and_says_what_is_missing():
    tags = {"PatientWeight": "60", "RadionuclideTotalDose": "500000000", "Units": "BQML", "DecayCorrection": "ADMIN"}
    scale, why = comparison.suv_scale(tags, weight_kg=80.0)
    assert why == "" and scale == pytest.approx(80_000 / 500e6)
    scale, why = comparison.suv_scale(None, weight_kg=80.0)
    assert scale is None and "injected activity" in why
