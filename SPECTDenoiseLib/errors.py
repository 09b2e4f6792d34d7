"""Errors a user can cause, each carrying one sentence they can act on and the CLI exit code.

The CLI, the worker and the Slicer module show ``str(error)`` and never a traceback for these.

Exit codes (documented, with the policy decisions, in docs/ERRORS.md):
    0  success
    1  unexpected internal error (a bug: the traceback is shown with ``--debug``)
    2  command-line usage error (argparse)
    3  bad input data (missing, unreadable, wrong dimension, NaN, no overlap, empty ROI, ...)
    4  model problem (unknown, missing files, invalid config, weights not matching)
    5  hub problem (repository or revision not found, offline and not cached, checksum mismatch)
    6  device problem (requested device not available)
    7  output problem (not writable, would overwrite an input, disk full)
    130 cancelled (SIGTERM / SIGINT / Cancel in Slicer)
"""

from __future__ import annotations


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


class CancelledError(SPECTDenoiseError):
    """The run was cancelled by the user (Cancel, SIGTERM or Ctrl-C)."""

    exit_code = 130
