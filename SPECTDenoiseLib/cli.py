"""The ``spectdenoise`` command line: one sub-command per module in ``SPECTDenoiseLib.commands``.

Each command module exposes ``register(subparsers)``, which adds its parser and sets ``func`` (a callable taking
the parsed namespace and returning an exit code). Heavy imports (torch, SimpleITK) happen inside ``func`` so
``spectdenoise --help`` stays fast. Errors a user can cause (:class:`SPECTDenoiseError`) are printed as one
sentence with their documented exit code; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

from . import __version__
from .errors import CancelledError, SPECTDenoiseError, as_memory_error, cancellable

COMMAND_MODULES = (
    "info",
    "denoise",
    "metrics",
    "models",
    "train",
    "phantom",
    "simulate",
    "dataset",
)
USAGE_EXIT_CODE = 2


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr (exit code 2), like every other error."""

    def error(self, message: str) -> NoReturn:
        """Print ``spectdenoise: error: MESSAGE (see 'PROG --help').`` and exit with code 2."""
        self.exit(USAGE_EXIT_CODE, f"spectdenoise: error: {message} (see '{self.prog} --help').\n")


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every sub-command registered (sub-parsers share its class)."""
    parser = OneLineParser(
        prog="spectdenoise",
        description="Deep-learning denoising of low-count SPECT, simulation of low-count scans and metrics.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    parser.add_argument("--events", choices=["jsonl"],
                        help="report an error as the worker protocol's JSON line {\"event\": \"error\", \"message\", "
                             "\"exit_code\"} on stdout instead of a line on stderr (for programs that run spectdenoise "
                             "in the background, such as the Slicer module)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__package__}.commands.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code (see :mod:`SPECTDenoiseLib.errors`).

    SIGTERM and SIGINT cancel any command: exit code 130, outputs removed (see :func:`errors.cancellable`).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with cancellable():
            code = int(args.func(args) or 0)
            sys.stdout.flush()  # a reader that stopped early (``| head``) shows here, not when Python exits
            return code
    except BrokenPipeError:  # the reader of stdout stopped early: nothing is wrong, stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python flushes stdout again at exit
        return 0
    except KeyboardInterrupt:  # CancelledError (SIGTERM, SIGINT) is a KeyboardInterrupt
        return report_error(args, "Cancelled.", CancelledError.exit_code)
    except Exception as error:  # noqa: BLE001 - user errors, out of memory, and bugs: one line each
        if args.debug:
            traceback.print_exc()
        known = error if isinstance(error, SPECTDenoiseError) else as_memory_error(error)
        if known is not None:
            return report_error(args, str(known), known.exit_code)
        return report_error(args, f"{type(error).__name__}: {error} (run with --debug for details)", 1, internal=True)


def report_error(args: argparse.Namespace, message: str, exit_code: int, internal: bool = False) -> int:
    """Report one error and return ``exit_code``: ``spectdenoise: error: MESSAGE`` (``internal error`` for a bug)
    on stderr, or with ``--events jsonl`` the worker protocol's ``error`` event on stdout."""
    if args.events == "jsonl":
        from .worker import emit_json_line

        emit_json_line({"event": "error", "message": f"Internal error: {message}" if internal else message,
                        "exit_code": exit_code})
    else:
        print(f"spectdenoise: {'internal error' if internal else 'error'}: {message}", file=sys.stderr)
    return exit_code
