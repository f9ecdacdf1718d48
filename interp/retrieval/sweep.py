"""Recall against width and state size, for every attention implementation (Zoology-style).

Architecture
------------
- :class:`RetrievalSweepConfig` (strict; loaded from TOML with :func:`load_retrieval_config`)
  names the task (vocab, seq_len, power_a, several ``num_kv_pairs``), the model shape
  (several ``d_models``), the training settings and the implementations.
- Implementations are built from the registry, never listed in code: with ``registry = true``
  every name in ``interp.attention.names()`` is one implementation, except ``linear``, which is
  one implementation per feature map in ``interp.attention.feature_maps()`` (label
  ``linear_<map>``), and except names that compute another name's math exactly
  (``same_math_as``, e.g. ``softmax_rows``). ``exclude`` drops labels, ``options`` adds keyword options per label (or
  per registry name, e.g. ``linear = {form = "parallel"}``), and ``hybrids`` adds mixtures such
  as Based (linear attention with the Taylor map + a sliding window, summed).
- Devices: ``device`` / ``dtype`` (:class:`interp.config.DeviceConfig`) say where models and
  batches live and the compute dtype; a point's hash includes ``dtype`` when it is not float32
  (lower precision is another result) but never ``device`` (a sweep may resume elsewhere).
- :func:`retrieval_sweep` (a library function: it returns :class:`RetrievalTables` and writes
  nothing but sweep points) trains one model per (implementation, d_model, num_kv_pairs)
  with :func:`interp.retrieval.train.train_mqar`, measures the attention bottleneck of each
  trained model (:mod:`interp.probes.retrieval`), and records each finished point through
  the :class:`interp.results.Sweep` it is given, so a rerun skips finished points. A point's
  parameters hold a hash of everything that determines its result (``setup``, the start of
  its :func:`interp.hashing.content_hash`): change the config and the point is trained
  again. :func:`run_retrieval_sweep` is the same, resumable in a folder (``points.jsonl``
  only). This library imports nothing of the experiment runner (:mod:`interp.experiments`);
  the kind calls it.
- The ``retrieval_sweep`` experiment kind (:mod:`interp.experiment_kinds.retrieval`) is the
  only writer of a run folder: ``run.json``, ``retrieval.csv`` (one row per model),
  ``bottleneck_vs_error.csv`` (correlation of retrieval error with the bottleneck measures),
  ``figures/accuracy_vs_state.html``, ``figures/accuracy_vs_width.html`` and ``report.html``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import pandas as pd
import torch
from tqdm.auto import tqdm

from interp import attention
from interp.config import ConfigError, DeviceConfig, from_dict, read_experiment
from interp.hashing import content_hash
from interp.probes.retrieval import (
    attention_bottleneck, relate_retrieval_error, summarize_bottleneck,
)
from interp.results import Sweep, interp_version
from interp.retrieval import train as _train
from interp.retrieval.model import MixerSpec, RetrievalModelConfig
from interp.retrieval.train import TrainConfig, mqar_test_set
from interp.tasks import MQARConfig

EXPERIMENT_KIND = "retrieval_sweep"


@dataclass(frozen=True)
class HybridSpec:
    """A mixture of registered implementations, e.g. Based = linear (taylor) + sliding window.

    Attributes:
        label: name in tables and plots.
        mixers: the implementations.
        combine: ``"sum"`` (all in every layer, outputs added) or ``"alternate"`` (by layer).
    """

    label: str
    mixers: list[MixerSpec]
    combine: Literal["sum", "alternate"] = "sum"


def based_hybrid(feature_dim: int = 16, window: int = 16) -> HybridSpec:
    """Based (Arora et al. 2024): linear attention with the 2nd-order Taylor map (a learnable
    ``feature_dim`` projection) plus a sliding window, summed in every layer."""
    return HybridSpec("based", [
        MixerSpec("linear", {"feature_map": "taylor", "feature_dim": feature_dim}),
        MixerSpec("sliding_window", {"window": window}),
    ])


@dataclass(frozen=True)
class QuickOverrides:
    """Settings replaced by the quick variant (``run_retrieval_sweep(..., quick=True)``);
    None keeps the full sweep's value.

    Attributes:
        vocab_size, seq_len, num_kv_pairs, d_models: task and width grid.
        steps, schedule, batch_size, test_size: training.
        include: labels to keep (None = all of the full sweep's implementations).

    The defaults fit in about a minute on a quiet 2-core machine.
    """

    vocab_size: Optional[int] = 64
    seq_len: Optional[int] = 32
    num_kv_pairs: Optional[list[int]] = field(default_factory=lambda: [4])
    d_models: Optional[list[int]] = field(default_factory=lambda: [64])
    steps: Optional[int] = 300
    schedule: Optional[Literal["cosine", "constant"]] = None
    batch_size: Optional[int] = None
    test_size: Optional[int] = 256
    include: Optional[list[str]] = field(
        default_factory=lambda: ["softmax", "linear_elu", "sliding_window", "based"])


@dataclass(frozen=True)
class RetrievalSweepConfig(DeviceConfig):
    """MQAR recall sweep over implementations x widths x numbers of key-value pairs.

    Attributes:
        vocab_size, seq_len, power_a: the MQAR task (:class:`interp.tasks.MQARConfig`).
        num_kv_pairs: key-value pairs per row; one model per value.
        d_models: model widths; one model per value.
        n_layers, n_heads, mlp_ratio, short_conv: model shape (:class:`RetrievalModelConfig`).
        registry: include every registered implementation (linear once per feature map).
        exclude: labels to leave out (``softmax``, ``linear_elu``, ``sliding_window``, ...).
        options: keyword options per label or per registry name (label wins).
        hybrids: mixtures of implementations (default: Based).
        train: optimisation settings.
        probe_samples: test rows used to measure the attention bottleneck.
        threads: torch CPU threads during the sweep (1 is fastest on a shared 2-core box).
        seed: model initialisation seed (data seeds are in ``train``).
        quick: the quick variant's overrides.
        device, dtype: where models and batches live, compute dtype (:class:`DeviceConfig`).
    """

    vocab_size: int = 128
    seq_len: int = 64
    power_a: float = 0.01
    num_kv_pairs: list[int] = field(default_factory=lambda: [4, 8])
    d_models: list[int] = field(default_factory=lambda: [32, 64])
    n_layers: int = 2
    n_heads: int = 1
    mlp_ratio: int = 4
    short_conv: int = 3
    registry: bool = True
    exclude: list[str] = field(default_factory=lambda: ["sink_window", "block_sparse"])
    options: dict[str, dict] = field(default_factory=lambda: {
        "linear": {"form": "parallel"},  # fastest form at these lengths; same function
        "linear_taylor": {"feature_dim": 16},  # Based's projection; 1 + 16 + 256 features
        "sliding_window": {"window": 16},
        "sink_window": {"window": 16},
        "block_sparse": {"block_size": 16},
    })
    hybrids: list[HybridSpec] = field(default_factory=lambda: [based_hybrid()])
    train: TrainConfig = field(default_factory=TrainConfig)
    probe_samples: int = 64
    threads: Optional[int] = 1
    seed: int = 0
    quick: QuickOverrides = field(default_factory=QuickOverrides)

    def __post_init__(self) -> None:
        if not self.num_kv_pairs or not self.d_models:
            raise ConfigError("num_kv_pairs and d_models must each list at least one value")
        for n in self.num_kv_pairs:  # raises a ValueError naming the problem
            MQARConfig(vocab_size=self.vocab_size, seq_len=self.seq_len, num_kv_pairs=n,
                       power_a=self.power_a)
        for d in self.d_models:
            if d < 1 or d % self.n_heads:
                raise ConfigError(f"d_model {d} must be a positive multiple of n_heads "
                                 f"({self.n_heads})")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1 or None, got {self.threads}")
        object.__setattr__(self, "hybrids", [
            h if isinstance(h, HybridSpec) else from_dict(HybridSpec, h) for h in self.hybrids])
        self.implementations()  # unknown labels in exclude / options fail at load time

    # -- implementations ------------------------------------------------------------------
    def implementations(self) -> dict[str, HybridSpec]:
        """``{label: HybridSpec}`` in sweep order, built from the registry and the config.

        Raises :class:`~interp.config.ConfigError` (a ``ValueError``) for an
        ``exclude``/``options`` label that names nothing.
        """
        out: dict[str, HybridSpec] = {}
        if self.registry:
            for name in attention.names():
                if attention.get_class(name).same_math_as:
                    continue                  # the same math as another name: nothing to learn
                if name == "linear":
                    for fm in attention.feature_maps():
                        label = f"linear_{fm}"
                        opts = {**self.options.get(name, {}), "feature_map": fm,
                                **self.options.get(label, {})}
                        out[label] = HybridSpec(label, [MixerSpec(name, opts)])
                else:
                    opts = {**self.options.get(name, {})}
                    out[name] = HybridSpec(name, [MixerSpec(name, opts)])
        for h in self.hybrids:
            if h.label in out:
                raise ConfigError(f"hybrid label {h.label!r} clashes with a registry label")
            out[h.label] = h
        known = set(out) | set(attention.names())
        for what, labels in (("exclude", self.exclude), ("options", self.options)):
            bad = sorted(set(labels) - known)
            if bad:
                raise ConfigError(f"{what} names unknown implementation(s) {bad}; valid: "
                                 f"{sorted(known)}")
        return {k: v for k, v in out.items() if k not in self.exclude}

    def model_config(self, impl: HybridSpec, d_model: int) -> RetrievalModelConfig:
        return RetrievalModelConfig(
            vocab_size=self.vocab_size, d_model=d_model, n_layers=self.n_layers,
            n_heads=self.n_heads, max_len=self.seq_len, mixers=list(impl.mixers),
            combine=impl.combine, mlp_ratio=self.mlp_ratio, short_conv=self.short_conv,
            seed=self.seed)

    def task(self, num_kv_pairs: int) -> MQARConfig:
        return MQARConfig(vocab_size=self.vocab_size, seq_len=self.seq_len,
                          num_kv_pairs=num_kv_pairs, power_a=self.power_a,
                          batch=self.train.batch_size)

    # -- the quick variant ----------------------------------------------------------------
    def quick_variant(self) -> "RetrievalSweepConfig":
        """This config with :class:`QuickOverrides` applied (and ``include`` turned into
        ``exclude``)."""
        q = self.quick
        top = {k: getattr(q, k) for k in ("vocab_size", "seq_len", "num_kv_pairs", "d_models")
               if getattr(q, k) is not None}
        tr = {k: getattr(q, k) for k in ("steps", "batch_size", "test_size", "schedule")
              if getattr(q, k) is not None}
        cfg = dataclasses.replace(self, train=dataclasses.replace(self.train, **tr), **top)
        if q.include is not None:
            labels = cfg.implementations()
            bad = sorted(set(q.include) - set(labels))
            if bad:
                raise ConfigError(f"quick.include names unknown implementation(s) {bad}; "
                                 f"valid: {sorted(labels)}")
            cfg = dataclasses.replace(
                cfg, exclude=list(cfg.exclude) + [lab for lab in labels if lab not in q.include])
        return cfg


def load_retrieval_config(path: str | Path) -> RetrievalSweepConfig:
    """Read an experiment TOML: ``kind = "retrieval_sweep"`` and a ``[config]`` table holding
    :class:`RetrievalSweepConfig` fields (the file's top level is checked by
    :func:`interp.config.read_experiment`, as the experiment runner checks it; unknown keys
    anywhere are a ``ConfigError``)."""

    def retrieval_kind(name: str) -> str:
        if name != EXPERIMENT_KIND:
            raise ConfigError(f"kind must be {EXPERIMENT_KIND!r}, got {name!r}")
        return name

    _, _, table, where = read_experiment(path, retrieval_kind, lambda: [EXPERIMENT_KIND])
    return from_dict(RetrievalSweepConfig, table, where=f"{where}: [config]")


def _hash(setup: dict[str, Any]) -> str:
    """The ``setup`` hash of a point: the first 12 characters of its
    :func:`~interp.hashing.content_hash`."""
    return content_hash(setup)[:12]


def sweep_points(cfg: RetrievalSweepConfig) -> list[dict[str, Any]]:
    """One point per (implementation, d_model, num_kv_pairs), with a hash of its full setup."""
    points = []
    for label, impl in cfg.implementations().items():
        for n in cfg.num_kv_pairs:
            for d in cfg.d_models:
                setup = {"model": cfg.model_config(impl, d), "task": cfg.task(n),
                         "train": cfg.train, "probe_samples": cfg.probe_samples}
                if cfg.dtype != "float32":   # float32 hashes stay those of older runs
                    setup["dtype"] = cfg.dtype
                points.append({"impl": label, "d_model": d, "num_kv_pairs": n,
                               "setup": _hash(setup)})
    return points


def run_point(cfg: RetrievalSweepConfig, point: dict[str, Any], impl: HybridSpec,
              progress: bool = False, device: str | torch.device | None = None,
              dtype: torch.dtype | str | None = None) -> dict[str, Any]:
    """Train and measure one model on ``device`` in ``dtype`` (default: the config's);
    returns the result fields of its table row."""
    if device is None or dtype is None:
        dev, dt = cfg.resolve_devices()
        device = dev if device is None else device
        dtype = dt if dtype is None else dtype
    task = cfg.task(point["num_kv_pairs"])
    model_cfg = cfg.model_config(impl, point["d_model"])
    res = _train.train_mqar(model_cfg, task, cfg.train, progress=progress,
                            desc=f"{point['impl']} d={point['d_model']} n={point['num_kv_pairs']}",
                            device=device, dtype=dtype)
    probe_inputs = mqar_test_set(task, cfg.train, device=device).inputs[: cfg.probe_samples]
    bottleneck = summarize_bottleneck(attention_bottleneck(res.model, probe_inputs))
    return {
        "accuracy": res.accuracy,
        "state_size": res.model.state_size(cfg.seq_len),
        "n_params": res.model.n_params(),
        "final_loss": float(res.history["loss"].iloc[-1]),
        "seconds": round(res.seconds, 2),
        "mixers": " + ".join(m.label() for m in impl.mixers),
        **bottleneck,
    }


@dataclass
class RetrievalTables:
    """What :func:`retrieval_sweep` returns.

    Attributes:
        table: one row per model: ``impl``, ``d_model``, ``num_kv_pairs``, ``setup``,
            ``accuracy``, ``state_size``, ``n_params``, ``final_loss``, ``seconds``,
            ``mixers``, ``eff_rank``, ``energy_rank``, ``row_entropy``, ``min_row_entropy``.
        bottleneck: correlation of retrieval error with the bottleneck measures per
            ``num_kv_pairs`` (:func:`interp.probes.retrieval.relate_retrieval_error`).
        config: the config that ran (the quick variant for ``quick=True``).
    """

    table: pd.DataFrame
    bottleneck: pd.DataFrame
    config: RetrievalSweepConfig


def retrieval_sweep(cfg: RetrievalSweepConfig, quick: bool = False, *, sweep: Sweep | None = None,
                    progress: bool = True, device: str | torch.device | None = None,
                    dtype: torch.dtype | str | None = None) -> RetrievalTables:
    """Run (or, through ``sweep``, resume) the sweep and return its tables. Writes nothing
    but the sweep's points (the ``retrieval_sweep`` experiment kind writes the tables,
    figures, run.json and report).

    Args:
        cfg: the sweep.
        quick: run :meth:`RetrievalSweepConfig.quick_variant` instead.
        sweep: a :class:`interp.results.Sweep` recording each finished point (finished
            points with the same resume key are skipped); None: compute every point, keep
            nothing.
        progress: tqdm bars (one for the sweep, one per training run).
        device, dtype: already resolved ``torch.device`` / ``torch.dtype`` (an experiment
            run passes its own); default: ``cfg.device`` / ``cfg.dtype`` resolved here
            (:class:`~interp.config.ConfigError` for a device this machine lacks).
    """
    run_cfg = cfg.quick_variant() if quick else cfg
    if device is None or dtype is None:
        dev, dt = run_cfg.resolve_devices()
        device = dev if device is None else device
        dtype = dt if dtype is None else dtype
    impls = run_cfg.implementations()
    points = sweep_points(run_cfg)
    todo = list(sweep.pending(points)) if sweep is not None else points
    rows = []
    old_threads = torch.get_num_threads()
    if run_cfg.threads:
        torch.set_num_threads(run_cfg.threads)
    try:
        bar = tqdm(todo, desc="retrieval sweep", disable=not progress)
        for point in bar:
            bar.set_postfix(impl=point["impl"], d=point["d_model"], n=point["num_kv_pairs"])
            result = run_point(run_cfg, point, impls[point["impl"]], progress, device=device,
                               dtype=dtype)
            if sweep is not None:
                sweep.record(point, result)
            rows.append({**point, **result})
    finally:
        torch.set_num_threads(old_threads)

    table = sweep.table() if sweep is not None else pd.DataFrame(rows)
    wanted = {p["setup"] for p in points}
    table = table[table["setup"].isin(wanted)].drop_duplicates("setup", keep="last")
    order = {p["setup"]: i for i, p in enumerate(points)}
    table = table.sort_values("setup", key=lambda s: s.map(order)).reset_index(drop=True)
    return RetrievalTables(table, relate_retrieval_error(table, by=["num_kv_pairs"]), run_cfg)


def run_retrieval_sweep(cfg: RetrievalSweepConfig, out_dir: str | Path, quick: bool = False,
                        *, progress: bool = True, device: str | torch.device | None = None,
                        dtype: torch.dtype | str | None = None) -> pd.DataFrame:
    """:func:`retrieval_sweep` resumable in ``out_dir``: finished points are kept in
    ``out_dir/points.jsonl`` (nothing else is written there; run the ``retrieval_sweep``
    experiment kind -- ``interp run experiments/retrieval_mqar.toml`` -- for tables,
    figures and a report). A point is skipped when a finished one has the same setup hash
    (everything that determines it, see :func:`sweep_points`) and interp version.

    Returns:
        :attr:`RetrievalTables.table`.
    """
    key = {"sweep": EXPERIMENT_KIND, "interp": interp_version()}
    return retrieval_sweep(cfg, quick, sweep=Sweep(out_dir, key=key), progress=progress,
                           device=device, dtype=dtype).table
