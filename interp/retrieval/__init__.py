"""Exact retrieval (MQAR) with swappable attention mixers.

- :mod:`interp.retrieval.model`: :class:`RetrievalModel` (any registered implementation, or a
  hybrid such as Based, as its token mixer) and its state size.
- :mod:`interp.retrieval.train`: :func:`train_mqar` on CPU and :func:`evaluate`.
- :mod:`interp.retrieval.sweep`: :func:`retrieval_sweep` (returns :class:`RetrievalTables`)
  and :func:`run_retrieval_sweep` (the same, resumable in a folder), recall against width and
  state size for every implementation; :func:`load_retrieval_config` reads
  ``experiments/retrieval_*.toml``. ``interp run EXPERIMENT.toml [--out DIR] [--quick]``
  runs one as an experiment (tables, figures, report).
- :mod:`interp.retrieval.linearised`: :func:`linearised_study`, in-context key-value lookup
  and perplexity of a pretrained model with linear attention swapped in, per feature map.

The bottleneck measures (effective rank, row entropy of attention maps) live in
:mod:`interp.probes.retrieval`.
"""
from interp.retrieval.linearised import (
    kv_lookup_accuracy, layer_set, linearised_study, perplexity, text_windows,
)
from interp.retrieval.model import (
    AttentionMixer, MixerSpec, RetrievalModel, RetrievalModelConfig,
)
from interp.retrieval.sweep import (
    HybridSpec, QuickOverrides, RetrievalSweepConfig, RetrievalTables, based_hybrid,
    load_retrieval_config, retrieval_sweep, run_retrieval_sweep, sweep_points,
)
from interp.retrieval.train import TrainConfig, TrainResult, evaluate, train_mqar

__all__ = [
    "AttentionMixer", "MixerSpec", "RetrievalModel", "RetrievalModelConfig", "HybridSpec",
    "QuickOverrides", "RetrievalSweepConfig", "RetrievalTables", "based_hybrid",
    "load_retrieval_config", "retrieval_sweep", "run_retrieval_sweep", "sweep_points",
    "TrainConfig", "TrainResult", "evaluate",
    "train_mqar", "kv_lookup_accuracy", "layer_set", "linearised_study", "perplexity",
    "text_windows",
]
