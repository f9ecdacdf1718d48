"""Circuits: how heads work together.

- :mod:`~interp.circuits.composition` -- Q/K/V-composition scores between heads of earlier and
  later layers (Elhage et al. 2021), computed from the weights alone.
- :mod:`~interp.circuits.ablation` -- zero / mean ablation of heads and its effect on a loss.
- :mod:`~interp.circuits.patching` -- clean/corrupted prompt pairs, metrics, activation
  patching (residual x position, heads) and path patching (sender -> receiver q/k/v).
- :mod:`~interp.circuits.graph` -- the head-level computational graph and a runner that
  evaluates any sub-circuit (everything outside it held at its corrupted value or its mean).
- :mod:`~interp.circuits.attribution` -- attribution patching for nodes and edges (EAP).
- :mod:`~interp.circuits.discovery` -- ACDC / EAP / node-level (``head_circuit``) circuit
  discovery, circuit figures.
- :mod:`~interp.circuits.toy` -- the trained toy induction model used for circuit finding.
"""
from interp.circuits.ablation import (ablate_heads, first_half_loss, head_ablation_effects,
                                      repeated_half_loss)
from interp.circuits.attribution import (attribution_cache, edge_attribution, node_attribution,
                                         spearman)
from interp.circuits.composition import composition_scores
from interp.circuits.discovery import (Circuit, acdc, circuit_figure, eap_circuit, head_circuit,
                                       node_mask, prune)
from interp.circuits.graph import CircuitRunner, HeadGraph, run_circuit
from interp.circuits.patching import (PatchingTask, baseline, induction_task, kv_retrieval_task,
                                      logit_diff_metric, logprob_metric, normalise, patch_heads,
                                      patch_residual, path_patch, prob_metric)

__all__ = [
    "Circuit", "CircuitRunner", "HeadGraph", "PatchingTask", "ablate_heads", "acdc",
    "attribution_cache", "baseline", "circuit_figure", "composition_scores", "eap_circuit",
    "edge_attribution", "first_half_loss", "head_ablation_effects", "head_circuit",
    "induction_task", "kv_retrieval_task", "logit_diff_metric", "logprob_metric",
    "node_attribution", "node_mask", "normalise",
    "patch_heads", "patch_residual", "path_patch", "prob_metric", "prune", "repeated_half_loss",
    "run_circuit", "spearman",
]
