"""Compute device choice, mixed precision and batch sizes for inference."""

from __future__ import annotations

import contextlib
import re

import torch

from .errors import DeviceError

CPU_BATCH_VOXELS = 8 * 128 * 128
GPU_MEMORY_SHARE = 0.5
ACTIVATION_FACTOR = 256
MAX_BATCH = 64
CPU_PASS_VOXELS = 24 * 2**20
"""Largest volume a 3D network runs on in one pass on the CPU: the shipped 3D U-Net peaked at 4.5 GB of memory on
232 × 288 × 288 voxels (19 M), so about 5 GB here."""


def choose_device(name: str = "auto") -> torch.device:
    """Return the torch device for ``name``: ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda``, ``cuda:N``, ``mps``.

    Raises
    ------
    DeviceError
        If the named device is unknown or not present on this computer.
    """
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not _mps_available():
            raise DeviceError("The Apple GPU (mps) is not available on this computer; use --device auto or cpu.")
        return torch.device("mps")
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if match is None:
        raise DeviceError(f"Unknown device '{name}'; use auto, cpu, cuda, cuda:N or mps.")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(match.group(1) or 0)
    if index >= count:
        found = f"{count} CUDA GPU(s)" if count else "no CUDA GPU"
        raise DeviceError(f"Device '{name}' is not available (this computer has {found}); use --device auto or cpu.")
    return torch.device("cuda", index)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Mixed precision on GPUs (bfloat16 where supported, else float16); full float32 on the CPU."""
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    if device.type == "mps":
        return torch.autocast("mps", dtype=torch.float16)
    return contextlib.nullcontext()


def sampling_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Mixed precision for a diffusion model's sampled refinements: as :func:`autocast` on GPUs, and bfloat16 on a
    CPU with native bfloat16 instructions (AVX512-BF16 or AMX; float32 elsewhere, where emulated bfloat16 would be
    slower). The returned image never goes through it. A model's variance scale is fitted with the precision this
    chooses on the fitting machine (``benchmarks/calibrate_variance.py``); for the first shipped refiner, fits in
    float32 and in bfloat16 differed by 1.1 %."""
    if device.type == "cpu" and native_cpu_bfloat16():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return autocast(device)


def native_cpu_bfloat16() -> bool:
    """Whether this CPU runs bfloat16 natively in oneDNN (False where torch was built without oneDNN)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def channels_last(batch: torch.Tensor) -> torch.Tensor:
    """``batch`` in channels-last memory order when it is a batch of 2D images [B, C, H, W] (oneDNN's and cuDNN's
    faster convolution layout; same values to float rounding); other batches unchanged."""
    return batch.contiguous(memory_format=torch.channels_last) if batch.dim() == 4 else batch


def batch_size(device: torch.device, voxels_per_item: int) -> int:
    """Return how many network inputs of ``voxels_per_item`` voxels (one slice or one window) to run at once.

    On CUDA the batch fills half the free memory, assuming activations take ``ACTIVATION_FACTOR`` float32
    values per input voxel; elsewhere batches hold at most ``CPU_BATCH_VOXELS`` voxels (8 slices of 128²), so
    memory stays bounded whatever the volume size.
    """
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        fitting = GPU_MEMORY_SHARE * free // (voxels_per_item * 4 * ACTIVATION_FACTOR)
    else:
        fitting = CPU_BATCH_VOXELS // voxels_per_item
    return int(max(1, min(MAX_BATCH, fitting)))


def voxels_per_pass(device: torch.device) -> int:
    """Return the largest volume (voxels) a 3D network may run on in one pass on ``device``: on CUDA what half the
    free memory holds at ``ACTIVATION_FACTOR`` float32 values per voxel, elsewhere ``CPU_PASS_VOXELS``."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(GPU_MEMORY_SHARE * free // (4 * ACTIVATION_FACTOR))
    return CPU_PASS_VOXELS


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
