"""The background process that runs a model: ``python -m SPECTDenoiseLib.worker REQUEST.json``.

The request is a JSON object::

    {"input": path, "output": path, "ct": path|null, "model": id|null, "device": "auto",
     "difference": path|null, "variance": path|null, "samples": int|null, "steps": int|null, "seed": 0,
     "threads": int|null, "uptake_guard": true}

built only by :class:`Request`, which checks every field's type and range (see :data:`WHOLE_NUMBER_RANGES`); a
request file that is not such an object (wrong types, NUL characters, absurd nesting or size) is one ``error``
event with exit code 3.

The worker prints one JSON object per line on stdout (flushed)::

    {"event": "progress", "fraction": 0.4, "stage": "loading|preparing|denoising|sampling|writing", "message": "..."}
    {"event": "done", "outputs": {"denoised": path, "difference": path?, "variance": path?}, "seconds": 3.1,
     "device": "cpu", "model": "...", "threads": 2}

(``threads``: the torch CPU threads the run used; the request's ``threads``, else torch's default.
``uptake_guard``: false only to study the bare network; see :mod:`SPECTDenoiseLib.uptake_guard`.)
    {"event": "error", "message": "one sentence", "exit_code": 3}

and exits with 0 or the error's exit code. SIGTERM or SIGINT cancels: the run stops at once, removes what it
wrote (partial or complete) and exits 130. Leftover partial files of a killed earlier run are removed at start.
``spectdenoise denoise`` calls :func:`serve` with the same request, so the CLI, batch runs and Slicer share
this one code path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .errors import (
    CancelledError,
    InputError,
    OutputError,
    SPECTDenoiseError,
    as_memory_error,
    cancellable,
)
from .records import unknown_keys

Emit = Callable[[dict], None]
LOADING_END, DENOISING_END = 0.05, 0.95


# Whole-number fields: (smallest, largest) accepted value; None is allowed where the field's default is None.
WHOLE_NUMBER_RANGES = {"samples": (1, 1000), "steps": (1, 10_000), "seed": (0, 2**63 - 1), "threads": (1, 4096)}
PATH_FIELDS = ("input", "output", "ct", "difference", "variance")
SWITCH_FIELDS = ("uptake_guard",)
TEXT_LIMITS = {"model": 1000, "device": 32}  # characters
MAX_PATH_CHARACTERS = 4096
MAX_REQUEST_BYTES = 1 << 20


@dataclasses.dataclass(frozen=True)
class Request:
    """One denoising job; paths are files (or, for ``input`` and ``ct``, DICOM series folders).

    The one way to build a worker request (the CLI, batch mode and the Slicer module all construct this class):
    every field's type and range is checked on construction, raising InputError naming the field. Paths may be
    given as text and are stored as :class:`~pathlib.Path`.
    """

    input: Path
    output: Path
    ct: Path | None = None
    model: str | None = None
    device: str = "auto"
    difference: Path | None = None
    variance: Path | None = None
    samples: int | None = None
    steps: int | None = None
    seed: int = 0
    threads: int | None = None
    uptake_guard: bool = True

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None and field.default is None:
                continue
            if field.name in PATH_FIELDS:
                object.__setattr__(self, field.name, _checked_path(field.name, value))
            elif field.name in WHOLE_NUMBER_RANGES:
                _check_whole_number(field.name, value)
            elif field.name in SWITCH_FIELDS:
                _check_switch(field.name, value)
            else:
                _check_text(field.name, value, TEXT_LIMITS[field.name])

    @classmethod
    def from_dict(cls, data: Any) -> Request:
        """Build a request from its JSON form; raise InputError naming the first problem."""
        if not isinstance(data, Mapping):
            raise InputError("The worker request must be a JSON object.")
        unknown = unknown_keys(data, cls)
        if unknown:
            raise InputError(f"The worker request has unknown keys {unknown}.")
        if data.get("input") is None or data.get("output") is None:
            raise InputError("The worker request must name an 'input' and an 'output'.")
        return cls(**{key: value for key, value in data.items() if value is not None})

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form (paths as strings)."""
        return {key: str(value) if isinstance(value, Path) else value
                for key, value in dataclasses.asdict(self).items()}

    def write(self, path: str | os.PathLike) -> Path:
        """Write the JSON form to ``path`` (for ``python -m SPECTDenoiseLib.worker PATH``) and return the path."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1), encoding="utf-8")
        return path

    def outputs(self) -> dict[str, Path]:
        """Return the requested outputs by kind: ``denoised`` always, ``difference`` and ``variance`` if asked."""
        named = {"denoised": self.output, "difference": self.difference, "variance": self.variance}
        return {kind: path for kind, path in named.items() if path is not None}


def thread_count(text: str) -> int:
    """``--threads`` of the command line: a whole number in :data:`WHOLE_NUMBER_RANGES` ``["threads"]``, else an
    ``argparse.ArgumentTypeError`` (a usage error, exit code 2)."""
    import argparse

    low, high = WHOLE_NUMBER_RANGES["threads"]
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number of CPU threads from {low} to {high}")
    return value


def use_threads(threads: int) -> None:
    """Let torch run its operators on ``threads`` CPU threads, and its inter-op pool too where this process still
    allows that (torch sets it once, before any parallel work)."""
    import torch

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(threads)


def _checked_path(name: str, value: Any) -> Path:
    text = os.fspath(value) if isinstance(value, (str, os.PathLike)) else None
    if not isinstance(text, str) or not text or "\x00" in text or len(text) > MAX_PATH_CHARACTERS:
        raise InputError(f"The worker request's '{name}' must be a file path: text of 1 to {MAX_PATH_CHARACTERS} "
                         "characters without NUL characters.")
    return Path(text)


def _check_whole_number(name: str, value: Any) -> None:
    low, high = WHOLE_NUMBER_RANGES[name]
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InputError(f"The worker request's '{name}' must be a whole number from {low} to {high}.")


def _check_switch(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise InputError(f"The worker request's '{name}' must be true or false.")


def _check_text(name: str, value: Any, limit: int) -> None:
    if not isinstance(value, str) or not value or "\x00" in value or len(value) > limit:
        raise InputError(f"The worker request's '{name}' must be text of 1 to {limit} characters without NUL "
                         "characters.")


def check_outputs(request: Request) -> None:
    """Raise OutputError if an output repeats another, overwrites an input, or cannot be written."""
    from .dicom_output import check_output
    from .io import check_distinct_files

    check_distinct_files({"input": request.input, "CT": request.ct}, request.outputs())
    for path in request.outputs().values():
        check_output(path, request.input)
        if not path.parent.is_dir():
            raise OutputError(f"Output folder '{path.parent}' does not exist.")


def execute(request: Request, emit: Emit) -> dict:
    """Run ``request``, emitting progress events; return the ``done`` event. Raises SPECTDenoiseError.

    Outputs this call wrote are removed again if it fails or is cancelled before the end.
    """
    import torch

    from .devices import choose_device
    from .dicom_output import remove_output, write_output
    from .hub import load_model
    from .inference import denoise
    from .io import read_volume, remove_partial_outputs

    started = time.monotonic()
    check_outputs(request)
    for folder in {path.parent for path in request.outputs().values()}:
        remove_partial_outputs(folder)
    if request.threads:
        use_threads(request.threads)

    def progress(fraction: float, stage: str, message: str) -> None:
        emit({"event": "progress", "fraction": round(fraction, 4), "stage": stage, "message": message})

    device = choose_device(request.device)
    progress(0.0, "loading", f"Reading '{request.input.name}'.")
    spect = read_volume(request.input)
    ct = read_volume(request.ct) if request.ct is not None else None
    progress(0.02, "loading", "Loading the model.")
    model = load_model(request.model, device=str(device))

    def scaled(fraction: float, stage: str, message: str) -> None:
        progress(LOADING_END + (DENOISING_END - LOADING_END) * fraction, stage, message)

    result = denoise(spect, model, ct=ct, device=device, samples=request.samples, steps=request.steps,
                     seed=request.seed, want_variance=request.variance is not None, progress=scaled,
                     uptake_guard=request.uptake_guard)
    images = {"denoised": result.denoised, "difference": result.difference, "variance": result.variance}
    written: list[Path] = []
    try:
        for kind, path in request.outputs().items():
            progress(DENOISING_END + (1 - DENOISING_END) * len(written) / 3, "writing", f"Writing {kind} to '{path}'.")
            written.append(write_output(images[kind], path, kind=kind, source=request.input, model=model.name))
    except BaseException:
        for path in written:
            remove_output(path)
        raise
    progress(1.0, "writing", "Done.")
    return {"event": "done", "outputs": {kind: str(path) for kind, path in request.outputs().items()},
            "seconds": round(time.monotonic() - started, 3), "device": str(device), "model": model.name,
            "threads": torch.get_num_threads()}


def serve(request: Request, emit: Emit, debug: bool = False) -> int:
    """Run ``request`` and emit exactly one ``done`` or ``error`` event; return the exit code.

    Out-of-memory errors become a DeviceMemoryError; any other unexpected error (a bug) is reported as an
    internal error (exit code 1), with its traceback on stderr only when ``debug`` is set.
    """
    try:
        emit(execute(request, emit))
        return 0
    except KeyboardInterrupt:  # CancelledError (SIGTERM, SIGINT) is a KeyboardInterrupt
        emit({"event": "error", "message": "Cancelled.", "exit_code": CancelledError.exit_code})
        return CancelledError.exit_code
    except Exception as error:  # noqa: BLE001 - user errors, out of memory, and bugs: one event each
        known = error if isinstance(error, SPECTDenoiseError) else as_memory_error(error)
        if known is not None:
            emit({"event": "error", "message": str(known), "exit_code": known.exit_code})
            return known.exit_code
        if debug:
            traceback.print_exc(file=sys.stderr)
        emit({"event": "error", "message": f"Internal error: {type(error).__name__}: {error}.", "exit_code": 1})
        return 1


def emit_json_line(event: dict) -> None:
    """Print ``event`` as one JSON line on stdout and flush (a closed pipe is ignored)."""
    with contextlib.suppress(BrokenPipeError):
        print(json.dumps(event), flush=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point: read the request file named by the only argument, serve it, return the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    with cancellable():
        try:
            if len(argv) != 1:
                raise InputError("Usage: python -m SPECTDenoiseLib.worker REQUEST.json")
            request = Request.from_dict(_read_json(Path(argv[0])))
        except SPECTDenoiseError as error:
            emit_json_line({"event": "error", "message": str(error), "exit_code": error.exit_code})
            return error.exit_code
        return serve(request, emit_json_line)


def _read_json(path: Path) -> Any:
    """Parse the request file; any unreadable, oversized, malformed or absurdly nested file is an InputError."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_REQUEST_BYTES + 1)
    except (OSError, ValueError) as error:
        reason = getattr(error, "strerror", None) or error
        raise InputError(f"Cannot read the worker request '{path}': {reason}.") from None
    if len(raw) > MAX_REQUEST_BYTES:
        raise InputError(f"The worker request '{path}' is larger than {MAX_REQUEST_BYTES} bytes.")
    try:
        return json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise InputError(f"The worker request '{path}' is nested too deeply to be a request.") from None
    except ValueError as error:  # also UnicodeDecodeError, JSONDecodeError and over-long integer literals
        raise InputError(f"The worker request '{path}' is not valid JSON ({error}).") from None


if __name__ == "__main__":
    sys.exit(main())
