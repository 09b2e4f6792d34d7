"""``spectdenoise train --config FILE`` and ``spectdenoise finetune --model ID --data DIR -o OUT``.

Both run in this process or under ``torchrun --nproc_per_node N -m SPECTDenoiseLib train ...``
(DistributedDataParallel).
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` and ``finetune`` sub-commands."""
    train = subparsers.add_parser(
        "train", help="train a model from a JSON settings file",
        description="Train a model from a JSON settings file (model config, data folders, output package, run "
        "folder, patch, batch size, steps, learning rate, loss weights, seed; see benchmarks/training/ for the "
        "shipped models' files and SPECTDenoiseLib.train.settings for every key). Checkpoints go to the run "
        "folder, an interrupted run resumes from it, and the output is a model package with its model card. "
        "Several processes or GPUs: torchrun --nproc_per_node N -m SPECTDenoiseLib train --config FILE.",
    )
    train.add_argument("--config", required=True, metavar="SETTINGS.json",
                       help="training settings JSON; relative paths in it are relative to the file")
    train.set_defaults(func=run_train)

    finetune = subparsers.add_parser(
        "finetune", help="fine-tune a model on your own paired low-/full-count scans (transfer learning)",
        description="Fine-tune a model package on your own pairs (transfer learning) and write a new package with "
        "its model card. Each case is a folder <case>/ holding low*.nii.gz (one or more low-count scans), "
        "full.nii.gz (the full-count scan on the same grid) and optionally ct.* (needed by CT models) and mask.* "
        "(lesions, for --lesion-weight); .nrrd and .mha files work too.",
    )
    finetune.add_argument("--model", required=True, help="starting model: catalogue id, folder or org/name[@rev]")
    finetune.add_argument("--data", required=True, nargs="+", metavar="DIR",
                          help="folders of pairs: <case>/low*.nii.gz + <case>/full.nii.gz [+ ct.*, mask.*]")
    finetune.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for the fine-tuned model package")
    finetune.add_argument("--steps", type=int, default=300, help="optimisation steps (default: 300)")
    finetune.add_argument("--learning-rate", type=float, default=1e-4, help="peak learning rate (default: 1e-4)")
    finetune.add_argument("--batch-size", type=int, default=8, help="patches per step (default: 8)")
    finetune.add_argument("--validation-cases", type=int, default=1,
                          help="cases held out for validation; the best validated weights are kept (default: 1)")
    finetune.add_argument("--lesion-weight", type=float, default=0.0,
                          help="lesion attention β: extra loss weight inside mask.* (default: 0, off)")
    finetune.add_argument("--seed", type=int, default=1, help="seed of patch sampling and initialisation (default: 1)")
    finetune.add_argument("--run-dir", metavar="DIR",
                          help="checkpoints (default: OUTPUT.run); an existing run is resumed")
    finetune.set_defaults(func=run_finetune)


def run_train(args: argparse.Namespace) -> int:
    """Train from a settings file."""
    from ..train.loop import train
    from ..train.settings import TrainSettings

    train(TrainSettings.load(args.config))
    return 0


def run_finetune(args: argparse.Namespace) -> int:
    """Fine-tune a model package on the user's pairs and write a new package."""
    from ..errors import InputError
    from ..hub import load_model
    from ..train.loop import train
    from ..train.settings import TrainSettings

    if args.steps < 1:
        raise InputError("--steps must be at least 1.")
    start = load_model(args.model)
    config = start.config
    patch = list(config.patch_size) if config.sampling == "patches" else [64, 64]
    settings = TrainSettings(
        model=config.to_dict(),
        data=list(args.data),
        output=args.output,
        run_dir=args.run_dir or f"{args.output.rstrip('/')}.run",
        patch=patch,
        batch_size=args.batch_size,
        steps=args.steps,
        learning_rate=args.learning_rate,
        lesion_weight=args.lesion_weight,
        validation_cases=args.validation_cases,
        validate_every=max(1, min(50, args.steps)),
        seed=args.seed,
        name=f"{start.name} fine-tuned",
        description=f"{config.description} Fine-tuned from '{start.name}' on user data.",
        initial_weights=args.model,
    )
    train(settings)
    return 0
