"""``spectdenoise info FILE``: geometry, value range, kind and units, SUV tags and (when computable) the SUV factor.

The kind of image decides whether SUV applies: DICOM says it (Modality NM/PT: emission, CT: CT); for other
formats a label map is recognised by the label-name file beside it or by few small whole numbers (at most
:data:`LABEL_MAP_MAX_LABELS` distinct values in 0..255), a CT by air values (below :data:`CT_AIR_BELOW_HU`), and
anything else is taken as an emission image (SPECT/PET).
"""

from __future__ import annotations

import argparse
import datetime
from typing import Any

from ..records import strict_json
from ..suv import SUVParameters, add_suv_arguments

LABEL_MAP_MAX_LABELS = 64
CT_AIR_BELOW_HU = -500.0
KINDS = {"emission": "SPECT/PET (emission)", "ct": "CT", "labels": "label map", "other": "other DICOM modality"}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``info`` sub-command."""
    parser = subparsers.add_parser(
        "info", help="show geometry, units and SUV information of a volume",
        description="Show size, spacing, origin and direction (LPS), value range, kind of image and voxel units, "
        "DICOM SUV tags and, for emission images (SPECT/PET), the SUV factor when it can be computed.",
    )
    parser.add_argument("file", metavar="FILE", help="volume file (NIfTI, NRRD, MHA, DICOM file) or DICOM folder")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    add_suv_arguments(parser)
    parser.set_defaults(func=run)


def describe(path: str, overrides: SUVParameters) -> dict[str, Any]:
    """Everything ``info`` reports about the volume at ``path``, as plain JSON-ready values."""
    import numpy as np
    import SimpleITK as sitk

    from ..dicom import dicom_tags_or_empty
    from ..io import read_volume
    from ..suv import suv_from_tags

    image = read_volume(path)
    array = sitk.GetArrayViewFromImage(image)  # stored type: float64 beyond float32's range is shown as it is
    finite = array[np.isfinite(array)].astype(np.float64)
    dicom = dicom_tags_or_empty(path)
    kind = _kind(path, array, finite, dicom)
    params, factor, reason = suv_from_tags(dicom, overrides)
    return {
        "path": str(path),
        "size_xyz": list(image.GetSize()),
        "spacing_mm_xyz": list(image.GetSpacing()),
        "origin_mm_lps": list(image.GetOrigin()),
        "direction": list(image.GetDirection()),
        "pixel_type": image.GetPixelIDTypeAsString(),
        "min": float(finite.min()) if finite.size else None,
        "max": float(finite.max()) if finite.size else None,
        "mean": float(finite.mean()) if finite.size else None,
        "non_finite_voxels": int(array.size - finite.size),
        "kind": kind,
        "units": _units(kind, dicom),
        "dicom": dicom,
        "suv": {
            "parameters": {k: v.isoformat() if isinstance(v, datetime.datetime) else v for k, v in vars(params).items()},
            "factor": factor,
            "missing": reason,
        } if kind == "emission" else None,
    }


def _kind(path: str, array: Any, finite: Any, dicom: dict[str, Any]) -> str:
    """``emission``, ``ct``, ``labels`` or ``other`` (see the module docstring)."""
    import numpy as np

    from ..io import read_label_names

    modality = dicom.get("Modality")
    if modality:
        return {"NM": "emission", "PT": "emission", "CT": "ct"}.get(str(modality).upper(), "other")
    if read_label_names(path):
        return "labels"
    if np.issubdtype(array.dtype, np.integer) and finite.size and finite.min() >= 0 and finite.max() <= 255:
        if np.count_nonzero(np.bincount(np.asarray(array, dtype=np.int64).ravel())) <= LABEL_MAP_MAX_LABELS:
            return "labels"
    if finite.size and finite.min() < CT_AIR_BELOW_HU:
        return "ct"
    return "emission"


def _units(kind: str, dicom: dict[str, Any]) -> str | None:
    """The voxel units: DICOM Units (or HU for CT), label numbers for a label map, else None (not stated)."""
    if kind == "labels":
        return "label numbers"
    if kind == "ct":
        return "HU"
    return dicom.get("Units")


def _text(report: dict[str, Any]) -> str:
    def numbers(values: list[float]) -> str:
        return ", ".join(f"{v:.6g}" for v in values)

    lines = [
        f"File:            {report['path']}",
        f"Size [x, y, z]:  {' × '.join(str(v) for v in report['size_xyz'])}",
        f"Spacing (mm):    {numbers(report['spacing_mm_xyz'])}",
        f"Origin (LPS mm): {numbers(report['origin_mm_lps'])}",
        f"Direction:       {numbers(report['direction'])}",
        f"Pixel type:      {report['pixel_type']}",
        f"Values:          min {report['min']:.6g}, max {report['max']:.6g}, mean {report['mean']:.6g}"
        if report["min"] is not None else "Values:          no finite values",
    ]
    if report["non_finite_voxels"]:
        lines.append(f"Non-finite:      {report['non_finite_voxels']} voxels")
    lines.append(f"Kind:            {KINDS[report['kind']]}")
    lines.append(f"Units:           {report['units'] or 'not stated in the file'}")
    for key, value in report["dicom"].items():
        if key != "Units":
            lines.append(f"{key + ':':<17}{value}")
    suv = report["suv"]
    if suv is not None:
        lines.append(f"SUV factor:      {suv['factor']:.6g} (SUVbw per voxel unit)" if suv["factor"] is not None
                     else f"SUV factor:      not computable: {suv['missing']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Print the description of ``args.file``; return 0."""
    from ..suv import suv_parameters_from_arguments

    report = describe(args.file, suv_parameters_from_arguments(args))
    print(strict_json(report) if args.json else _text(report))
    return 0
