"""Attention-sink probe: how much attention each head puts on the first tokens, how often a
head is a "sink head", what the sink token's keys and values look like, and what happens to
the loss when attention to it is forbidden.

Definitions (Gu et al. 2024, "When attention sink emerges in language models"; Xiao et al.
2023, StreamingLLM):

- ``alpha(k) = 1/(T-k) * sum_{i>=k} A[i, k]``: mean attention paid to key ``k`` by the queries
  that can see it (causal models). For a bidirectional encoder every query sees every key,
  so ``alpha(k) = 1/T * sum_i A[i, k]``. In a sliding-window layer (Gemma 2/3, Mistral, ...)
  only queries with ``i - k < window`` can see key ``k``: the mean runs over those (read from
  :func:`interp.describe_layers`), so a long prompt does not dilute a sliding layer's sink
  with queries that cannot attend to it.
- ``Sink_k^eps``: share of (sample, layer, head) with ``alpha(k) > eps`` (``eps = 0.3``).

Architecture
------------
:func:`sink_probe` checks the prompt and positions, and runs one :class:`SinkProbe` through
:func:`interp.probes.protocol.run_probe` (one batched forward, stopped after the last probed
layer). Its reducer takes column sums of the probed keys from a block of query rows
``probs [batch, head, rows, keys]`` (the whole ``hook_pattern`` at once with
``method="pattern"``, row blocks with ``"blockwise"``: :mod:`interp.probes.blockwise`), over
the queries that see each key (:func:`interp.attention.local.band_mask`, the one
sliding-window rule), and ``finish`` turns them into ``alpha`` per (sample, head, probed key)
``[batch, head, n_keys]``. When ``norms``, it also declares hooks on ``hook_k`` / ``hook_v``
``[batch, pos, kv_head, d_head]``, reduced to L2 norms of the sink token vs the mean over the
other tokens ``[kv_head]``. Nothing else is kept. The result is a :class:`SinkReport` with
tidy tables; :func:`sink_summary` aggregates ``Sink^eps`` per layer and overall.
:func:`forbid_keys_hook` / :func:`sink_ablation` forbid attention to the first token
(renormalising the rest of each row) and measure the loss change.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Mapping, Sequence

import pandas as pd
import torch

from interp.attention.local import band_mask
from interp.errors import InputError
from interp.families import describe_layers
from interp.hooks import attach
from interp.models.loading import ensure_info
from interp.probes.common import ProbeWarning, check_prompt, pattern_hook_name, to_tokens
from interp.probes.protocol import RowProbe, as_float, run_probe

EPS = 0.3
#: the keys :func:`sink_probe` scores when no ``positions`` are given (clipped to the prompt)
DEFAULT_POSITIONS = (0, 1, 2, 3)


@dataclass
class SinkReport:
    """Result of :func:`sink_probe`.

    Attributes:
        scores: one row per (layer, head, position): ``layer, head, position, token, alpha``
            (mean over the batch), ``alpha_min``, ``alpha_max`` (over the batch) and
            ``sink_share`` (share of samples with ``alpha > eps``).
        norms: one row per (layer, kv_head): ``k_norm_sink, k_norm_rest, k_ratio,
            v_norm_sink, v_norm_rest, v_ratio`` (L2 norms of the pre-RoPE key / value of the
            token at ``norm_position`` vs the mean over the other tokens, batch mean); empty
            when ``norms=False``.
        eps: the threshold used for ``sink_share``.
        causal: whether alpha averaged over ``i >= k`` (decoder) or all queries (encoder).
    """

    scores: pd.DataFrame
    norms: pd.DataFrame
    eps: float
    causal: bool

    def summary(self, per_layer: bool = True) -> pd.DataFrame:
        return sink_summary(self.scores, per_layer=per_layer)


def _positions_for(tokens: torch.Tensor, positions: Sequence[int] | None) -> list[int]:
    """Validate the prompt for the sink probe and pick the keys to score.

    ``positions=None``: :data:`DEFAULT_POSITIONS` clipped to the prompt (a 3-token prompt
    scores 0, 1, 2; a :class:`~interp.probes.common.ProbeWarning` says so). Explicit
    positions must all lie in the prompt: otherwise InputError saying how many tokens the
    prompt has and how many the positions need."""
    check_prompt(tokens, "sink", 2, why="the first token and at least one query after it")
    n = int(tokens.shape[-1])
    if positions is None:
        if n < len(DEFAULT_POSITIONS):
            warnings.warn(f"the prompt has {n} tokens; scoring positions 0-{n - 1} only "
                          f"(default {DEFAULT_POSITIONS[0]}-{DEFAULT_POSITIONS[-1]})",
                          ProbeWarning, stacklevel=3)
        return list(DEFAULT_POSITIONS[:n])
    return list(positions)          # checked by _resolve_positions


def _resolve_positions(positions: Sequence[int], n: int) -> list[int]:
    out = []
    for p in positions:
        if not isinstance(p, int):
            raise InputError(f"positions must be integers, got {p!r}")
        if not -n <= p < n:
            need = max(q + 1 if q >= 0 else -q for q in positions if isinstance(q, int))
            raise InputError(f"position {p} is outside a sequence of {n} tokens: the prompt "
                             f"has {n} tokens, positions {list(positions)} need at least "
                             f"{need}; use a longer prompt or leave positions out")
        out.append(p % n)
    if len(set(out)) != len(out):
        raise InputError(f"positions {list(positions)} name the same token twice")
    return out


def _token_labels(model, tokens: torch.Tensor, pos: list[int]) -> list[str]:
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        return [str(int(tokens[0, p])) for p in pos]
    return [display_token(tok, int(tokens[0, p])) for p in pos]


def display_token(tokenizer, token_id: int) -> str:
    """A token as a reader sees it: decoded text (not the BPE symbol: ``" lighthouse"``, not
    ``"Ġlighthouse"``), special tokens as themselves, ``repr`` quotes where the text starts or
    ends with whitespace or is empty."""
    text = tokenizer.decode([int(token_id)])
    return repr(text) if (not text or text != text.strip()) else text


class SinkProbe(RowProbe):
    """The sink reduction: column sums of the probed keys over the queries that can see them,
    and (``norms``) the key/value norms of one token vs the others.

    Sums per layer ``[b, h, P]`` (float64) of ``A[i, k]`` over the queries ``i`` that see key
    ``k`` (:meth:`visible`); :meth:`finish` divides by their number:
    ``alpha [b, h, P]`` per layer, and the norms ``{(layer, "k"|"v"): (sink [kvh], rest [kvh])}``.
    """

    def __init__(self, model, tokens: torch.Tensor, positions: list[int], layers: list[int],
                 norms: bool, norm_position: int):
        self.layers, self.pos, self.norms, self.npos = layers, positions, norms, norm_position
        self.n = int(tokens.shape[1])
        self.device = tokens.device
        self.causal = ensure_info(model).causal
        self.windows = {s.layer: s.sliding_window for s in describe_layers(model)}
        self.sums: dict[int, torch.Tensor] = {}
        self.kv: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}
        self._visible: dict[int, torch.Tensor] = {}

    def visible(self, layer: int) -> torch.Tensor:
        """``[T, P]`` float: query ``i`` can see key ``k`` in ``layer`` (causal: ``i >= k``;
        inside the layer's sliding window, where it has one: :func:`band_mask`)."""
        if layer not in self._visible:
            q = torch.arange(self.n, device=self.device)[:, None]
            k = torch.tensor(self.pos, device=self.device)[None, :]
            window = self.windows.get(layer)
            self._visible[layer] = band_mask(q, k, self.n if window is None else window,
                                             self.causal).float()
        return self._visible[layer]

    def hooks(self) -> list:
        """``hook_k`` / ``hook_v`` ``[b, pos, kv_head, d]`` of each layer -> L2 norms of token
        ``norm_position`` ``[kv_head]`` (batch mean) and of the others (mean)."""
        if not self.norms:
            return []

        def norm_hook(layer: int, which: str):
            def hook(x, hook):                                        # [b, pos, kv_head, d]
                nrm = x.float().norm(dim=-1)                          # [b, T, kvh]
                rest = torch.cat([nrm[:, :self.npos], nrm[:, self.npos + 1:]], dim=1)
                self.kv[(layer, which)] = (nrm[:, self.npos].mean(0), rest.mean(dim=(0, 1)))
            return hook

        return [(f"blocks.{layer}.attn.hook_{which}", norm_hook(layer, which))
                for layer in self.layers for which in "kv"]

    def reduce(self, layer: int, i0: int, j0: int, probs: torch.Tensor) -> None:
        b, h, r, s = probs.shape                                      # [b, h, rows, span]
        sel = [j for j, p in enumerate(self.pos) if j0 <= p < j0 + s]
        if not sel:
            return
        cols = as_float(probs)[..., [self.pos[j] - j0 for j in sel]]  # [b, h, r, P']
        valid = self.visible(layer)[i0:i0 + r][:, sel]                # [r, P']
        acc = self.sums.setdefault(layer, probs.new_zeros(b, h, len(self.pos),
                                                          dtype=torch.float64))
        acc[:, :, sel] += (cols * valid).sum(2).double()

    def finish(self) -> dict[int, torch.Tensor]:
        """``{layer: alpha [b, h, P]}`` (float32; NaN for a key no query sees)."""
        return {layer: (self.sums[layer] / self.visible(layer).sum(0).double()).float()
                for layer in self.layers}


def sink_probe(model, prompts, positions: Sequence[int] | None = None, eps: float = EPS,
               layers: Sequence[int] | None = None, norms: bool = True,
               norm_position: int = 0, method: str = "auto") -> SinkReport:
    """Sink scores (and key/value norms) of every head in one batched forward.

    Args:
        model: a hooked model (decoder or encoder; see :func:`interp.load_model`).
        prompts: text(s) of equal token length or token ids ``[batch, seq]``.
        positions: keys to score; negative values count from the end (``-1`` = ``[SEP]`` of
            an encoder prompt). Default :data:`DEFAULT_POSITIONS` (0-3), clipped to a
            shorter prompt with a :class:`~interp.probes.common.ProbeWarning`; explicit
            positions outside the prompt are an :class:`~interp.errors.InputError`.
        eps: threshold of ``Sink^eps``.
        layers: layers to probe (default all).
        norms: also hook ``hook_k``/``hook_v`` for the key/value norms.
        norm_position: the token whose norms are compared with the others' (default 0).
        method: ``"pattern"`` (reduce each layer's ``hook_pattern``), ``"blockwise"``
            (reduce a block of query rows at a time, never an ``[n, n]`` pattern, and stop
            after the last probed layer: :mod:`interp.probes.blockwise`) or ``"auto"``
            (blockwise for long prompts, :func:`~interp.probes.blockwise.choose_method`).

    Returns:
        :class:`SinkReport`.
    """
    tokens = to_tokens(model, prompts)
    n = tokens.shape[1]
    pos = _resolve_positions(_positions_for(tokens, positions), n)
    npos = _resolve_positions([norm_position], n)[0]
    layers = list(range(model.cfg.n_layers)) if layers is None else list(layers)
    probe = SinkProbe(model, tokens, pos, layers, norms, npos)
    alphas = run_probe(model, tokens, probe, method)
    scores = _score_table(alphas, layers, _token_labels(model, tokens, pos), pos, eps)
    return SinkReport(scores=scores, norms=_norm_table(probe.kv, layers if norms else []),
                      eps=eps, causal=probe.causal)


def _score_table(alphas: dict[int, torch.Tensor], layers: Sequence[int], labels: list[str],
                 pos: list[int], eps: float) -> pd.DataFrame:
    """``{layer: alpha [b, h, P]}`` -> the :attr:`SinkReport.scores` rows of ``layers``
    (batch mean, min, max and share above ``eps``)."""
    rows = []
    for layer in layers:
        a = alphas[layer]                                             # [b, h, P]
        mean, lo, hi = a.mean(0), a.amin(0), a.amax(0)
        share = (a > eps).float().mean(0)
        for h in range(a.shape[1]):
            for j, p in enumerate(pos):
                rows.append({"layer": layer, "head": h, "position": p, "token": labels[j],
                             "alpha": mean[h, j].item(), "alpha_min": lo[h, j].item(),
                             "alpha_max": hi[h, j].item(), "sink_share": share[h, j].item()})
    return pd.DataFrame(rows)


def _norm_table(kv: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]],
                layers: Sequence[int]) -> pd.DataFrame:
    """The :attr:`SinkReport.norms` rows of ``layers`` from :meth:`SinkProbe.hooks`' norms."""
    nrows = []
    for layer in layers:
        ks, kr = kv[(layer, "k")]
        vs, vr = kv[(layer, "v")]
        for h in range(ks.shape[0]):
            nrows.append({"layer": layer, "kv_head": h,
                          "k_norm_sink": ks[h].item(), "k_norm_rest": kr[h].item(),
                          "k_ratio": (ks[h] / kr[h]).item(),
                          "v_norm_sink": vs[h].item(), "v_norm_rest": vr[h].item(),
                          "v_ratio": (vs[h] / vr[h]).item()})
    return pd.DataFrame(nrows, columns=["layer", "kv_head", "k_norm_sink", "k_norm_rest",
                                        "k_ratio", "v_norm_sink", "v_norm_rest", "v_ratio"])


def sink_scores(model, prompts, positions: Sequence[int] | None = None, eps: float = EPS,
                layers: Sequence[int] | None = None, method: str = "auto") -> pd.DataFrame:
    """``alpha`` and ``sink_share`` per (layer, head, position), without key/value norms.
    See :func:`sink_probe` for the arguments and :class:`SinkReport` for the columns."""
    return sink_probe(model, prompts, positions, eps, layers, norms=False, method=method).scores


def sink_summary(scores: pd.DataFrame, per_layer: bool = True) -> pd.DataFrame:
    """Aggregate :func:`sink_scores` rows.

    Every (layer, head) has the same number of samples, so the share of (sample, layer,
    head) with ``alpha > eps`` is the mean of ``sink_share`` over the heads (and layers).

    Returns:
        ``per_layer``: one row per (layer, position): ``layer, position, token, mass`` (mean
        ``alpha`` over heads), ``max_head_alpha``, ``sink_share`` (= ``Sink^eps`` of that
        layer). Otherwise one row per position over all layers: ``position, token, mass,
        sink_share`` (= ``Sink_k^eps`` of Gu et al.).
    """
    keys = ["layer", "position", "token"] if per_layer else ["position", "token"]
    out = scores.groupby(keys, sort=True).agg(mass=("alpha", "mean"),
                                              max_head_alpha=("alpha", "max"),
                                              sink_share=("sink_share", "mean"))
    return out.reset_index()


def sink_probe_table(model, tokens, positions: Sequence[int] | None = None,
                     eps: float = EPS, method: str = "auto") -> pd.DataFrame:
    """One row per layer, for ``interp probe sink``: ``mass_<p>`` (mean alpha over heads of
    key ``p``), ``sink_share_<p>`` (``Sink^eps``) for each probed position, and the first
    token's key/value norm ratios vs the other tokens (mean over KV heads). ``method``: see
    :func:`sink_probe`."""
    rep = sink_probe(model, tokens, positions, eps, method=method)
    summ = rep.summary()
    wide = summ.pivot(index="layer", columns="position", values=["mass", "sink_share"])
    wide.columns = [f"{name}_{p}" for name, p in wide.columns]
    ratios = rep.norms.groupby("layer")[["k_ratio", "v_ratio"]].mean()
    return wide.join(ratios).reset_index()


# ---------------------------------------------------------------- first-token variants


def text_windows(tokenizer, text: str, n: int, length: int, stride: int | None = None,
                 skip: int = 0) -> torch.Tensor:
    """``n`` windows of ``length`` token ids ``[n, length]`` cut from ``text`` (no special
    tokens), starting ``skip`` tokens in and ``stride`` (default ``length``) apart."""
    ids = tokenizer(text, add_special_tokens=False).input_ids
    stride = stride or length
    need = skip + (n - 1) * stride + length
    if len(ids) < need:
        raise InputError(f"the text has {len(ids)} tokens; {need} are needed for {n} windows "
                         f"of {length}")
    return torch.tensor([ids[skip + i * stride: skip + i * stride + length] for i in range(n)])


def first_token_variants(tokenizer, text: str, n: int = 16, length: int = 64,
                         skip: int = 200) -> dict[str, torch.Tensor]:
    """Batches ``[n, length]`` of text windows whose first token is: ``bos`` (the
    tokenizer's BOS), ``none`` (no special token: the window starts mid-text with whatever
    content token is there), ``newline`` (``"\\n"``) and ``word`` (``"The"``). The rest of each
    row is the same text, so any difference at position 0 comes from what the first token is."""
    body = text_windows(tokenizer, text, n, length - 1, skip=skip)
    out = {}
    firsts = {"newline": "\n", "word": "The"}
    if tokenizer.bos_token_id is not None:
        out["bos"] = torch.cat([torch.full((n, 1), tokenizer.bos_token_id), body], 1)
    out["none"] = text_windows(tokenizer, text, n, length, skip=skip)
    for name, s in firsts.items():
        ids = tokenizer(s, add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise InputError(f"{s!r} is {len(ids)} tokens for this tokenizer, expected 1")
        out[name] = torch.cat([torch.full((n, 1), ids[0]), body], 1)
    return out


# ---------------------------------------------------------------- ablation


def forbid_keys_hook(keys: Sequence[int] = (0,)):
    """A ``hook_pattern`` hook ``[batch, head, query, key]`` that removes the attention paid
    to ``keys`` and renormalises each row over the remaining keys.

    A row whose only attended keys are in ``keys`` (the first query of a causal model,
    which sees only token 0) has nothing to renormalise over; it is left unchanged, so every
    row still sums to 1 and nothing becomes NaN.
    """
    keys = list(keys)

    def hook(pattern, hook):
        p = pattern.clone()
        p[..., keys] = 0
        total = p.sum(-1, keepdim=True)
        empty = total <= 0
        return torch.where(empty, pattern, p / torch.where(empty, torch.ones_like(total), total))

    return hook


@torch.no_grad()
def _loss(model, tokens: torch.Tensor) -> float:
    from interp.models.toy import lm_loss

    return float(lm_loss(model(tokens), tokens))


def sink_ablation(model, prompts, layer_sets: Mapping[str, Sequence[int]] | None = None,
                  keys: Sequence[int] = (0,)) -> pd.DataFrame:
    """Loss change when attention to ``keys`` (default the first token) is forbidden in the
    given layers (rows renormalised over the other keys, :func:`forbid_keys_hook`).

    Args:
        model: a hooked causal LM with a meaningful LM head.
        prompts: natural text(s) of equal token length, or ids ``[batch, seq]``.
        layer_sets: ``{label: layers}``; default: all layers, all but layer 0, and
            consecutive groups of 5.

    Returns:
        One row per set plus the unablated baseline: ``ablated, n_layers, loss, delta_loss,
        ppl`` (mean next-token cross-entropy over all predicted tokens).
    """
    info = ensure_info(model)
    if info is not None and (not info.causal or not info.has_lm_head):
        raise InputError(f"{info.name} has no meaningful next-token loss; use a causal LM")
    tokens = to_tokens(model, prompts)
    nl = model.cfg.n_layers
    if layer_sets is None:
        layer_sets = {"all": list(range(nl)), f"1-{nl - 1}": list(range(1, nl))}
        for s in range(0, nl, 5):
            e = min(nl, s + 5)
            layer_sets[f"{s}-{e - 1}"] = list(range(s, e))
    base = _loss(model, tokens)
    rows = [{"ablated": "none", "n_layers": 0, "loss": base, "delta_loss": 0.0,
             "ppl": float(torch.exp(torch.tensor(base)))}]
    for label, layers in layer_sets.items():
        hook = forbid_keys_hook(keys)
        with attach(model, [(pattern_hook_name(int(layer)), hook) for layer in layers]):
            loss = _loss(model, tokens)
        rows.append({"ablated": label, "n_layers": len(layers), "loss": loss,
                     "delta_loss": loss - base, "ppl": float(torch.exp(torch.tensor(loss)))})
    return pd.DataFrame(rows)
