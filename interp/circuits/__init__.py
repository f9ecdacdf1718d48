"""Circuits: how heads work together.

- :mod:`interp.circuits.composition` -- Q/K/V-composition scores between heads of earlier and
  later layers (Elhage et al. 2021), computed from the weights alone.
- :mod:`interp.circuits.ablation` -- zero / mean ablation of heads and its effect on a loss.
"""
from interp.circuits.ablation import (ablate_heads, first_half_loss, head_ablation_effects,
                                      repeated_half_loss)
from interp.circuits.composition import composition_scores

__all__ = ["ablate_heads", "first_half_loss", "composition_scores", "head_ablation_effects", "repeated_half_loss"]
