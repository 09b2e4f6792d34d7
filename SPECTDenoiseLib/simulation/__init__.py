"""SPECT simulation parts: collimator presets, μ-maps, projector, counting statistics and OSEM.

The high-level entry points (``simulate_pair``, ``simulate_low_count``) live in :mod:`SPECTDenoiseLib.simulate`.
"""

from .collimators import PRESETS, Collimator, get_collimator
from .counts import poisson_counts, scatter_projections, thin_counts
from .fbp import chang_factors, filtered_backprojection
from .mumap import hu_to_mu, water_body_mu
from .osem import OSEM, cylinder_mask
from .projector import SPECTProjector

__all__ = [
    "OSEM",
    "PRESETS",
    "Collimator",
    "SPECTProjector",
    "chang_factors",
    "cylinder_mask",
    "filtered_backprojection",
    "get_collimator",
    "hu_to_mu",
    "poisson_counts",
    "scatter_projections",
    "thin_counts",
    "water_body_mu",
]
