"""Networks, their registry and model packages.

``config`` (the ``config.json`` contract) imports nothing heavy; ``registry``, ``diffusion`` and ``package``
import torch and MONAI, so import them from the modules that need them.
"""
