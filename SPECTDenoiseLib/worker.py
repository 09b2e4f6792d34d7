"""The background process that runs a model: ``python -m SPECTDenoiseLib.worker REQUEST.json``.

The request is a JSON object::

    {"input": path, "output": path, "ct": path|null, "model": id|null, "device": "auto",
     "difference": path|null, "variance": path|null, "samples": int|null, "steps": int|null, "seed": 0,
     "threads": int|null}

The worker prints one JSON object per line on stdout (flushed)::

    {"event": "progress", "fraction": 0.4, "stage": "loading|preparing|denoising|sampling|writing", "message": "..."}
    {"event": "done", "outputs": {"denoised": path, "difference": path?, "variance": path?}, "seconds": 3.1,
     "device": "cpu", "model": "..."}
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
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .errors import CancelledError, InputError, OutputError, SPECTDenoiseError
from .records import unknown_keys

Emit = Callable[[dict], None]
LOADING_END, DENOISING_END = 0.05, 0.95


@dataclasses.dataclass(frozen=True)
class Request:
    """One denoising job; paths are files (or, for ``input`` and ``ct``, DICOM series folders)."""

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

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Request:
        """Build a request from its JSON form; raise InputError naming the first problem."""
        if not isinstance(data, Mapping):
            raise InputError("The worker request must be a JSON object.")
        unknown = unknown_keys(data, cls)
        if unknown:
            raise InputError(f"The worker request has unknown keys {unknown}.")
        if not data.get("input") or not data.get("output"):
            raise InputError("The worker request must name an 'input' and an 'output'.")
        values = {key: value for key, value in data.items() if value is not None}
        for key in ("input", "output", "ct", "difference", "variance"):
            if key in values:
                values[key] = Path(values[key])
        for key in ("samples", "steps", "seed", "threads"):
            if key in values and (not isinstance(values[key], int) or isinstance(values[key], bool)):
                raise InputError(f"The worker request's '{key}' must be a whole number.")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form (paths as strings)."""
        return {key: str(value) if isinstance(value, Path) else value
                for key, value in dataclasses.asdict(self).items()}

    def outputs(self) -> dict[str, Path]:
        """Return the requested outputs by kind: ``denoised`` always, ``difference`` and ``variance`` if asked."""
        named = {"denoised": self.output, "difference": self.difference, "variance": self.variance}
        return {kind: path for kind, path in named.items() if path is not None}


def check_outputs(request: Request) -> None:
    """Raise OutputError if an output repeats another, overwrites an input, or cannot be written."""
    from .dicom_output import check_output

    inputs = {_resolved(path) for path in (request.input, request.ct) if path is not None}
    seen: set[Path] = set()
    for kind, path in request.outputs().items():
        resolved = _resolved(path)
        if resolved in inputs:
            raise OutputError(f"The {kind} output '{path}' is an input; choose another file name.")
        if resolved in seen:
            raise OutputError(f"The {kind} output '{path}' is used for two outputs; give each its own file name.")
        seen.add(resolved)
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
        torch.set_num_threads(request.threads)

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
                     seed=request.seed, want_variance=request.variance is not None, progress=scaled)
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
            "seconds": round(time.monotonic() - started, 3), "device": str(device), "model": model.name}


def serve(request: Request, emit: Emit) -> int:
    """Run ``request`` and emit exactly one ``done`` or ``error`` event; return the exit code."""
    try:
        emit(execute(request, emit))
        return 0
    except SPECTDenoiseError as error:
        emit({"event": "error", "message": str(error), "exit_code": error.exit_code})
        return error.exit_code
    except KeyboardInterrupt:
        emit({"event": "error", "message": "Cancelled.", "exit_code": CancelledError.exit_code})
        return CancelledError.exit_code
    except MemoryError:
        emit({"event": "error", "message": "Out of memory; try a smaller volume or --device cpu.", "exit_code": 1})
        return 1
    except Exception as error:  # noqa: BLE001 - a bug: one line on stdout, the traceback on stderr
        traceback.print_exc(file=sys.stderr)
        emit({"event": "error", "message": f"Internal error: {type(error).__name__}: {error}.", "exit_code": 1})
        return 1


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
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise InputError(f"Cannot read the worker request '{path}': {error.strerror or error}.") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"The worker request '{path}' is not valid JSON ({error}).") from None


def _resolved(path: Path) -> Path:
    return Path(path).expanduser().resolve()


if __name__ == "__main__":
    sys.exit(main())
