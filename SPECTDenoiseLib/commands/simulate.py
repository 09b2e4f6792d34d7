"""``spectdenoise simulate INPUT -o OUTPUT --fraction F``: a low-count version of a full-count SPECT scan."""

from __future__ import annotations

import argparse

STAGES = {"projecting": "counts through the collimator and attenuation",
          "reconstructing": "OSEM of the full-count and low-count data"}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``simulate`` sub-command."""
    parser = subparsers.add_parser(
        "simulate", help="simulate a low-count scan from a full-count one (projection, thinning, OSEM)",
        description="Take INPUT as the activity of a full-count scan: project it (attenuation from --ct, or a water "
        "body outlined on INPUT), draw Poisson counts, thin them binomially to fraction F, reconstruct with OSEM "
        "and write the low-count image in INPUT's units and geometry. --full-output writes the full-count data "
        "reconstructed with the same settings, so low and full compare like with like.",
    )
    parser.add_argument("input", metavar="INPUT",
                        help="full-count SPECT volume (file or DICOM folder), or a DICOM NM TOMO projection file: "
                        "its measured counts are thinned and reconstructed (--counts, --angles, --scatter unused)")
    parser.add_argument("-o", "--output", required=True, metavar="OUTPUT", help="low-count volume to write")
    parser.add_argument("--fraction", type=float, required=True, metavar="F", help="count fraction in (0, 1], e.g. 0.1")
    parser.add_argument("--seed", type=int, default=0, help="seed of the Poisson and thinning draws (default 0)")
    parser.add_argument("--ct", metavar="CT", help="CT in HU on any grid overlapping INPUT (for the μ-map)")
    parser.add_argument("--counts", type=float, default=3e6, metavar="N",
                        help="total counts of the full-count acquisition (default 3e6)")
    parser.add_argument("--collimator", default="Tc99m-LEHR", metavar="P",
                        help="Tc99m-LEHR (default), I123-LEHR, I123-LEGP, Lu177-MEGP or Tc99m-uSPECT")
    parser.add_argument("--iterations", type=int, default=4, help="OSEM iterations (default 4)")
    parser.add_argument("--subsets", type=int, default=8, help="OSEM subsets (default 8)")
    parser.add_argument("--angles", type=int, default=120, help="camera views over 360° (default 120)")
    parser.add_argument("--scatter", action="store_true", help="add a scatter component (the preset's fraction)")
    parser.add_argument("--energy-window", type=int, metavar="N",
                        help="for NM projection files with several energy windows: the window to use (1-based; "
                        "1 is usually the photopeak)")
    parser.add_argument("--full-output", metavar="PATH", help="also write the re-reconstructed full-count volume")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on a busy machine more threads run slower)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Read INPUT (and CT), simulate and write the outputs."""
    import torch

    from ..io import check_distinct_files, read_volume, write_volume
    from ..projections import is_nm_file
    from ..simulate import check_fraction, simulate_low_count, simulate_low_count_projections
    from ..simulation import get_collimator
    from .denoise import HumanProgress

    line = HumanProgress()

    def progress(fraction: float, stage: str) -> None:
        line({"event": "progress", "fraction": fraction, "stage": stage, "message": STAGES.get(stage, "in progress")})

    check_fraction(args.fraction)
    get_collimator(args.collimator)
    torch.set_num_threads(max(1, args.threads))
    check_distinct_files({"input": args.input, "CT": args.ct}, {"low-count": args.output, "full-count": args.full_output})
    ct = read_volume(args.ct) if args.ct else None
    if is_nm_file(args.input):
        low, full = simulate_low_count_projections(args.input, args.fraction, ct=ct, collimator=args.collimator,
                                                   seed=args.seed, energy_window=args.energy_window,
                                                   iterations=args.iterations, subsets=args.subsets,
                                                   progress=progress)
        source = "the measured counts"
    else:
        low, full = simulate_low_count(read_volume(args.input), args.fraction, ct=ct, total_counts=args.counts,
                                       collimator=args.collimator, seed=args.seed, iterations=args.iterations,
                                       subsets=args.subsets, angles=args.angles, scatter=args.scatter,
                                       progress=progress)
        source = f"{args.counts:g} counts"
    line.end_line()
    write_volume(low, args.output)
    if args.full_output:
        write_volume(full, args.full_output)
    print(f"wrote {args.output} ({args.fraction:g} of {source})")
    return 0
