"""Circuits: how heads work together.

- :mod:`~interp.circuits.composition` -- Q/K/V-composition scores between heads of earlier and
  later layers (Elhage et al. 2021), computed from the weights alone.
- :mod:`~interp.circuits.ablation` -- zero / mean ablation of heads and its effect on a loss.
- :mod:`~interp.circuits.tasks` -- clean/corrupted prompt pairs (induction, key-value
  retrieval) and the patching direction.
- :mod:`~interp.circuits.standard_tasks` -- the literature's tasks: IOI (Wang et al. 2022) and
  greater-than (Hanna et al. 2023), word lists filtered per tokenizer; a check that the model
  does the task (``require_task_works``); :mod:`~interp.circuits.docstring` -- the docstring
  task (Heimersheim & Janiak 2023).
- :mod:`~interp.circuits.metrics` -- logit difference, log-probability and probability
  metrics; normalisation to 0 = corrupted, 1 = clean.
- :mod:`~interp.circuits.model` -- the model plumbing every tool shares (a head's write, its
  q/k/v from the residual stream, block wiring), checked against real forwards; the only
  module here that reads what a model family does.
- :mod:`~interp.circuits.activation` -- activation patching (residual x position; heads by
  ``z`` / ``q`` / ``k`` / ``v`` / ``pattern``, over all positions or one row per position).
- :mod:`~interp.circuits.positions` -- patching single attention-pattern entries
  (``patch_pattern``: (dest, src) pairs).
- :mod:`~interp.circuits.path` -- path patching (sender -> receiver q/k/v).
- :mod:`~interp.circuits.graph` -- the head-level computational graph (senders, receivers,
  edges).
- :mod:`~interp.circuits.runner` -- a runner that evaluates any sub-circuit of the graph
  (everything outside it held at its corrupted value or its mean).
- :mod:`~interp.circuits.attribution` -- attribution patching for nodes and edges (EAP and
  EAP-IG).
- :mod:`~interp.circuits.integrated` -- integrated gradients along the corrupted -> clean path
  (on the input embeddings or on the activations) behind ``method="eap-ig"``.
- :mod:`~interp.circuits.discovery` -- ACDC / EAP / node-level (``head_circuit``) circuit
  discovery, circuit figures.
- :mod:`~interp.circuits.evaluation` -- comparing discovery methods: per-edge rankings with
  their time (``edge_rankings``), ROC AUC against a known circuit (``ground_truth_auc``,
  ``toy_induction_truth``), faithfulness curves from real circuit forwards and the smallest
  circuit reaching 80% (``faithfulness_curve``, ``smallest_faithful``), top-k agreement.
"""
from interp.circuits.ablation import (ablate_heads, first_half_loss, head_ablation_effects,
                                      repeated_half_loss)
from interp.circuits.activation import patch_heads, patch_residual
from interp.circuits.attribution import (attribution_cache, edge_attribution, node_attribution,
                                         spearman)
from interp.circuits.composition import composition_scores
from interp.circuits.discovery import (Circuit, acdc, circuit_figure, eap_circuit, head_circuit,
                                       node_mask, prune)
from interp.circuits.evaluation import (RANKING_METHODS, EdgeRanking, compare_methods,
                                        edge_rankings, faithfulness_curve, ground_truth_auc,
                                        log_counts, method_agreement, smallest_faithful,
                                        toy_induction_heads, toy_induction_truth)
from interp.circuits.graph import HeadGraph
from interp.circuits.integrated import METHODS, check_method, ig_attribution, input_attribution
from interp.circuits.metrics import (baseline, logit_diff_metric, logprob_metric, normalise,
                                     prob_metric)
from interp.circuits.model import forward_from
from interp.circuits.path import path_patch
from interp.circuits.positions import COMPONENTS, patch_pattern
from interp.circuits.runner import CircuitRunner, run_circuit
from interp.circuits.docstring import docstring_task
from interp.circuits.standard_tasks import (greater_than_task, ioi_task, require_task_works,
                                          task_baseline)
from interp.circuits.tasks import PatchingTask, induction_task, kv_retrieval_task

__all__ = [
    "COMPONENTS", "METHODS", "check_method", "forward_from", "ig_attribution",
    "input_attribution", "patch_pattern",
    "Circuit", "CircuitRunner", "HeadGraph", "PatchingTask", "ablate_heads", "acdc",
    "attribution_cache", "baseline", "circuit_figure", "composition_scores", "eap_circuit",
    "docstring_task", "edge_attribution", "first_half_loss", "greater_than_task",
    "head_ablation_effects",
    "head_circuit", "ioi_task", "require_task_works", "task_baseline",
    "induction_task", "kv_retrieval_task", "logit_diff_metric", "logprob_metric",
    "node_attribution", "node_mask", "normalise",
    "patch_heads", "patch_residual", "path_patch", "prob_metric", "prune", "repeated_half_loss",
    "run_circuit", "spearman",
    "RANKING_METHODS", "EdgeRanking", "compare_methods", "edge_rankings", "faithfulness_curve",
    "ground_truth_auc", "log_counts", "method_agreement", "smallest_faithful",
    "toy_induction_heads", "toy_induction_truth",
]
