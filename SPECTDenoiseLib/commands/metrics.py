"""``spectdenoise metrics IMAGE --reference REF``: image quality in the body or a mask, and per-label statistics."""

from __future__ import annotations

import argparse
from typing import Any

from ..records import strict_json
from ..suv import add_suv_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``metrics`` sub-command."""
    parser = subparsers.add_parser(
        "metrics", help="compare a volume with a reference (RMSE, NRMSE, PSNR, SSIM, ROI statistics)",
        description="Compare IMAGE with REF inside a mask (an automatic body mask unless --mask is given): RMSE, "
        "NRMSE (by the reference mean), PSNR (peak = reference max), SSIM; then voxels, volume, mean, max, "
        "peak (1 cm³ sphere) and CoV for the mask and for every label of --labels, in SUV too when known.",
    )
    parser.add_argument("image", metavar="IMAGE", help="volume to assess, e.g. the denoised low-count scan")
    parser.add_argument("--reference", "-r", required=True, metavar="REF", help="reference volume on the same grid")
    parser.add_argument("--labels", metavar="LABELMAP",
                        help="label map on the same grid (0 = background); label names are read from the JSON file "
                        "beside it with the same name, as 'spectdenoise phantom' writes it (NAME_labels.json)")
    parser.add_argument("--mask", metavar="MASK",
                        help="mask on the same grid (every non-zero voxel is inside, negative or fractional "
                        "values too) instead of the body")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    add_suv_arguments(parser)
    parser.set_defaults(func=run)


def _region_record(image_stats: Any, reference_stats: Any, factor: float | None) -> dict[str, Any]:
    record = {
        "voxels": image_stats.voxels,
        "volume_ml": image_stats.volume_ml,
        "image": image_stats.as_dict(),
        "reference": reference_stats.as_dict(),
        "mean_bias_percent": 100.0 * (image_stats.mean / reference_stats.mean - 1.0) if reference_stats.mean else None,
    }
    if factor is not None:
        record["image_suv"] = image_stats.scaled(factor).as_dict()
        record["reference_suv"] = reference_stats.scaled(factor).as_dict()
    return record


def compute(args: argparse.Namespace) -> dict[str, Any]:
    """Read the inputs named in ``args`` and return the metrics report as JSON-ready values."""
    from .. import metrics
    from ..dicom import dicom_tags_or_empty
    from ..errors import InputError
    from ..io import (
        check_finite,
        image_to_array,
        read_label_map,
        read_label_names,
        read_mask,
        read_volume,
        same_geometry,
        spacing_zyx,
    )
    from ..suv import suv_from_tags, suv_parameters_from_arguments

    image, reference = read_volume(args.image), read_volume(args.reference)
    if not same_geometry(image, reference):
        raise InputError(
            f"IMAGE '{args.image}' (size {image.GetSize()}) and REF '{args.reference}' (size {reference.GetSize()}) "
            "are not on the same voxel grid; resample one onto the other first."
        )
    image_array = image_to_array(image, f"IMAGE '{args.image}'")
    reference_array = image_to_array(reference, f"REF '{args.reference}'")
    check_finite(image_array, f"IMAGE '{args.image}'")
    check_finite(reference_array, f"REF '{args.reference}'")
    if args.mask:
        mask = read_mask(args.mask, reference)
        mask_name = f"'{args.mask}'"
    else:
        mask = metrics.body_mask(reference_array)
        mask_name = "body (automatic)"
    tags = dicom_tags_or_empty(args.image) or dicom_tags_or_empty(args.reference)
    _, factor, reason = suv_from_tags(tags, suv_parameters_from_arguments(args))
    spacing = spacing_zyx(reference)
    quality = metrics.image_quality(image_array, reference_array, mask)
    whole = _region_record(
        metrics.region_statistics(image_array, mask, spacing, name=mask_name),
        metrics.region_statistics(reference_array, mask, spacing, name=mask_name),
        factor,
    )
    labels = []
    if args.labels:
        label_map = read_label_map(args.labels, reference)
        image_labels = metrics.label_statistics(image_array, label_map, spacing)
        reference_labels = metrics.label_statistics(reference_array, label_map, spacing)
        names = read_label_names(args.labels)
        labels = [
            {"label": value, "name": names.get(value),
             **_region_record(image_labels[value], reference_labels[value], factor)}
            for value in image_labels
        ]
    return {
        "image": str(args.image),
        "reference": str(args.reference),
        "mask": mask_name,
        "quality": quality,
        "suv_factor": factor,
        "suv_missing": reason,
        "whole": whole,
        "labels": labels,
    }


def _text(report: dict[str, Any]) -> str:
    quality = report["quality"]
    suffix = "_suv" if report["suv_factor"] is not None else ""
    rows = [("mask", report["whole"])] + [(f"{r['label']} {r['name']}" if r["name"] else f"label {r['label']}", r)
                                          for r in report["labels"]]
    width = max(len(name) + 1 for name, _ in rows + [("region", None)])
    lines = [
        f"Image:     {report['image']}",
        f"Reference: {report['reference']}",
        f"Mask:      {report['mask']}: {report['whole']['voxels']} voxels, {report['whole']['volume_ml']:.1f} ml",
        (
            f"RMSE {quality['rmse']:.6g}   NRMSE {quality['nrmse']:.4f} (by reference mean)   "
            f"PSNR {quality['psnr_db']:.2f} dB (peak = reference max)   SSIM {quality['ssim']:.4f}"
        ),
        f"SUV factor {report['suv_factor']:.6g}; values below in SUV" if report["suv_factor"] is not None
        else f"SUV not computable: {report['suv_missing']} Values below are in voxel units.",
        (
            f"{'region':<{width}}{'voxels':>9}{'ml':>9}{'mean':>11}{'ref mean':>11}{'bias %':>8}{'max':>11}"
            f"{'ref max':>11}{'peak':>11}{'ref peak':>11}{'CoV':>7}"
        ),
    ]
    for name, row in rows:
        a, b = row["image" + suffix], row["reference" + suffix]
        bias = "" if row["mean_bias_percent"] is None else f"{row['mean_bias_percent']:.1f}"
        lines.append(
            f"{name:<{width}}{row['voxels']:>9}{row['volume_ml']:>9.2f}{a['mean']:>11.4g}{b['mean']:>11.4g}{bias:>8}"
            f"{a['max']:>11.4g}{b['max']:>11.4g}{a['peak']:>11.4g}{b['peak']:>11.4g}{a['cov']:>7.3f}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Print the metrics report for ``args``; return 0."""
    report = compute(args)
    print(strict_json(report) if args.json else _text(report))
    return 0
