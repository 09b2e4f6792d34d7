"""``spectdenoise phantom NAME -o DIR``: write a digital phantom (activity, CT, μ-map, labels) to a folder."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``phantom`` sub-command."""
    parser = subparsers.add_parser(
        "phantom", help="write a digital SPECT/CT phantom (iec, torso, brain, cardiac, mouse)",
        description="Write NAME_activity.nrrd, NAME_ct.nrrd (HU), NAME_mu.nrrd (1/mm at the family's photopeak), "
        "NAME_labels.nrrd and NAME_labels.json (label names) into DIR. The same seed gives the same phantom.",
    )
    parser.add_argument("name", metavar="NAME", help="phantom family: iec, torso, brain, cardiac or mouse")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder (created if missing)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the shape/contrast variation (default 0)")
    parser.add_argument("--voxel-mm", type=float, help="isotropic voxel size in mm (default per family)")
    parser.add_argument("--size", type=int, help="axial matrix size (default: fits the object)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the phantom and write its volumes."""
    from pathlib import Path

    from ..errors import OutputError
    from ..io import atomic_output, write_volume
    from ..phantoms import make_phantom, phantom_images

    phantom = make_phantom(args.name, seed=args.seed, voxel_mm=args.voxel_mm, size=args.size)
    folder = Path(args.output)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"Cannot create the output folder '{folder}': {error.strerror or error}.") from None
    for kind, image in phantom_images(phantom).items():
        write_volume(image, folder / f"{phantom.name}_{kind}.nrrd")
    with atomic_output(folder / f"{phantom.name}_labels.json") as temporary:
        temporary.write_text(json.dumps({
            "family": phantom.name, "seed": phantom.seed, "spacing_mm_zyx": phantom.spacing_mm,
            "collimator": phantom.collimator, "total_counts": phantom.total_counts,
            "label_names": {str(k): v for k, v in phantom.label_names.items()}, "details": phantom.details,
        }, indent=1))
    print(f"wrote {phantom.name} phantom {phantom.activity.shape[::-1]} voxels of {phantom.spacing_mm[0]:g} mm to {folder}")
    return 0
