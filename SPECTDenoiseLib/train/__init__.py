"""Training and fine-tuning of denoising models on paired low-/full-count volumes.

``data`` finds and samples training pairs, ``losses`` holds L1 + SSIM with lesion attention, ``checkpoint``
saves and resumes runs (safetensors only), ``loop`` trains (optionally under ``torchrun`` with
DistributedDataParallel) and exports a model package.
"""
