"""The ROI comparison table: per region and per volume, volume, mean/max/peak, SUV, CoV and % vs reference.

Values come from :func:`SPECTDenoiseLib.metrics.region_statistics`; SUV columns are those values times the
SUV factor of :func:`SPECTDenoiseLib.suv.suv_factor` (empty when no factor is known). The % difference compares
each volume's mean, max and peak with the reference volume's in the same region.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import slicer
import vtk

from SPECTDenoiseLib.errors import InputError
from SPECTDenoiseLib.io import atomic_output, image_to_array, same_geometry
from SPECTDenoiseLib.metrics import region_statistics
from SPECTDenoiseLib.suv import SUVParameters, suv_factor, suv_parameters_from_dicom

from .roi import Region, ijk_to_world, regions_from_node
from .volumes import node_to_image

# (column title, unit label) in table order; the first two columns are text.
COLUMNS = (
    ("Region", ""),
    ("Volume", ""),
    ("Volume ml", "ml"),
    ("Mean", ""),
    ("Max", ""),
    ("Peak", ""),
    ("SUVmean", "g/ml"),
    ("SUVmax", "g/ml"),
    ("SUVpeak", "g/ml"),
    ("CoV %", "%"),
    ("Mean vs reference %", "%"),
    ("Max vs reference %", "%"),
    ("Peak vs reference %", "%"),
)


@dataclasses.dataclass(frozen=True)
class ComparisonRow:
    """One region measured in one volume; SUV and % columns are NaN when unknown or not applicable."""

    region: str
    volume: str
    volume_ml: float
    mean: float
    max: float
    peak: float
    suv_mean: float
    suv_max: float
    suv_peak: float
    cov_percent: float
    mean_vs_reference_percent: float
    max_vs_reference_percent: float
    peak_vs_reference_percent: float

    def values(self) -> tuple:
        """The row's values in :data:`COLUMNS` order."""
        return tuple(getattr(self, field.name) for field in dataclasses.fields(self))


def suv_scale(dicom_tags: Mapping | None, weight_kg: float = 0.0, dose_mbq: float = 0.0,
              calibration: float = 0.0) -> tuple[float | None, str]:
    """Return (SUV per voxel unit, "") from DICOM tags with hand-entered values (0 = not given) taking
    precedence, or (None, the sentence saying what is missing)."""
    given = SUVParameters(weight_kg=weight_kg or None, injected_dose_mbq=dose_mbq or None,
                          calibration_bq_per_ml_per_count=calibration or None)
    known = suv_parameters_from_dicom(dict(dicom_tags)) if dicom_tags else SUVParameters()
    try:
        return suv_factor(known.merged(given)), ""
    except InputError as error:
        return None, str(error)


def compare_regions(
    volumes: Mapping[str, np.ndarray],
    regions: Sequence[Region],
    spacing_mm: Sequence[float],
    suv_scale: float | None = None,
    reference: str | None = None,
) -> list[ComparisonRow]:
    """Measure every region in every volume.

    Parameters
    ----------
    volumes : label (e.g. "low-count", "denoised", "reference") → array [z, y, x], all on one voxel grid.
    regions : masks [z, y, x] on that grid.
    spacing_mm : voxel spacing [z, y, x] in mm.
    suv_scale : SUV per voxel unit, or None when SUV cannot be computed.
    reference : label of the volume the others are compared with, or None.

    Returns
    -------
    list of ComparisonRow, region-major, volumes in the given order.
    """
    if reference is not None and reference not in volumes:
        raise ValueError(f"reference {reference!r} is not one of the volumes {list(volumes)}")
    shapes = {array.shape for array in volumes.values()}
    if len(shapes) != 1:
        raise InputError("The volumes to compare have different sizes; resample them onto one grid first.")
    rows = []
    for region in regions:
        stats = {label: region_statistics(array, region.mask, spacing_mm, name=region.name)
                 for label, array in volumes.items()}
        ref = stats.get(reference) if reference is not None else None
        scale = math.nan if suv_scale is None else suv_scale
        for label, s in stats.items():
            rows.append(ComparisonRow(
                region=region.name, volume=label, volume_ml=s.volume_ml, mean=s.mean, max=s.max, peak=s.peak,
                suv_mean=s.mean * scale, suv_max=s.max * scale, suv_peak=s.peak * scale, cov_percent=100.0 * s.cov,
                mean_vs_reference_percent=_percent(s.mean, ref.mean if ref else None),
                max_vs_reference_percent=_percent(s.max, ref.max if ref else None),
                peak_vs_reference_percent=_percent(s.peak, ref.peak if ref else None),
            ))
    return rows


def compare_volume_nodes(
    volumes: Mapping[str, slicer.vtkMRMLScalarVolumeNode],
    region_node: slicer.vtkMRMLNode,
    suv_scale: float | None = None,
    reference: str | None = None,
) -> list[ComparisonRow]:
    """Measure the regions of a markups ROI or segmentation in volume nodes that share one voxel grid.

    ``volumes`` maps a label ("low-count", "denoised", "reference") to a node; the regions are taken on the
    first volume's grid in the world. Raises InputError when a volume has another grid (resample it first) or is
    placed elsewhere in the world by its parent transforms (a registration: harden it and resample).
    """
    if not volumes:
        raise InputError("Choose at least one volume to measure.")
    images = {label: node_to_image(node) for label, node in volumes.items()}
    first_label, first = next(iter(images.items()))
    first_to_world = ijk_to_world(volumes[first_label])
    for label, image in images.items():
        name, first_name = volumes[label].GetName(), volumes[first_label].GetName()
        if not same_geometry(image, first):
            raise InputError(f"Volume '{name}' is not on the voxel grid of '{first_name}'; resample it onto that "
                             "volume first.")
        if not np.allclose(ijk_to_world(volumes[label]), first_to_world, atol=1e-4):
            raise InputError(f"Volume '{name}' is placed elsewhere than '{first_name}' by its transform; harden the "
                             "transform and resample it onto that volume first.")
    regions = regions_from_node(region_node, volumes[first_label])
    spacing_zyx = tuple(reversed(first.GetSpacing()))
    arrays = {label: image_to_array(image) for label, image in images.items()}
    return compare_regions(arrays, regions, spacing_zyx, suv_scale, reference)


def fill_table(table: slicer.vtkMRMLTableNode, rows: Sequence[ComparisonRow]) -> slicer.vtkMRMLTableNode:
    """Replace the content of ``table`` with ``rows`` (text columns for names, double columns for numbers)."""
    data = vtk.vtkTable()
    for index, (title, _) in enumerate(COLUMNS):
        column = vtk.vtkStringArray() if index < 2 else vtk.vtkDoubleArray()
        column.SetName(title)
        for row in rows:
            column.InsertNextValue(row.values()[index])
        data.AddColumn(column)
    table.SetAndObserveTable(data)
    for title, unit in COLUMNS:
        if unit:
            table.SetColumnUnitLabel(title, unit)
    table.SetUseColumnTitleAsColumnHeader(True)
    return table


def write_csv(rows: Sequence[ComparisonRow], path: str | os.PathLike) -> Path:
    """Write ``rows`` as CSV (header from :data:`COLUMNS`, empty cells for unknown values) atomically."""
    with atomic_output(path) as temporary, open(temporary, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([title for title, _ in COLUMNS])
        for row in rows:
            writer.writerow(["" if isinstance(v, float) and math.isnan(v) else v for v in row.values()])
    return Path(path)


def _percent(value: float, reference: float | None) -> float:
    if reference is None or reference == 0:
        return math.nan
    return 100.0 * (value - reference) / reference
