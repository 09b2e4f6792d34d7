"""``spectdenoise dataset -o DIR --n N``: paired low/full-count training cases from simulated phantoms."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``dataset`` sub-command."""
    parser = subparsers.add_parser(
        "dataset", help="generate paired low-/full-count training data from phantoms (resumable)",
        description="Write N simulated cases (all phantom families and collimators, several count fractions each) "
        "with DIR/manifest.json. Re-running with the same seed skips finished cases.",
    )
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="dataset folder (created if missing)")
    parser.add_argument("--n", type=int, required=True, metavar="N", help="number of cases")
    parser.add_argument("--seed", type=int, default=0, help="run seed (case i uses seed S·1000000 + i; default 0)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--families", nargs="+", metavar="FAMILY",
                        help="only these phantom families (e.g. iec); default: all, in their usual shares")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Generate the cases, printing one line per case."""
    import torch

    from ..dataset import family_plans, generate_dataset

    torch.set_num_threads(max(1, args.threads))

    def report(done: int, total: int, case_id: str, skipped: bool) -> None:
        print(f"{done}/{total} {case_id} {'already done' if skipped else 'written'}", flush=True)

    plans = family_plans(args.families) if args.families else None
    generate_dataset(args.output, args.n, seed=args.seed, progress=report, plans=plans)
    return 0
