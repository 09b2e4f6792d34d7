"""``spectdenoise denoise``: denoise one study, or a folder of studies with several worker processes.

One study: the command builds a worker request and calls :func:`SPECTDenoiseLib.worker.serve` in this process.
A folder of studies (files, or sub-folders each holding a DICOM series) with an output folder: each study runs
in its own ``python -m SPECTDenoiseLib.worker`` process, ``--jobs`` at a time, each with ``--threads`` (default
cores / jobs) torch threads; a failed study does not stop the others and the exit code is non-zero if any failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path

from ..errors import CancelledError, InputError, OutputError
from ..models.config import VARIANCE_MEANING
from ..processes import JsonLinesProcess, failure_message, library_environment
from ..worker import thread_count

WRITABLE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")
OUTPUT_FORMATS = ("auto", "dicom", "nrrd", "nii.gz", "nii", "mha")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``denoise`` parser."""
    parser = subparsers.add_parser(
        "denoise", help="denoise a low-count SPECT volume (or a folder of studies)",
        description="Denoise a low-count SPECT volume with a deep-learning model. When INPUT is a folder of "
                    "studies (volume files, or sub-folders each holding one DICOM series) and -o a folder, "
                    "every study is denoised into that folder.",
    )
    parser.add_argument("input", help="SPECT file, DICOM series folder, or folder of studies")
    parser.add_argument("-o", "--output", required=True, help="output file (or folder in batch mode)")
    parser.add_argument("--ct", help="CT of the study (batch mode: a folder with one CT per study, same names)")
    parser.add_argument("--model", help="catalogue name, local model folder, or hub repo org/name[@revision]")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument("--difference", help="also write denoised − input here (batch mode: a folder)")
    parser.add_argument("--variance", help="diffusion models: also write the per-voxel variance here (batch mode: a "
                                            "folder). " + VARIANCE_MEANING.replace("%", "%%"))
    defaults = shipped_diffusion_defaults()
    parser.add_argument("--samples", type=int,
                        help=f"diffusion models: number of samples (default: the model's{defaults})")
    parser.add_argument("--steps", type=int,
                        help=f"diffusion models: number of DDIM steps (default: the model's{defaults})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the diffusion noise (default: 0)")
    parser.add_argument("--progress", choices=["jsonl"], help="print progress as JSON lines on stdout")
    parser.add_argument("--format", choices=OUTPUT_FORMATS, default="auto",
                        help="output format: dicom writes each output as a derived DICOM series of the input's study "
                             "into a folder; auto (default) follows the output names, and in batch mode writes "
                             "DICOM studies as DICOM series and other studies in their own format")
    parser.add_argument("--jobs", type=int, default=2, help="batch mode: studies run in parallel (default: 2)")
    parser.add_argument("--threads", type=thread_count, metavar="N",
                        help="CPU threads torch may use (default: torch's own choice, all cores; batch mode: cores "
                             "÷ jobs per study); on a busy machine fewer threads can be faster")
    parser.add_argument("--no-uptake-guard", dest="uptake_guard", action="store_false",
                        help="return the bare network output: do not give back the input where denoising removed "
                             "structure beyond the noise (a lesion), nor its counts at coarse scale (organ and body "
                             "totals); for studying models only")
    parser.add_argument("--reference", help="a full-count scan of the same study: print RMSE, NRMSE, PSNR and SSIM "
                                            "of the input and of the denoised image against it (in the body)")
    parser.set_defaults(func=run)


def shipped_diffusion_defaults() -> str:
    """``"; spect-diffusion-refine: 8 samples and 10 DDIM steps"`` for the catalogue's shipped diffusion models ("" if none)."""
    from ..errors import ModelError
    from ..hub import read_catalogue
    from .models import diffusion_defaults

    try:
        catalogue = read_catalogue()
        configs = {entry["id"]: json.loads((catalogue["folder"] / entry["path"] / "config.json").read_text("utf-8"))
                   for entry in catalogue["models"] if entry.get("kind") == "diffusion" and "path" in entry}
    except (ModelError, OSError, ValueError):
        return ""
    return "".join(f"; {name}: {diffusion_defaults(config)}" for name, config in configs.items()
                   if isinstance(config, dict) and diffusion_defaults(config))


def run(args: argparse.Namespace) -> int:
    """Denoise one study or, for a folder input with a folder output, every study in it.

    With ``--progress jsonl`` stdout carries JSON lines only: an error raised before or around the worker (a bad
    ``--reference``, two studies of one name) is reported as an ``error`` event too (as ``--events jsonl``).
    """
    if args.progress == "jsonl":
        args.events = "jsonl"
    if is_batch(Path(args.input), Path(args.output)):
        return run_batch(args)
    return run_single(args)


def is_batch(input_path: Path, output_path: Path) -> bool:
    """True when ``input_path`` is a folder of studies (not itself one DICOM series) and ``output_path`` is a
    folder (existing, or named without a suffix)."""
    if not input_path.is_dir() or is_dicom_series_folder(input_path):
        return False
    return output_path.is_dir() or not any(output_path.name.lower().endswith(s) for s in WRITABLE_SUFFIXES + (".mhd",))


def run_single(args: argparse.Namespace) -> int:
    """Denoise one study in this process, printing JSON lines or a human progress line; the ``--reference``
    comparison is part of the ``done`` event."""
    from ..io import check_distinct_files
    from ..worker import Request, emit_json_line, serve

    emit = emit_json_line if args.progress == "jsonl" else HumanProgress()
    check_format(args)
    request = Request(input=args.input, output=args.output, ct=args.ct, model=args.model, device=args.device,
                      difference=args.difference, variance=args.variance, samples=args.samples, steps=args.steps,
                      seed=args.seed, threads=args.threads, uptake_guard=args.uptake_guard)
    check_distinct_files({"input": args.input, "CT": args.ct, "reference": args.reference}, request.outputs())
    comparison = ReferenceComparison(Path(args.input), Path(args.reference)) if args.reference else None
    if comparison is not None:
        emit = comparison.added_to_done(emit, Path(args.output))
    return serve(request, emit, debug=args.debug)


class ReferenceComparison:
    """RMSE, NRMSE, PSNR and SSIM of the input and of the denoised image against a full-count reference, in the
    body. The reference is read and checked, and the input scored, before denoising: a bad reference costs no
    denoising time and is reported like any other bad input."""

    def __init__(self, low: Path, reference: Path) -> None:
        from ..io import check_finite, image_to_array, read_volume, same_geometry
        from ..metrics import body_mask, image_quality

        low_image, reference_image = read_volume(low), read_volume(reference)
        if not same_geometry(reference_image, low_image):
            raise InputError(f"The reference '{reference}' is not on the grid of '{low}'; resample it first.")
        self.reference = reference
        self.truth = image_to_array(reference_image, "The reference")
        check_finite(self.truth, "The reference")
        self.body = body_mask(self.truth)
        self.input_quality = image_quality(image_to_array(low_image, "The input"), self.truth, self.body)

    def added_to_done(self, emit, denoised: Path):
        """``emit`` with the comparison added to the ``done`` event as ``comparison`` (JSON-ready)."""
        def forward(event: dict) -> None:
            if event["event"] == "done":
                event = {**event, "comparison": self.record(denoised)}
            emit(event)
        return forward

    def record(self, denoised: Path) -> dict:
        """``{"reference", "body_voxels", "input": {...}, "denoised": {...}}``; an infinite PSNR is None."""
        from ..io import image_to_array, read_volume
        from ..metrics import image_quality
        from ..records import json_ready

        quality = image_quality(image_to_array(read_volume(denoised), "The denoised image"), self.truth, self.body)
        return json_ready({"reference": str(self.reference), "body_voxels": int(self.body.sum()),
                           "input": self.input_quality, "denoised": quality})


def print_comparison(comparison: dict) -> None:
    """Print a :meth:`ReferenceComparison.record` for a person."""
    print(f"Against the reference '{Path(comparison['reference']).name}' in the body "
          f"({comparison['body_voxels']} voxels):")
    for name in ("input", "denoised"):
        quality = comparison[name]
        psnr = "inf" if quality["psnr_db"] is None else f"{quality['psnr_db']:.2f}"
        print(f"  {name:9s} RMSE {quality['rmse']:.4g}  NRMSE {quality['nrmse']:.3f}  "
              f"PSNR {psnr} dB  SSIM {quality['ssim']:.3f}")


class HumanProgress:
    """Shows worker events for a person: a progress line on stderr, the outputs on stdout."""

    def __init__(self) -> None:
        self.interactive = sys.stderr.isatty()
        self.last = (-1, "")

    def end_line(self) -> None:
        """End an interactive progress line, so that what is printed next starts on a line of its own."""
        if self.interactive:
            print(file=sys.stderr)

    def __call__(self, event: dict) -> None:
        if event["event"] == "progress":
            percent = int(100 * event["fraction"])
            if self.interactive:
                print(f"\r[{percent:3d}%] {event['stage']}: {event['message']}".ljust(79), end="", file=sys.stderr,
                      flush=True)
            elif event["stage"] != self.last[1] or percent >= self.last[0] + 10:
                print(f"[{percent:3d}%] {event['stage']}: {event['message']}", file=sys.stderr, flush=True)
                self.last = (percent, event["stage"])
            return
        self.end_line()
        if event["event"] == "done":
            for kind, path in event["outputs"].items():
                print(f"{kind}: {path}")
            print(f"Done in {event['seconds']:.1f} s on {event['device']} with model {event['model']}.",
                  file=sys.stderr)
            if "comparison" in event:
                print_comparison(event["comparison"])
        else:
            print(f"spectdenoise: error: {event['message']}", file=sys.stderr)


def find_studies(folder: Path) -> dict[str, Path]:
    """Return the studies in ``folder`` by name: volume files (name without suffix) and sub-folders.

    Raises InputError when two entries share a name (``a.nrrd`` and ``a.nii.gz``): outputs and CTs are matched
    by name, so neither may be skipped silently.
    """
    from ..io import VOLUME_SUFFIXES

    studies: dict[str, Path] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        lower = entry.name.lower()
        suffix = next((s for s in VOLUME_SUFFIXES if lower.endswith(s)), None)
        if not entry.is_dir() and suffix is None:
            continue
        name = entry.name if entry.is_dir() else entry.name[: len(entry.name) - len(suffix)]
        if name in studies:
            raise InputError(f"'{studies[name].name}' and '{entry.name}' in '{folder}' are both study '{name}'; "
                             "rename or move one so that every study has its own name.")
        studies[name] = entry
    return studies


def is_dicom_series_folder(folder: Path) -> bool:
    """True when ``folder`` holds no sub-folders and its DICOM files form one series (a study, not a batch)."""
    from ..dicom import _scan

    return not any(entry.is_dir() for entry in folder.iterdir()) and len(_scan(folder)) == 1


def output_name(study: Path, name: str, output_format: str = "auto") -> str:
    """Output name of a study in batch mode: ``name`` alone (a DICOM series folder) for DICOM studies under
    ``auto`` and for ``dicom``; otherwise ``name`` with the format's suffix (``auto``: the study's own, NRRD
    for .nhdr/.mhd)."""
    from ..dicom_output import is_dicom_input

    if output_format == "dicom" or (output_format == "auto" and is_dicom_input(study)):
        return name
    if output_format != "auto":
        return f"{name}.{output_format}"
    lower = study.name.lower()
    return name + next((s for s in WRITABLE_SUFFIXES if lower.endswith(s)), ".nrrd")


def check_format(args: argparse.Namespace) -> None:
    """Raise OutputError when a single study's output names do not match an explicit ``--format``."""
    from ..dicom_output import is_series_folder

    for option, path in (("-o", args.output), ("--difference", args.difference), ("--variance", args.variance)):
        if path is None or args.format == "auto":
            continue
        folder = is_series_folder(path)
        if (args.format == "dicom") != folder or (not folder and not path.lower().endswith("." + args.format)):
            wanted = "a folder name without a suffix" if args.format == "dicom" else f"a name ending in .{args.format}"
            raise OutputError(f"With --format {args.format}, {option} needs {wanted}, not '{path}'.")


def run_batch(args: argparse.Namespace) -> int:
    """Denoise every study of the input folder with ``--jobs`` worker processes; return 0 if all succeeded."""
    from ..worker import Request

    studies = find_studies(Path(args.input))
    if not studies:
        raise InputError(f"The folder '{args.input}' holds no volume files or DICOM series folders.")
    if args.jobs < 1:
        raise InputError("--jobs must be 1 or more.")
    folders = {"output": Path(args.output), "difference": args.difference, "variance": args.variance}
    for kind, folder in folders.items():
        if folder is not None:
            _make_folder(Path(folder), kind)
    cts = find_studies(Path(args.ct)) if args.ct else {}
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    runner = BatchRunner(args.progress == "jsonl")
    with tempfile.TemporaryDirectory(prefix="spectdenoise-batch-") as scratch:
        requests = {}
        for name, study in studies.items():
            out = output_name(study, name, args.format)
            request = Request(
                input=study, output=Path(args.output) / out, ct=cts.get(name, Path(args.ct) / name) if args.ct else None,
                model=args.model, device=args.device, samples=args.samples, steps=args.steps, seed=args.seed,
                threads=threads, uptake_guard=args.uptake_guard,
                difference=Path(args.difference) / out if args.difference else None,
                variance=Path(args.variance) / out if args.variance else None,
            )
            requests[name] = request.write(Path(scratch) / f"{len(requests)}.json")
        failed = runner.run(requests, args.jobs, threads)
    print(f"{len(studies) - len(failed)} of {len(studies)} studies denoised"
          + (f"; failed: {', '.join(failed)}." if failed else "."), file=sys.stderr)
    return 0 if not failed else max(failed.values())


class BatchRunner:
    """Runs worker processes for named request files, reports per study, and stops them all on cancel."""

    def __init__(self, jsonl: bool) -> None:
        self.jsonl = jsonl
        self.lock = threading.Lock()
        self.processes: set[JsonLinesProcess] = set()
        self.cancelled = False

    def run(self, requests: dict[str, Path], jobs: int, threads: int) -> dict[str, int]:
        """Run all requests, ``jobs`` at a time; return {study: exit code} of those that failed."""
        pool = ThreadPoolExecutor(max_workers=jobs)
        futures: dict[Future, str] = {pool.submit(self._one, name, path, threads): name
                                      for name, path in requests.items()}
        failed: dict[str, int] = {}
        try:
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for future in done:
                    code = future.result()
                    if code:
                        failed[futures[future]] = code
        except CancelledError:
            self._stop_all()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        return failed

    def _one(self, name: str, request: Path, threads: int) -> int:
        if self.cancelled:
            return CancelledError.exit_code
        environment = library_environment({**os.environ, "OMP_NUM_THREADS": str(threads)})
        with self.lock:
            if self.cancelled:
                return CancelledError.exit_code
            process = JsonLinesProcess([sys.executable, "-m", "SPECTDenoiseLib.worker", str(request)],
                                       stderr_path=request.with_suffix(".stderr"), env=environment)
            self.processes.add(process)
        started = time.monotonic()
        final = None

        def on_event(event: dict) -> None:
            nonlocal final
            if event.get("event") == "log":
                return
            self._report(name, event)
            if event.get("event") in ("done", "error"):
                final = event

        code = process.follow(on_event)
        with self.lock:
            self.processes.discard(process)
            for line in request.with_suffix(".stderr").read_text("utf-8", errors="replace").splitlines():
                print(f"[{name}] {line}", file=sys.stderr, flush=True)  # warnings, named by study
        if final is None:
            self._report(name, {"event": "error", "exit_code": code or 1,
                                "message": failure_message(None, code, process.stderr_tail())})
        elif final["event"] == "done" and not self.jsonl:
            print(f"[done] {name}: {final['outputs']['denoised']} ({time.monotonic() - started:.1f} s)",
                  file=sys.stderr, flush=True)
        return code if code else (0 if final and final["event"] == "done" else 1)

    def _report(self, name: str, event: dict) -> None:
        with self.lock:
            if self.jsonl:
                print(json.dumps({**event, "study": name}), flush=True)
            elif event.get("event") == "error":
                print(f"[failed] {name}: {event['message']}", file=sys.stderr, flush=True)

    def _stop_all(self) -> None:
        with self.lock:
            self.cancelled = True
            running = list(self.processes)
        for process in running:  # each study's thread sees its process end (SIGKILL after the grace period)
            process.terminate(grace_s=10.0)


def _make_folder(folder: Path, kind: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"Cannot create the {kind} folder '{folder}': {error.strerror}.") from None
