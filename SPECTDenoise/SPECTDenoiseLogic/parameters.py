"""The module's parameters: one plain dataclass, stored on a ``vtkMRMLScriptedModuleNode``.

The field names are the ``SlicerParameterName`` properties of the ``.ui`` widgets. In Slicer the module builds its
``parameterNodeWrapper`` class from these fields (:func:`wrapper_namespace`), so the GUI binding, the scene file
and this dataclass share one list. :func:`store` and :func:`restore` write and read the same values for code
that runs without the wrapper (scripts, tests): node fields as node references, others as strings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Union

import slicer

# Node-valued fields → the MRML classes they accept.
NODE_FIELDS: dict[str, tuple[str, ...]] = {
    "inputVolume": ("vtkMRMLScalarVolumeNode",),
    "ctVolume": ("vtkMRMLScalarVolumeNode",),
    "referenceVolume": ("vtkMRMLScalarVolumeNode",),
    "denoisedVolume": ("vtkMRMLScalarVolumeNode",),
    "differenceVolume": ("vtkMRMLScalarVolumeNode",),
    "varianceVolume": ("vtkMRMLScalarVolumeNode",),
    "regionNode": ("vtkMRMLMarkupsROINode", "vtkMRMLSegmentationNode"),
    "comparisonTable": ("vtkMRMLTableNode",),
}


@dataclasses.dataclass
class SPECTDenoiseParameters:
    """Everything the panel sets. Node fields hold MRML nodes or None; 0 means "model default" or "unknown".

    Attributes
    ----------
    inputVolume, ctVolume, referenceVolume : low-count SPECT, optional CT, optional full-count reference.
    model : model id (catalogue name, ``org/name[@revision]`` or folder); "" for the default model.
    device : "auto", "cpu", "cuda" or "mps".
    samples, steps : DDPM samples and sampling steps (0: the model's defaults).
    seed : sampler seed.
    makeDifference, makeVariance : which extra outputs to create.
    denoisedVolume, differenceVolume, varianceVolume : output nodes (None: created and named after the input).
    regionNode : markups ROI or segmentation for the comparison table; comparisonTable: the table node.
    weightKg, doseMBq, calibration : SUV values entered by hand (0: take them from DICOM).
    teachingFractions : comma-separated count fractions for the teaching series, e.g. "0.5, 0.25, 0.1".
    teachingDenoise : also denoise each low-count version.
    """

    inputVolume: Any = None
    ctVolume: Any = None
    referenceVolume: Any = None
    model: str = ""
    device: str = "auto"
    samples: int = 0
    steps: int = 0
    seed: int = 0
    makeDifference: bool = True
    makeVariance: bool = True
    denoisedVolume: Any = None
    differenceVolume: Any = None
    varianceVolume: Any = None
    regionNode: Any = None
    comparisonTable: Any = None
    weightKg: float = 0.0
    doseMBq: float = 0.0
    calibration: float = 0.0
    teachingFractions: str = "0.5, 0.25, 0.1"
    teachingDenoise: bool = False


def _value_fields() -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(SPECTDenoiseParameters) if f.name not in NODE_FIELDS]


def store(parameters: SPECTDenoiseParameters, node: slicer.vtkMRMLScriptedModuleNode) -> None:
    """Write ``parameters`` into ``node``: node fields as references, the others as strings."""
    for name in NODE_FIELDS:
        value = getattr(parameters, name)
        node.SetNodeReferenceID(name, value.GetID() if value is not None else None)
    for field in _value_fields():
        node.SetParameter(field.name, str(getattr(parameters, field.name)))


def restore(node: slicer.vtkMRMLScriptedModuleNode) -> SPECTDenoiseParameters:
    """Read parameters written by :func:`store`; missing or unreadable values fall back to the defaults."""
    values: dict[str, Any] = {name: node.GetNodeReference(name) for name in NODE_FIELDS}
    for field in _value_fields():
        text = node.GetParameter(field.name)
        if not text:
            continue
        kind = type(field.default)
        try:
            values[field.name] = (text == "True") if kind is bool else kind(text)
        except ValueError:
            continue
    return SPECTDenoiseParameters(**values)


def wrapper_namespace(resolve: Callable[[str], type]) -> dict[str, Any]:
    """Return the class namespace (``__annotations__`` and defaults) for Slicer's ``parameterNodeWrapper``.

    ``resolve`` turns an MRML class name into the class (``lambda name: getattr(slicer, name)``); node fields
    accepting several classes become a ``typing.Union`` of them.
    """
    annotations: dict[str, Any] = {}
    namespace: dict[str, Any] = {"__annotations__": annotations}
    for field in dataclasses.fields(SPECTDenoiseParameters):
        if field.name in NODE_FIELDS:
            classes = tuple(resolve(name) for name in NODE_FIELDS[field.name])
            annotations[field.name] = classes[0] if len(classes) == 1 else Union[classes]  # noqa: UP007 (parameterNodeWrapper reads typing.Union)
        else:
            annotations[field.name] = type(field.default)
            namespace[field.name] = field.default
    return namespace


def from_object(source: Any) -> SPECTDenoiseParameters:
    """Copy the fields of any object that has them (e.g. the module's parameter node wrapper)."""
    return SPECTDenoiseParameters(**{f.name: getattr(source, f.name) for f in dataclasses.fields(SPECTDenoiseParameters)})
