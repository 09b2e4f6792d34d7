"""Scalar volume nodes ↔ SimpleITK images and files, keeping geometry (RAS in MRML, LPS in ITK and on disk)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import slicer
import vtk
from slicer.util import arrayFromVolume, updateVolumeFromArray

from SPECTDenoiseLib.errors import InputError
from SPECTDenoiseLib.io import image_to_array, read_volume, write_volume

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def node_to_image(node: slicer.vtkMRMLScalarVolumeNode) -> sitk.Image:
    """Return the voxels of ``node`` as a float32 image with LPS geometry (origin and spacing in mm).

    A parent transform is ignored: the image is in the node's own coordinate frame, as Slicer saves it.
    """
    if node is None or node.GetImageData() is None:
        raise InputError("The selected volume has no image data; load or select another volume.")
    image = sitk.GetImageFromArray(np.ascontiguousarray(arrayFromVolume(node), dtype=np.float32))
    directions = vtk.vtkMatrix4x4()
    node.GetIJKToRASDirectionMatrix(directions)
    ras = np.array([[directions.GetElement(r, c) for c in range(3)] for r in range(3)])
    image.SetSpacing(tuple(float(s) for s in node.GetSpacing()))
    image.SetOrigin(tuple(float(v) for v in LPS_TO_RAS @ np.array(node.GetOrigin())))
    image.SetDirection(tuple(float(v) for v in (LPS_TO_RAS @ ras).ravel()))
    return image



def require_same_frame(node: slicer.vtkMRMLScalarVolumeNode, companion: slicer.vtkMRMLScalarVolumeNode | None) -> None:
    """Raise InputError when ``companion`` (a CT) is placed relative to ``node`` by other parent transforms.

    The background commands get both in their own frames (:func:`node_to_image` leaves transforms out) and match
    them by physical position, which is right only when the transforms between the two frames are none.
    """
    if companion is None:
        return
    between = vtk.vtkMatrix4x4()
    linear = slicer.vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(
        companion.GetParentTransformNode(), node.GetParentTransformNode(), between)
    identity = np.array([[between.GetElement(r, c) for c in range(4)] for r in range(4)])
    if not linear or not np.allclose(identity, np.eye(4), atol=1e-6):
        raise InputError(f"'{companion.GetName()}' is placed relative to '{node.GetName()}' by a transform; harden "
                         "the transforms (or put both under the same one) first.")

def image_to_node(image: sitk.Image, node: slicer.vtkMRMLScalarVolumeNode) -> slicer.vtkMRMLScalarVolumeNode:
    """Fill ``node`` with the voxels ([z, y, x], float32) and the LPS geometry of ``image`` (set as RAS)."""
    direction = LPS_TO_RAS @ np.array(image.GetDirection()).reshape(3, 3)
    matrix = vtk.vtkMatrix4x4()
    for r in range(3):
        for c in range(3):
            matrix.SetElement(r, c, float(direction[r, c]))
    node.SetIJKToRASDirectionMatrix(matrix)
    node.SetSpacing(image.GetSpacing())
    node.SetOrigin(tuple(float(v) for v in LPS_TO_RAS @ np.array(image.GetOrigin())))
    updateVolumeFromArray(node, image_to_array(image))
    return node


def write_node(node: slicer.vtkMRMLScalarVolumeNode, path: str | os.PathLike) -> Path:
    """Write ``node`` to ``path`` (format from the suffix, LPS geometry) atomically and return the path.

    Written uncompressed: these are the background commands' temporary inputs, and compressing them would keep
    Slicer's GUI thread busy for seconds on a large volume.
    """
    return write_volume(node_to_image(node), path, compress=False)


def read_node(
    scene: slicer.vtkMRMLScene, path: str | os.PathLike, name: str, node: slicer.vtkMRMLScalarVolumeNode | None = None
) -> slicer.vtkMRMLScalarVolumeNode:
    """Read a volume file into ``node`` (a new scalar volume node called ``name`` when None) and return it."""
    image = read_volume(path)
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    return image_to_node(image, node)


def squared_meaning(meaning: str) -> str:
    """How a unit reads squared: "mm" → "mm²", a compound unit in parentheses: "Bq/ml" → "(Bq/ml)²"."""
    return f"({meaning})²" if any(mark in meaning for mark in "/·* ") else f"{meaning}²"


def copy_voxel_units(source: slicer.vtkMRMLScalarVolumeNode, target: slicer.vtkMRMLScalarVolumeNode,
                     squared: bool = False) -> None:
    """Tag ``target`` with the voxel quantity and units of ``source`` (units squared for a variance)."""
    quantity, units = source.GetVoxelValueQuantity(), source.GetVoxelValueUnits()
    if quantity is not None:
        target.SetVoxelValueQuantity(quantity)
    if units is None:
        return
    if squared:
        squared_units = slicer.vtkCodedEntry()
        squared_units.SetValueSchemeMeaning(f"({units.GetCodeValue()})2", units.GetCodingSchemeDesignator() or "UCUM",
                                            squared_meaning(units.GetCodeMeaning()))
        units = squared_units
    target.SetVoxelValueUnits(units)
