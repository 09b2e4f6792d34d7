"""Regions for the comparison table: markups ROI boxes and segmentation segments → voxel masks [z, y, x].

``vtkMRMLMarkupsROINode.IsPointInROI`` answers True for every point in slicer-core, so boxes are tested here in
world coordinates against the ROI's world centre, axes and size (the same test as ``IsPointInROIWorld``,
vectorised over all voxels).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import slicer
import vtk

from SPECTDenoiseLib.errors import InputError


@dataclasses.dataclass(frozen=True)
class Region:
    """A named region of a volume: ``mask`` is a bool array [z, y, x] on that volume's voxel grid."""

    name: str
    mask: np.ndarray


def ijk_to_world(volume: slicer.vtkMRMLScalarVolumeNode) -> np.ndarray:
    """Return the 4×4 matrix from the voxel indices (i, j, k) of ``volume`` to world RAS (mm), its linear parent
    transforms applied; a non-linear one raises InputError."""
    if volume.GetParentTransformNode() is not None and not volume.GetParentTransformNode().IsTransformToWorldLinear():
        raise InputError(f"Volume '{volume.GetName()}' is under a non-linear transform; harden it first.")
    ijk_to_ras = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(ijk_to_ras)
    to_world = vtk.vtkMatrix4x4()
    slicer.vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(volume.GetParentTransformNode(), None, to_world)
    return np.array([[to_world.GetElement(r, c) for c in range(4)] for r in range(4)]) @ np.array(
        [[ijk_to_ras.GetElement(r, c) for c in range(4)] for r in range(4)]
    )


def voxel_centres_world(volume: slicer.vtkMRMLScalarVolumeNode) -> np.ndarray:
    """Return the world (RAS, mm) position of every voxel centre of ``volume`` as an array [z, y, x, 3].

    A linear parent transform of the volume is applied; a non-linear one raises InputError.
    """
    matrix = ijk_to_world(volume)
    i, j, k = volume.GetImageData().GetDimensions()
    kk, jj, ii = np.meshgrid(np.arange(k), np.arange(j), np.arange(i), indexing="ij")
    ijk = np.stack([ii, jj, kk], axis=-1).astype(np.float64)
    return ijk @ matrix[:3, :3].T + matrix[:3, 3]


def roi_mask(roi: slicer.vtkMRMLMarkupsROINode, volume: slicer.vtkMRMLScalarVolumeNode) -> np.ndarray:
    """Return a bool mask [z, y, x] of the voxels of ``volume`` whose centres lie inside the box ``roi``.

    Raises
    ------
    InputError
        If the ROI has not been placed or holds no voxel centre of the volume.
    """
    if roi.GetNumberOfControlPoints() == 0:
        raise InputError(f"ROI '{roi.GetName()}' has not been placed yet; place it over the region first.")
    centre = np.zeros(3)
    roi.GetCenterWorld(centre)
    size = np.zeros(3)
    roi.GetSizeWorld(size)
    half_size = size / 2.0
    axes = []
    for getter in (roi.GetXAxisWorld, roi.GetYAxisWorld, roi.GetZAxisWorld):
        axis = np.zeros(3)
        getter(axis)
        axes.append(axis)
    offsets = voxel_centres_world(volume) - centre
    inside = np.ones(offsets.shape[:3], dtype=bool)
    for axis, half in zip(axes, half_size):
        inside &= np.abs(offsets @ axis) <= half + 1e-6
    return _nonempty(inside, roi.GetName(), volume.GetName())


def segment_masks(segmentation: slicer.vtkMRMLSegmentationNode,
                  volume: slicer.vtkMRMLScalarVolumeNode) -> list[Region]:
    """Return one Region per segment of ``segmentation``, resampled onto the voxel grid of ``volume``.

    Segments may overlap; each mask is exported on its own. Raises InputError for an empty segment.
    """
    segments = segmentation.GetSegmentation()
    if segments.GetNumberOfSegments() == 0:
        raise InputError(f"Segmentation '{segmentation.GetName()}' has no segments; add one or choose another.")
    regions = []
    for index in range(segments.GetNumberOfSegments()):
        segment_id = segments.GetNthSegmentID(index)
        name = segments.GetSegment(segment_id).GetName()
        regions.append(Region(name, _nonempty(_segment_mask(segmentation, segment_id, volume), name, volume.GetName())))
    return regions


def _segment_mask(segmentation: slicer.vtkMRMLSegmentationNode, segment_id: str,
                  volume: slicer.vtkMRMLScalarVolumeNode) -> np.ndarray:
    """Export one segment onto the voxel grid of ``volume`` as a bool mask [z, y, x] through a temporary labelmap.

    The export adds a labelmap display node and a new colour table to the scene; they are removed with the labelmap
    (as ``slicer.util.arrayFromSegmentBinaryLabelmap`` does), so measuring leaves the scene as it was.
    """
    scene = volume.GetScene()
    before = {node.GetID() for node in scene.GetNodes()}
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "SPECTDenoise temporary labelmap")
    try:
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(segment_id)
        if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(segmentation, ids, labelmap, volume):
            raise InputError(f"Segment '{segment_id}' could not be resampled onto '{volume.GetName()}'.")
        return slicer.util.arrayFromVolume(labelmap) > 0
    finally:
        display = labelmap.GetDisplayNode()
        if display is not None:
            color_id = display.GetColorNodeID()
            scene.RemoveNode(display)
            if color_id and color_id not in before:
                scene.RemoveNode(scene.GetNodeByID(color_id))
        scene.RemoveNode(labelmap)


def regions_from_node(node: slicer.vtkMRMLNode, volume: slicer.vtkMRMLScalarVolumeNode) -> list[Region]:
    """Return the regions defined by a markups ROI (one) or a segmentation (one per segment) on ``volume``."""
    if node is None:
        raise InputError("Choose a markups ROI or a segmentation to compare regions.")
    if node.IsA("vtkMRMLMarkupsROINode"):
        return [Region(node.GetName(), roi_mask(node, volume))]
    if node.IsA("vtkMRMLSegmentationNode"):
        return segment_masks(node, volume)
    raise InputError(f"'{node.GetName()}' is neither a markups ROI nor a segmentation.")


def _nonempty(mask: np.ndarray, region: str, volume: str) -> np.ndarray:
    if not mask.any():
        raise InputError(f"Region '{region}' contains no voxel of '{volume}'; move or enlarge it over the volume.")
    return mask
