"""``spectdenoise info FILE``: geometry, value range, units, SUV tags and (when computable) the SUV factor."""

from __future__ import annotations

import argparse
import datetime
from typing import Any

from ..records import strict_json
from ..suv import SUVParameters, add_suv_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``info`` sub-command."""
    parser = subparsers.add_parser(
        "info", help="show geometry, units and SUV information of a volume",
        description="Show size, spacing, origin and direction (LPS), value range, units, DICOM SUV tags and the "
        "SUV factor when it can be computed.",
    )
    parser.add_argument("file", metavar="FILE", help="volume file (NIfTI, NRRD, MHA, DICOM file) or DICOM folder")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    add_suv_arguments(parser)
    parser.set_defaults(func=run)


def describe(path: str, overrides: SUVParameters) -> dict[str, Any]:
    """Everything ``info`` reports about the volume at ``path``, as plain JSON-ready values."""
    import numpy as np

    from ..dicom import dicom_tags_or_empty
    from ..io import image_to_array, read_volume
    from ..suv import suv_from_tags

    image = read_volume(path)
    array = image_to_array(image)
    finite = array[np.isfinite(array)]
    dicom = dicom_tags_or_empty(path)
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
        "dicom": dicom,
        "suv": {
            "parameters": {k: v.isoformat() if isinstance(v, datetime.datetime) else v for k, v in vars(params).items()},
            "factor": factor,
            "missing": reason,
        },
    }


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
    for key, value in report["dicom"].items():
        lines.append(f"{key + ':':<17}{value}")
    suv = report["suv"]
    lines.append(f"SUV factor:      {suv['factor']:.6g} (SUVbw per voxel unit)" if suv["factor"] is not None
                 else f"SUV factor:      not computable: {suv['missing']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Print the description of ``args.file``; return 0."""
    from ..suv import suv_parameters_from_arguments

    report = describe(args.file, suv_parameters_from_arguments(args))
    print(strict_json(report) if args.json else _text(report))
    return 0
