"""``spectdenoise models list | info ID | download ID[@REVISION]``: the catalogue, the cache and the Hub."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``models`` parser with its ``list``, ``info`` and ``download`` actions."""
    parser = subparsers.add_parser(
        "models", help="list, describe and download denoising models",
        description="Models are catalogue names (Resources/Models.json), local model folders, or Hugging Face "
                    "repos org/name[@revision], kept in the standard Hugging Face cache.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="catalogue models and hub models in the cache")
    info = actions.add_parser("info", help="a model's config and model card (downloads it if needed)")
    info.add_argument("model", metavar="ID", help="catalogue name, folder, or org/name[@revision]")
    download = actions.add_parser("download", help="download a model into the Hugging Face cache")
    download.add_argument("model", metavar="ID[@REVISION]", help="catalogue name or org/name[@revision]")
    for action in (listing, info, download):
        action.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(func=run)


def diffusion_defaults(config: dict[str, Any]) -> str | None:
    """``"4 samples and 10 DDIM steps"``: the sampling defaults of a diffusion model's config dict, else None."""
    diffusion = config.get("diffusion") if config.get("kind") == "diffusion" else None
    if not isinstance(diffusion, dict):
        return None
    return f"{diffusion.get('default_samples')} samples and {diffusion.get('default_steps')} DDIM steps"


def run(args: argparse.Namespace) -> int:
    """Print the model list, one model's description, or the folder a model was downloaded to."""
    from .. import hub

    if args.action == "list":
        rows = hub.list_models()
        if args.json:
            print(json.dumps(rows, indent=2))
        elif not rows:
            print("No models installed or cached; download one with: spectdenoise models download org/name")
        for row in rows if not args.json else ():
            state = "available" if row["available"] else "not downloaded"
            flags = ("default, " if row["default"] else "") + state
            print(f"{row['id']}  [{row['source']}; {flags}]  {row['description']}".rstrip())
    elif args.action == "info":
        info = hub.model_info(args.model)
        if args.json:
            print(json.dumps(info, indent=2))
        else:
            config = info["config"]
            defaults = diffusion_defaults(config)
            print(f"{info['id']}: {config['architecture']} ({config['kind']}), inputs {config['input_channels']}, "
                  f"{config['sampling']}\nfolder: {info['folder']}"
                  + (f"\ndiffusion: {defaults} by default (--samples, --steps); "
                     f"{config['diffusion']['train_timesteps']} training steps, {config['diffusion']['schedule']} "
                     "schedule" if defaults else "")
                  + f"\n\n{info['card']}".rstrip())
    else:
        folder = hub.download_model(args.model)
        print(json.dumps({"id": args.model, "folder": str(folder)}) if args.json else folder)
    return 0
