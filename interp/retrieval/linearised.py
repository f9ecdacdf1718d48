"""Linearised pretrained models: what in-context lookup and perplexity survive when softmax
attention is replaced by linear attention with a feature map, with no retraining.

Architecture
------------
- :func:`kv_lookup_accuracy` scores a :class:`~interp.tasks.KVLookupBatch` (prompts
  ``"k1: v1, ..., kq:"``): top-1 accuracy of the answer token at the last position and its
  mean log-probability.
- :func:`perplexity` scores a 1-D token stream cut into equal windows (each led by BOS).
- :func:`layer_set` turns a layer-set name into layer indices. Named sets (``LAYER_SETS``):
  ``all``; ``first_half`` / ``second_half``; ``first_third`` / ``middle_third`` /
  ``last_third``; and ``layers:A-B`` (inclusive range) or ``layers:A,B,C`` for any other.
- :func:`linearised_study` runs the original model once (row ``feature_map = "softmax"``,
  ``layer_set = "none"``), then for each feature map (default: every registered one, from
  :func:`interp.attention.feature_maps`) and each layer set, swaps ``linear`` attention with
  that map into those layers (:func:`interp.swap.swap_attention`, a context manager that
  restores the model exactly) and measures both again. With a :class:`~interp.results.Sweep`
  finished points are skipped, so an interrupted study resumes.

The feature maps are used as the registry builds them (no fitting): ``elu``/``relu`` and
``cosformer`` are not approximations of ``exp(q.k / sqrt(d))`` at all; ``performer`` (64
random features) and ``taylor`` (2nd order) approximate it, the latter only for small scores;
``hedgehog`` is its untrained identity initialisation.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import pandas as pd
import torch
from torch import Tensor

from interp.errors import InputError
from interp.models.toy import token_losses
from interp.tasks.kv_lookup import KVLookupBatch, KVLookupConfig

#: Named layer subsets, ``name -> (n_layers -> layer indices)``.
LAYER_SETS: dict[str, Callable[[int], list[int]]] = {
    "all": lambda n: list(range(n)),
    "first_half": lambda n: list(range(n // 2)),
    "second_half": lambda n: list(range(n // 2, n)),
    "first_third": lambda n: list(range(n // 3)),
    "middle_third": lambda n: list(range(n // 3, 2 * n // 3)),
    "last_third": lambda n: list(range(2 * n // 3, n)),
}
ORIGINAL = ("softmax", "none")


def layer_set(name: str, n_layers: int) -> list[int]:
    """Layer indices (sorted, non-empty) named by ``name`` for an ``n_layers`` model.

    ``name`` is a key of :data:`LAYER_SETS`, ``"layers:A-B"`` (A..B inclusive) or
    ``"layers:A,B,..."``. Raises ``InputError`` for anything else or out-of-range layers.
    """
    if name in LAYER_SETS:
        layers = LAYER_SETS[name](n_layers)
    elif name.startswith("layers:"):
        spec = name[len("layers:"):]
        try:
            if "-" in spec:
                a, b = (int(x) for x in spec.split("-"))
                layers = list(range(a, b + 1))
            else:
                layers = sorted({int(x) for x in spec.split(",")})
        except ValueError:
            raise InputError(f"bad layer set {name!r}: write layers:A-B or layers:A,B,C") from None
    else:
        raise InputError(f"unknown layer set {name!r}; valid: {', '.join(LAYER_SETS)}, "
                         f"layers:A-B, layers:A,B,C")
    if not layers or not all(0 <= i < n_layers for i in layers):
        raise InputError(f"layer set {name!r} gives {layers}: needs layers in [0, {n_layers})")
    return layers


def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def kv_lookup_accuracy(model, prompts: KVLookupBatch, batch_size: int = 16) -> dict[str, float]:
    """Top-1 lookup accuracy and mean answer log-prob at the last position.

    Args:
        model: a hooked decoder (e.g. ``interp.load_model("smollm2-135m")``), possibly swapped.
        prompts: ``tokens [n, seq]`` and ``answers [n]`` (:meth:`KVLookupConfig.build`).
        batch_size: rows per forward pass.

    Returns:
        ``{"kv_accuracy": share of rows whose argmax logit at position seq-1 is the answer,
        "kv_logprob": mean log p(answer), "n_prompts": n}``.
    """
    hits, logps = [], []
    dev = _device(model)
    for i in range(0, prompts.tokens.shape[0], batch_size):
        tokens = prompts.tokens[i:i + batch_size].to(dev)            # [b, seq]
        answers = prompts.answers[i:i + batch_size].to(dev)          # [b]
        logp = model(tokens)[:, -1].float().log_softmax(-1)          # [b, vocab]
        hits.append(logp.argmax(-1) == answers)
        logps.append(logp.gather(1, answers[:, None])[:, 0])
    hit, logp = torch.cat(hits), torch.cat(logps)
    return {"kv_accuracy": hit.float().mean().item(), "kv_logprob": logp.mean().item(),
            "n_prompts": int(hit.numel())}


def text_windows(tokenizer, text: str, n_tokens: int, window: int) -> Tensor:
    """``LongTensor [n_tokens // window, window + 1]``: the first ``n_tokens`` tokens of
    ``text`` cut into equal windows, each led by the tokenizer's BOS (when it has one, else
    the windows are ``[.., window]``). Raises ``InputError`` if the text is too short."""
    if window < 2 or n_tokens < window:
        raise InputError(f"need window >= 2 and n_tokens >= window, got {window}, {n_tokens}")
    ids = tokenizer(text, add_special_tokens=False).input_ids
    n = (n_tokens // window) * window
    if len(ids) < n:
        raise InputError(f"the text has {len(ids)} tokens, fewer than n_tokens={n}")
    body = torch.tensor(ids[:n], dtype=torch.long).view(-1, window)  # [w, window]
    if tokenizer.bos_token_id is None:
        return body
    return torch.cat([torch.full((body.shape[0], 1), tokenizer.bos_token_id), body], 1)


@torch.no_grad()
def perplexity(model, windows: Tensor, batch_size: int = 4) -> float:
    """``exp(mean next-token NLL)`` over ``windows [w, n]`` (from :func:`text_windows`); every
    position after the first is scored (so the BOS column is context, never a target)."""
    total, count = 0.0, 0
    dev = _device(model)
    for i in range(0, windows.shape[0], batch_size):
        tokens = windows[i:i + batch_size].to(dev)                   # [b, n]
        nll = token_losses(model(tokens), tokens)                    # [b, n-1]
        total += nll.sum().item()
        count += nll.numel()
    return math.exp(total / count)


def _measure(model, prompts: KVLookupBatch, windows: Tensor) -> dict[str, float]:
    return {**kv_lookup_accuracy(model, prompts), "perplexity": perplexity(model, windows)}


def linearised_study(model, feature_maps: Sequence[str] | None = None,
                     layer_sets: Sequence[str] = ("all", "first_half", "second_half"),
                     prompts: KVLookupConfig = KVLookupConfig(), seed: int = 0,
                     text: str = "alice", ppl_tokens: int = 1024, ppl_window: int = 256,
                     form: str = "chunked", sweep=None, progress: bool = False) -> pd.DataFrame:
    """Key-value lookup and perplexity of ``model`` with each feature map swapped into each
    layer set, against the original.

    Args:
        model: hooked decoder with a tokenizer (``interp.load_model("smollm2-135m")``).
        feature_maps: linear-attention feature maps; None = every registered one.
        layer_sets: names for :func:`layer_set`.
        prompts: the lookup prompts (:class:`KVLookupConfig`, built with ``seed``).
        text, ppl_tokens, ppl_window: perplexity text (:func:`interp.data.texts.load_text`),
            tokens scored, window length.
        form: linear-attention form (``chunked``, ``parallel``; same numbers).
        sweep: optional :class:`interp.results.Sweep`; finished points are skipped.
        progress: show a tqdm bar.

    Returns:
        One row per point: ``feature_map`` (``softmax`` for the original), ``layer_set``
        (``none`` for the original), ``layers`` (e.g. ``"0-14"``), ``n_swapped``,
        ``kv_accuracy``, ``kv_logprob``, ``n_prompts``, ``perplexity``, ``accuracy_ratio``
        (to the original's accuracy) and ``ppl_ratio`` (to the original's perplexity).
    """
    from interp import attention
    from interp.data.texts import load_text
    from interp.results import Sweep
    from interp.swap import swap_attention

    maps = list(attention.feature_maps() if feature_maps is None else feature_maps)
    unknown = sorted(set(maps) - set(attention.feature_maps()))
    if unknown:
        raise InputError(f"unknown feature map(s) {unknown}; valid: {attention.feature_maps()}")
    n_layers = model.cfg.n_layers
    sets = {name: layer_set(name, n_layers) for name in layer_sets}
    batch = prompts.build(model.tokenizer, seed)
    windows = text_windows(model.tokenizer, load_text(text), ppl_tokens, ppl_window)
    points = [dict(zip(("feature_map", "layer_set"), ORIGINAL))]
    points += [{"feature_map": fm, "layer_set": ls} for fm in maps for ls in sets]
    sweep = sweep if sweep is not None else _MemorySweep()
    todo = list(sweep.pending(points))
    if progress:
        from tqdm.auto import tqdm

        todo = tqdm(todo, desc="linearised")
    for point in todo:
        if (point["feature_map"], point["layer_set"]) == ORIGINAL:
            row = _measure(model, batch, windows)
        else:
            layers = sets[point["layer_set"]]
            with swap_attention(model, "linear", layers=layers, feature_map=point["feature_map"],
                                form=form):
                row = _measure(model, batch, windows)
        sweep.record(point, row)
    table = sweep.table()
    if isinstance(sweep, Sweep):   # keep only this study's points, in its order
        keys = [(p["feature_map"], p["layer_set"]) for p in points]
        table = table.set_index(["feature_map", "layer_set"]).loc[keys].reset_index()
    return _finish(table, sets, n_layers)


def _span(layers: list[int]) -> str:
    if len(layers) == 1:
        return str(layers[0])
    if layers == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}-{layers[-1]}"
    return ",".join(map(str, layers))


def _finish(table: pd.DataFrame, sets: dict[str, list[int]], n_layers: int) -> pd.DataFrame:
    orig = table[(table.feature_map == ORIGINAL[0]) & (table.layer_set == ORIGINAL[1])].iloc[0]
    table = table.copy()
    table.insert(2, "layers", [_span(sets[s]) if s in sets else "" for s in table.layer_set])
    table.insert(3, "n_swapped", [len(sets.get(s, [])) for s in table.layer_set])
    table["accuracy_ratio"] = table.kv_accuracy / orig.kv_accuracy
    table["ppl_ratio"] = table.perplexity / orig.perplexity
    return table


class _MemorySweep:
    """The in-memory stand-in for :class:`interp.results.Sweep` (same three methods)."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def pending(self, points):
        return iter(points)

    def record(self, point: dict, result: dict) -> None:
        self.rows.append({**point, **result})

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)


def accuracy_figure(table: pd.DataFrame):
    """Plotly grouped bars: lookup accuracy per feature map (x) and layer set (colour), with
    the original model's accuracy as a dashed line."""
    import plotly.graph_objects as go

    orig = table[table.feature_map == ORIGINAL[0]].kv_accuracy.iloc[0]
    swapped = table[table.feature_map != ORIGINAL[0]]
    fig = go.Figure()
    for ls, part in swapped.groupby("layer_set", sort=False):
        fig.add_bar(x=part.feature_map, y=part.kv_accuracy, name=f"{ls} ({part.layers.iloc[0]})")
    fig.add_hline(y=orig, line_dash="dash", annotation_text=f"original (softmax) {orig:.2f}")
    fig.update_layout(barmode="group", title="In-context key-value lookup after linearising",
                      xaxis_title="feature map", yaxis_title="top-1 accuracy",
                      yaxis_range=[0, 1.05], legend_title="layers swapped")
    return fig
