"""Errors a user can cause, each carrying one sentence they can act on and the CLI exit code.

The CLI, the worker and the Slicer module show ``str(error)`` and never a traceback for these.

Exit codes (documented, with the policy decisions, in docs/ERRORS.md):
    0  success
    1  unexpected internal error (a bug: the traceback is shown with ``--debug``)
    2  command-line usage error (argparse)
    3  bad input data (missing, unreadable, wrong dimension, NaN, no overlap, empty ROI, ...)
    4  model problem (unknown, missing files, invalid config, weights not matching)
    5  hub problem (repository or revision not found, offline and not cached, checksum mismatch)
    6  device problem (requested device not available, out of memory)
    7  output problem (not writable, would overwrite an input, disk full)
    130 cancelled (SIGTERM / SIGINT / Cancel in Slicer)
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator


class SPECTDenoiseError(Exception):
    """Base class for every error a user can cause; ``str(err)`` is the sentence to show."""

    exit_code = 1


class InputError(SPECTDenoiseError):
    """The input data cannot be used (missing, unreadable, wrong shape, NaN, geometry mismatch...)."""

    exit_code = 3


class ModelError(SPECTDenoiseError):
    """A model package is unknown, incomplete, invalid or does not match its weights."""

    exit_code = 4


class HubError(SPECTDenoiseError):
    """A model could not be fetched from (or verified against) the Hugging Face Hub."""

    exit_code = 5


class DeviceError(SPECTDenoiseError):
    """The requested compute device is not available."""

    exit_code = 6


class OutputError(SPECTDenoiseError):
    """An output cannot be written (path not writable, equal to an input, disk full...)."""

    exit_code = 7


class DeviceMemoryError(DeviceError):
    """The computer or the GPU ran out of memory while running a model."""


class CancelledError(KeyboardInterrupt):
    """The run was cancelled by the user (Cancel, SIGTERM or Ctrl-C).

    Like ``KeyboardInterrupt`` it is not an ``Exception``: handlers that catch ``Exception`` (a constructor's
    complaints, a reader's errors) never swallow a cancel; only ``except KeyboardInterrupt`` (or this class) and
    ``finally`` blocks see it.
    """

    exit_code = 130


@contextlib.contextmanager
def cancellable() -> Iterator[None]:
    """While active, the first SIGTERM or SIGINT raises CancelledError in the main thread; later ones are ignored."""
    fired = False

    def cancel(signum: int, frame: object) -> None:
        nonlocal fired
        if not fired:
            fired = True
            raise CancelledError("Cancelled.")

    previous = {sig: signal.signal(sig, cancel) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def as_memory_error(error: BaseException) -> DeviceMemoryError | None:
    """Return the one-sentence DeviceMemoryError for an out-of-memory error of Python/numpy (``MemoryError``) or
    torch (CPU ``RuntimeError``, CUDA ``OutOfMemoryError``, MPS), or None for any other error."""
    text = str(error).lower()
    if type(error).__name__ == "OutOfMemoryError" or (isinstance(error, RuntimeError) and "out of memory" in text):
        return DeviceMemoryError("The GPU ran out of memory; use --device cpu, or a smaller volume (crop it).")
    if isinstance(error, MemoryError) or (isinstance(error, RuntimeError) and ("can't allocate memory" in text
                                                                                or "not enough memory" in text)):
        return DeviceMemoryError("The computer ran out of memory; close other programs, or use a smaller volume "
                                 "(crop or downsample it) or a smaller model.")
    return None
