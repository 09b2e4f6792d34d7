"""``spectdenoise models list | info | download | push | search | card``: the catalogue, the cache and the Hub."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import InputError
from ..hub import PROJECT_TAG


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
    push = actions.add_parser("push", help="upload a model package to a Hugging Face Hub repo; prints the commit",
                              description="Upload config.json, model.safetensors and README.md of a model "
                                          "package in one commit (the repo and branch are created if needed); the "
                                          "token is read from the environment. Prints the commit id to pin.")
    push.add_argument("folder", metavar="FOLDER", help="the model package folder")
    push.add_argument("repo_id", metavar="ORG/NAME", help="the Hub repo to upload to")
    push.add_argument("--revision", default="main", metavar="BRANCH", help="branch to commit to (default: main)")
    push.add_argument("--private", action="store_true", help="create the repo as private (if it is new)")
    push.add_argument("--token-env", default="HF_TOKEN", metavar="VAR",
                      help="environment variable holding a Hub write token (default: HF_TOKEN)")
    search = actions.add_parser("search", help="find SPECTDenoise models on the Hugging Face Hub",
                                description=f"List Hub models tagged '{PROJECT_TAG}' (and every --tag), newest "
                                            "first, with the commit to pin.")
    search.add_argument("text", nargs="?", metavar="TEXT", help="part of the repo id")
    search.add_argument("--tag", action="append", default=[],
                        help="also require this tag (repeatable), e.g. tc-99m")
    search.add_argument("--limit", type=int, default=50, help="at most this many models (default: 50)")
    card = actions.add_parser("card", help="write a package's Hub metadata into its model card",
                              description="Rewrite the YAML metadata of FOLDER/README.md (licence, library, tags, "
                                          "training data, model-index of benchmark results) from its config.json, "
                                          "its '- Data:' line and the benchmark results; the Markdown is kept, "
                                          "but for a diffusion model its '- Outputs:' line and the '- Variance' "
                                          "lines after it (meaning, measured coverage) are rewritten.")
    card.add_argument("folder", metavar="FOLDER", help="the model package folder")
    card.add_argument("--results", default=None, metavar="DIR",
                      help="folder of benchmark results, summary_*.json (older: quality*.json) (default: "
                           "benchmarks/results)")
    for action in (listing, info, download, push, search, card):
        action.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(func=run)


def metadata_summary(metadata: dict[str, Any]) -> str:
    """One line per Hub fact of a card's metadata: licence, tags, training data and benchmark results."""
    if not metadata:
        return "hub metadata: none (add it with: spectdenoise models card FOLDER)"
    lines = [(f"hub metadata: licence {metadata.get('license')}, library {metadata.get('library_name')}, "
              f"tags {', '.join(metadata.get('tags') or [])}"),
             f"training data: {metadata.get('training_data', 'unspecified')}"]
    for entry in metadata.get("model-index") or []:
        for result in entry.get("results", []):
            scores = ", ".join(f"{m.get('type')} {m.get('value')}" for m in result.get("metrics", []))
            lines.append(f"benchmark: {result.get('dataset', {}).get('name')}: {scores}")
    return "\n".join(lines)


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
                  + f"\n{metadata_summary(info['metadata'])}"
                  + f"\n\n{info['card']}".rstrip())
    elif args.action == "push":
        pushed = hub.push_model(args.folder, args.repo_id, revision=args.revision, private=args.private,
                                token_env=args.token_env)
        print(json.dumps(pushed) if args.json else
              f"Pushed to {pushed['repo_id']} ({pushed['revision']}), commit {pushed['commit']}.\n"
              f"Pin it: --model {pushed['pin']}")
    elif args.action == "search":
        if args.limit < 1:
            raise InputError("--limit must be 1 or more.")
        found = hub.search_models(args.text, args.tag, args.limit)
        if args.json:
            print(json.dumps(found, indent=2))
        elif not found:
            print(f"No models tagged '{PROJECT_TAG}'" + (f" and {', '.join(args.tag)}" if args.tag else "")
                  + (f" matching '{args.text}'" if args.text else "") + " on the Hub.")
        for row in found if not args.json else ():
            print(f"{row['pin']}  [{row['kind'] or '?'}; inputs {', '.join(row['inputs'] or ['?'])}; tracers "
                  f"{', '.join(row['tracers'] or ['?'])}; updated {(row['last_modified'] or '?')[:10]}]")
    elif args.action == "card":
        from pathlib import Path

        from ..train.card import BENCHMARK_RESULTS, refresh_card

        path = refresh_card(args.folder, Path(args.results) if args.results else BENCHMARK_RESULTS)
        print(json.dumps({"card": str(path)}) if args.json else path)
    else:
        folder = hub.download_model(args.model)
        print(json.dumps({"id": args.model, "folder": str(folder)}) if args.json else folder)
    return 0
