"""Running a network over a whole volume in bounded memory: axial slice batches or blended 3D windows.

A *predictor* maps a batch of network inputs [B, C, y, x] (slices) or [B, C, z, y, x] (patches), on the compute
device, to outputs [B, 1, ...] in normalised units. Volumes are float32 numpy arrays indexed [z, y, x]; they
stay on the CPU and only one batch at a time goes to the device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .normalisation import stack_slices

Predictor = Callable[[torch.Tensor], torch.Tensor]
WINDOW_OVERLAP = 0.25


def pad_amounts(size: int, multiple: int) -> tuple[int, int]:
    """Return (before, after) voxels that bring ``size`` up to a multiple of ``multiple``, split evenly."""
    extra = -size % multiple
    return extra // 2, extra - extra // 2


def slice_batches(depth: int, batch: int) -> list[np.ndarray]:
    """Split the axial indices 0..depth-1 into consecutive batches of at most ``batch`` slices."""
    return [np.arange(start, min(start + batch, depth)) for start in range(0, depth, batch)]


def run_slices(
    volumes: list[np.ndarray],
    predictor: Predictor,
    context: int,
    size_multiple: int,
    batch: int,
    device: torch.device,
    on_batch: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Run ``predictor`` on every axial slice (with ``context`` neighbours each side) and return [z, y, x].

    In-plane sizes are padded by edge replication to a multiple of ``size_multiple`` and cropped back.
    ``on_batch(done, total)`` is called after each batch of slices.
    """
    depth, rows, columns = volumes[0].shape
    (top, bottom), (left, right) = pad_amounts(rows, size_multiple), pad_amounts(columns, size_multiple)
    output = np.empty((depth, rows, columns), dtype=np.float32)
    batches = slice_batches(depth, batch)
    for done, centres in enumerate(batches, start=1):
        inputs = torch.from_numpy(stack_slices(volumes, centres, context)).to(device)
        if top or bottom or left or right:
            inputs = F.pad(inputs, (left, right, top, bottom), mode="replicate")
        result = predictor(inputs)[:, 0, top:top + rows, left:left + columns]
        output[centres] = result.float().cpu().numpy()
        if on_batch is not None:
            on_batch(done, len(batches))
    return output


def count_windows(shape: Sequence[int], patch_size: Sequence[int], overlap: float = WINDOW_OVERLAP) -> int:
    """Return how many windows of ``patch_size`` cover a volume of ``shape`` [z, y, x] at ``overlap``."""
    total = 1
    for size, window in zip(shape, patch_size):
        size = max(size, window)
        step = window if window == size else max(int(window * (1 - overlap)), 1)
        total *= math.ceil((size - window) / step) + 1
    return total


def run_patches(
    volumes: list[np.ndarray],
    predictor: Predictor,
    patch_size: Sequence[int],
    batch: int,
    device: torch.device,
    on_batch: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Run ``predictor`` on overlapping 3D windows blended with Gaussian weights; return [z, y, x].

    Uses MONAI's ``sliding_window_inference`` (25 % overlap, edge-replicated padding). The volume and the
    blended output stay on the CPU; windows go to ``device`` ``batch`` at a time. ``on_batch(done, total)`` is
    called after each batch of windows.
    """
    from monai.inferers import sliding_window_inference

    inputs = torch.from_numpy(np.stack(volumes)[None])
    total = math.ceil(count_windows(volumes[0].shape, patch_size) / batch)
    done = 0

    def counted(windows: torch.Tensor) -> torch.Tensor:
        nonlocal done
        result = predictor(windows).float()
        done += 1
        if on_batch is not None:
            on_batch(min(done, total), total)
        return result

    output = sliding_window_inference(
        inputs, roi_size=tuple(patch_size), sw_batch_size=batch, predictor=counted, overlap=WINDOW_OVERLAP,
        mode="gaussian", padding_mode="replicate", sw_device=device, device=torch.device("cpu"),
    )
    return output[0, 0].numpy().astype(np.float32, copy=False)
