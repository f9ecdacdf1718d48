"""Clean/corrupted prompt pairs, metrics, activation patching and path patching.

Architecture
------------
- **Task.** A :class:`PatchingTask` holds a ``clean`` and a ``corrupted`` batch of token ids
  (same shape ``[batch, seq]``, row i of one paired with row i of the other) and a metric
  ``logits [batch, seq, vocab] -> scalar`` (higher = more like the clean behaviour). Builders:
  :func:`induction_task` (repeated random tokens; the corrupted row has a different first copy,
  so the second copy cannot be predicted by induction) and :func:`kv_retrieval_task`
  (the prompts of :mod:`interp.tasks.kv_lookup`; the corrupted row stores another value for
  the queried key, or asks for another key).
- **Metrics** (Meng et al. 2022; Wang et al. 2022): :func:`logit_diff_metric`,
  :func:`logprob_metric` (minus the loss on chosen positions), :func:`prob_metric`.
  :func:`normalise` maps a metric value to 0 = corrupted run, 1 = clean run.
- **Direction.** ``direction="denoise"`` (default) runs the *corrupted* tokens and patches in
  *clean* activations: a high normalised score means the component suffices to restore the
  clean behaviour. ``"noise"`` runs the clean tokens and patches in corrupted activations;
  the normalised score is still 0 = corrupted, 1 = clean, so a *low* score there means the
  component is necessary.
- **Activation patching** (:func:`patch_residual`, :func:`patch_heads`): one forward per
  layer; the base batch is repeated once per position (or head) and each copy gets one patch,
  so every (layer, position) / (layer, head) cell is one batch row block.
- **Path patching** (:func:`path_patch`, Wang et al. 2022): the sender's output difference
  ``(z_src - z_base)[sender] @ W_O[sender]`` is added to the base residual stream entering the
  receiver's layer and reaches ONLY the receiver's chosen input (q, k or v), which is
  recomputed with the model's own modules (``ln1`` and the q/k/v projection); everything else
  upstream stays at its base value, everything downstream of the receiver runs freely.
  **GQA** (smollm2: 3 KV heads for 9 query heads): k and v exist per KV head, so patching a
  receiver's k/v changes the shared KV head; to keep the effect to the ONE receiver query head,
  the other query heads of that KV group get their base ``hook_z`` back in the same forward.
  **Exact on every family or refused.** The hand projection ``ln1(resid + delta)`` is exact
  only where a head's write to the residual is linear in its ``z`` and the receiver reads
  ``ln1(resid_pre)``. Gemma 2/3 (and OLMo-2) normalise the attention output before adding it
  (``ln1_post``), so there (``method="auto"``) the receiver's input is instead read from a
  whole forward of the base tokens with the sender's ``z`` from the source run and every other
  head output and MLP output between sender and receiver frozen at base; the projection is
  refused by name if asked for. Encoders (post-LN BERT) are refused. Before the projection
  is used, what it rebuilds is checked against the base run's own activations (every head's
  q/k/v from ``hook_resid_pre``, the per-head writes against ``hook_attn_out``); a model
  where they differ is refused, never approximated. The forwards are the definition itself
  and need no check. ``tests/circuits/test_tools_families.py`` compares both against the
  brute force on every family of ``tests/families/tiny.py``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal, Sequence

import pandas as pd
import torch
import torch.nn.functional as F

from interp.models.loading import ensure_info
from interp.hooks import attach
from interp.probes.common import check_tokens

Metric = Callable[[torch.Tensor], torch.Tensor]
Direction = Literal["denoise", "noise"]
INPUTS = ("q", "k", "v")


@dataclass
class PatchingTask:
    """A batch of clean/corrupted prompt pairs and a metric.

    Attributes:
        clean, corrupted: ``[batch, seq]`` token ids (same shape; row i pairs with row i).
        metric: ``logits [batch, seq, vocab] -> scalar tensor`` (higher = clean behaviour);
            differentiable (attribution patching takes its gradient).
        name: label for tables.
        info: free-form description (what positions, which tokens).
    """

    clean: torch.Tensor
    corrupted: torch.Tensor
    metric: Metric
    name: str = "task"
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.clean.shape != self.corrupted.shape:
            raise ValueError(f"clean {tuple(self.clean.shape)} and corrupted "
                             f"{tuple(self.corrupted.shape)} token batches must have one shape")

    @property
    def batch(self) -> int:
        return int(self.clean.shape[0])

    def checked(self, model) -> "PatchingTask":
        """The task with its tokens validated for (and moved to the device of) ``model``."""
        return PatchingTask(check_tokens(model, self.clean), check_tokens(model, self.corrupted),
                            self.metric, self.name, self.info)


# ---------------------------------------------------------------------------------- metrics
def _pos_index(positions: torch.Tensor | Sequence[int], batch: int) -> torch.Tensor:
    p = torch.as_tensor(positions, dtype=torch.long)
    return p.expand(batch, -1) if p.dim() == 1 else p


def logit_diff_metric(positions: torch.Tensor | Sequence[int], correct: torch.Tensor,
                      wrong: torch.Tensor) -> Metric:
    """Mean of ``logit[correct] - logit[wrong]`` at ``positions``.

    Args:
        positions: ``[n]`` (same for every row) or ``[batch, n]`` query positions.
        correct, wrong: ``[batch, n]`` token ids (or ``[batch]`` for one position).
    """
    correct = torch.as_tensor(correct).reshape(correct.shape[0], -1)
    wrong = torch.as_tensor(wrong).reshape(wrong.shape[0], -1)

    def fn(logits: torch.Tensor) -> torch.Tensor:
        b = logits.shape[0]
        pos = _pos_index(positions, b).to(logits.device)
        sel = logits.gather(1, pos[..., None].expand(-1, -1, logits.shape[-1]))  # [b, n, V]
        c = sel.gather(-1, correct.to(logits.device)[..., None])[..., 0]
        w = sel.gather(-1, wrong.to(logits.device)[..., None])[..., 0]
        return (c - w).float().mean()

    return fn


def logprob_metric(positions: torch.Tensor | Sequence[int], targets: torch.Tensor) -> Metric:
    """Mean log-probability of ``targets [batch, n]`` at ``positions`` (= minus the loss on
    those positions; higher is better)."""

    def fn(logits: torch.Tensor) -> torch.Tensor:
        b = logits.shape[0]
        pos = _pos_index(positions, b).to(logits.device)
        sel = logits.gather(1, pos[..., None].expand(-1, -1, logits.shape[-1])).float()
        logp = torch.log_softmax(sel, dim=-1)
        return logp.gather(-1, targets.to(logits.device)[..., None])[..., 0].mean()

    return fn


def prob_metric(positions: torch.Tensor | Sequence[int], targets: torch.Tensor) -> Metric:
    """Mean probability of ``targets [batch, n]`` at ``positions``."""

    def fn(logits: torch.Tensor) -> torch.Tensor:
        b = logits.shape[0]
        pos = _pos_index(positions, b).to(logits.device)
        sel = logits.gather(1, pos[..., None].expand(-1, -1, logits.shape[-1])).float()
        return torch.softmax(sel, -1).gather(-1, targets.to(logits.device)[..., None])[..., 0].mean()

    return fn


def normalise(value: float, clean: float, corrupted: float) -> float:
    """``(value - corrupted) / (clean - corrupted)``: 0 = corrupted run, 1 = clean run."""
    den = clean - corrupted
    return float("nan") if abs(den) < 1e-12 else (value - corrupted) / den


# ------------------------------------------------------------------------------------ tasks
def induction_task(model, batch: int = 8, seg_len: int = 20, seed: int = 0,
                   metric: Literal["logprob", "prob"] = "logprob") -> PatchingTask:
    """Repeated random tokens ``[BOS] A A``; corrupted ``[BOS] A' A`` with a fresh first copy
    ``A'`` (same second copy), so induction cannot predict the second copy.

    The metric reads the predictions of second-copy tokens 2..seg_len (positions
    ``o + seg_len .. o + 2 seg_len - 2`` predict the next token of the clean copy; ``o`` = 1
    with BOS) -- the first token of a copy is never predictable.
    """
    from interp.probes.induction import bos_id
    from interp.tasks import repeated_tokens

    toy = ensure_info(model).kind == "toy"
    bos = 0 if toy else bos_id(model)          # the toy recipes put BOS = 0 first
    low = 1 if toy else (0 if model.tokenizer is None else min(1000, model.cfg.d_vocab // 2))

    def draw(s):
        return check_tokens(model, repeated_tokens(batch, seg_len, 2, model.cfg.d_vocab,
                                                   bos_token=bos, seed=s, low=low))

    clean = draw(seed)
    o = clean.shape[1] - 2 * seg_len
    fresh = draw(seed + 7919)
    corrupted = clean.clone()
    corrupted[:, o:o + seg_len] = fresh[:, o:o + seg_len]
    positions = torch.arange(o + seg_len, o + 2 * seg_len - 1)
    targets = clean[:, positions + 1].cpu()
    fn = (logprob_metric if metric == "logprob" else prob_metric)(positions, targets)
    return PatchingTask(clean, corrupted, fn, name="induction",
                        info={"seg_len": seg_len, "offset": o, "metric": metric,
                              "positions": positions.tolist()})


def kv_retrieval_task(model, batch: int = 8, n_pairs: int = 4, seed: int = 0,
                      n_shots: int | None = None,
                      corrupt: Literal["value", "query"] = "value") -> PatchingTask:
    """In-context key-value lookup prompts of :mod:`interp.tasks.kv_lookup` (header, a table
    ``k1: v1, ..., kn: vn.``, ``n_shots`` answered lookups of other keys, then ``kq:``; single
    -token keys and values checked with the tokenizer).

    Corruption (same length, one token changed per row):

    - ``"value"`` (default): the queried key's stored value ``vq`` is replaced in the table by
      a value ``v'`` that is in no pair of the row, so the corrupted run should answer ``v'``;
    - ``"query"``: the query key is swapped for another stored key ``kj`` (not one of the
      demonstrations when there is such a key), so the corrupted run should answer ``vj``.

    Metric: logit difference ``vq - v'`` (or ``vq - vj``) at the last position (the clean run
    prefers the first, the corrupted run the second).
    """
    from interp.tasks._sampling import generator
    from interp.tasks.kv_lookup import KVLookupConfig, single_token_ids

    tok = model.tokenizer
    if tok is None:
        raise ValueError("kv_retrieval_task needs a model with a tokenizer")
    if corrupt not in ("value", "query"):
        raise ValueError(f"corrupt must be 'value' or 'query', got {corrupt!r}")
    shots = max(0, min(6, n_pairs - 2)) if n_shots is None else n_shots
    cfg = KVLookupConfig(n_pairs=n_pairs, n_shots=shots, batch=batch)
    if corrupt == "value" and len(cfg.values) <= n_pairs:
        raise ValueError(f"corrupt='value' needs more than n_pairs={n_pairs} values")
    kv = cfg.build(tok, seed)
    clean = kv.tokens
    b, seq = clean.shape
    rows = torch.arange(b)
    corrupted = clean.clone()
    g = generator(seed + 7919)
    table0 = seq - 2 - 4 * shots - 4 * n_pairs              # position of the first key
    if corrupt == "value":
        pool = single_token_ids(tok, cfg.values, "values")
        wrong = torch.empty(b, dtype=torch.long)
        for i in range(b):
            free = pool[~torch.isin(pool, kv.values[i])]
            wrong[i] = free[torch.randint(len(free), (1,), generator=g)]
        corrupted[rows, table0 + 4 * kv.query + 2] = wrong
    else:
        if n_pairs < 2:
            raise ValueError("corrupt='query' needs n_pairs >= 2")
        other = torch.empty(b, dtype=torch.long)
        for i in range(b):
            demo = set(clean[i, seq - 2 - 4 * shots:seq - 2:4].tolist())
            cand = [j for j in range(n_pairs) if j != int(kv.query[i])]
            fresh = [j for j in cand if int(kv.keys[i, j]) not in demo] or cand
            other[i] = fresh[int(torch.randint(len(fresh), (1,), generator=g))]
        corrupted[:, seq - 2] = kv.keys[rows, other]
        wrong = kv.values[rows, other]
    clean_t, corr_t = check_tokens(model, clean), check_tokens(model, corrupted)
    fn = logit_diff_metric([seq - 1], kv.answers[:, None], wrong[:, None])
    return PatchingTask(clean_t, corr_t, fn, name="kv_retrieval",
                        info={"n_pairs": n_pairs, "n_shots": shots, "corrupt": corrupt,
                              "example": tok.decode(clean[0]),
                              "corrupted_example": tok.decode(corrupted[0])})


# -------------------------------------------------------------------------- model plumbing
def _raw(module):
    """The wrapped torch module of a bridge component (no hook points of its own)."""
    return getattr(module, "original_component", None) or getattr(module, "_original_component",
                                                                  module)


def n_kv_heads(model) -> int:
    return int(getattr(model.cfg, "n_key_value_heads", None) or model.cfg.n_heads)


def w_out(model, layer: int) -> torch.Tensor:
    """``W_O`` of ``layer`` as ``[head, d_head, d_model]`` (head ``h`` writes ``z_h @ W_O[h]``)."""
    lin = _raw(model.blocks[layer].attn.o)
    w = lin.weight                                                  # [d_model, H*dh]
    if type(lin).__name__ == "Conv1D":                              # GPT-2: [H*dh, d_model]
        w = w.T
    H, dh = model.cfg.n_heads, model.cfg.d_head
    return w.T.reshape(H, dh, -1)


def head_outputs(model, layer: int, z: torch.Tensor) -> torch.Tensor:
    """Per-head residual-stream writes ``[head, batch, pos, d_model]`` from ``z [b, pos, H, dh]``
    (without the shared output bias)."""
    return torch.einsum("bphe,hed->hbpd", z, w_out(model, layer).to(z.dtype))


def project(model, layer: int, which: str, resid: torch.Tensor, head: int) -> torch.Tensor:
    """Recompute ``hook_{which}`` of one head (a query head for q, a KV head for k/v) from a
    residual-stream input ``resid [..., pos, d_model]`` through the layer's own ``ln1`` and
    projection; returns ``[..., pos, d_head]`` (before RoPE, as ``hook_q``/``hook_k`` are)."""
    block = model.blocks[layer]
    lin = _raw(getattr(block.attn, which))
    dh = model.cfg.d_head
    w = lin.weight[head * dh:(head + 1) * dh]
    b = None if lin.bias is None else lin.bias[head * dh:(head + 1) * dh]
    return F.linear(_raw(block.ln1)(resid), w, b)


def post_attention_norm(model, layer: int):
    """The raw module that normalises ``layer``'s attention output before the residual add
    (Gemma 2/3 ``post_attention_layernorm``, the bridge's ``ln1_post``), or None."""
    block = model.blocks[layer]
    return _raw(block.ln1_post) if "ln1_post" in block._modules else None


def attn_write(model, layer: int, z: torch.Tensor) -> torch.Tensor:
    """What ``layer``'s attention adds to the residual stream for head outputs
    ``z [..., pos, head, d_head]`` (``hook_z`` layout), through the layer's own modules: the
    output projection (with its bias) and, where the layer has one, the post-attention norm.
    Not linear in ``z`` when there is a norm; :func:`check_writes` verifies it against
    ``hook_attn_out`` of a real forward."""
    out = _raw(model.blocks[layer].attn.o)(z.flatten(-2))
    post = post_attention_norm(model, layer)
    return out if post is None else post(out)


def close_or_refuse(got: torch.Tensor, want: torch.Tensor, who: str, what: str) -> None:
    """Refuse (``NotImplementedError``) when a quantity a tool rebuilds from the model's
    modules (``got``) is not what the model's own forward computed (``want``): relative
    tolerance 1e-3 of ``want``'s scale in float32 (3e-2 in half precision)."""
    got, want = got.detach().float(), want.detach().float()
    scale = float(want.abs().max().clamp_min(1e-6))
    err = float((got - want).abs().max())
    tol = (1e-3 if min(got.element_size(), want.element_size()) >= 4 else 3e-2) * scale
    if not err <= tol:
        raise NotImplementedError(
            f"{who}: {what} rebuilt from the layer's own modules differs from the model's "
            f"forward by {err:.3g} (scale {scale:.3g}), so this model computes something the "
            f"tool does not reproduce. Refusing rather than computing something different "
            f"from the model.")


def check_inputs(model, layer: int, cache: dict, who: str) -> None:
    """Every head's q/k/v of ``layer``, rebuilt by :func:`project` from
    ``blocks.{layer}.hook_resid_pre``, equals ``hook_q/k/v`` in ``cache`` (a real forward)."""
    from interp.families import describe_layers

    spec = describe_layers(model)[layer]
    resid = cache[f"blocks.{layer}.hook_resid_pre"]
    for x in INPUTS:
        want = cache[f"blocks.{layer}.attn.hook_{x}"]
        got = torch.stack([project(model, layer, x, resid, h) for h in range(want.shape[2])], 2)
        close_or_refuse(got, want, who, f"{spec.describe()}: hook_{x} (ln1 + {x} projection "
                                        f"of the residual stream)")


def check_writes(model, layer: int, cache: dict, who: str, per_head: bool = True) -> None:
    """``layer``'s attention write rebuilt from ``hook_z`` (:func:`attn_write`) equals
    ``hook_attn_out``; with ``per_head`` (layers without a post-attention norm) the per-head
    writes of :func:`head_outputs` plus the output bias also add up to it."""
    from interp.families import describe_layers

    spec = describe_layers(model)[layer]
    z, want = cache[f"blocks.{layer}.attn.hook_z"], cache[f"blocks.{layer}.hook_attn_out"]
    close_or_refuse(attn_write(model, layer, z), want, who,
                    f"{spec.describe()}: the attention output written to the residual stream")
    if per_head and post_attention_norm(model, layer) is None:
        bias = _raw(model.blocks[layer].attn.o)(torch.zeros_like(z.flatten(-2)))
        close_or_refuse(head_outputs(model, layer, z).sum(0) + bias, want, who,
                        f"{spec.describe()}: the sum of per-head writes z_h @ W_O[h]")


def run_cache(model, tokens: torch.Tensor, names: Sequence[str],
              grad_metric: Metric | None = None) -> tuple[float, dict[str, torch.Tensor]]:
    """One forward caching the activations ``names`` (detached); returns ``(metric, cache)``.
    With ``grad_metric``, also backpropagates it and caches gradients as ``"grad:" + name``."""
    cache: dict[str, torch.Tensor] = {}

    def saver(key: str):          # keyed by the name asked for (hook.name may be an alias)
        def fn(act, hook):
            cache[key] = act.detach()

        return fn

    fwd = [(n, saver(n)) for n in names]
    if grad_metric is None:
        with torch.no_grad(), attach(model, fwd):
            model(tokens)
        return float("nan"), cache
    with torch.enable_grad(), attach(model, fwd, [(n, saver("grad:" + n)) for n in names]):
        logits = model(tokens)
        m = grad_metric(logits)
        m.backward()
    model.zero_grad(set_to_none=True)
    return float(m.detach()), cache


@torch.no_grad()
def metric_of(model, tokens: torch.Tensor, metric: Metric, hooks=()) -> float:
    with attach(model, hooks):
        return float(metric(model(tokens)))


def _base_src(task: PatchingTask, direction: Direction):
    if direction not in ("denoise", "noise"):
        raise ValueError(f"direction must be 'denoise' or 'noise', got {direction!r}")
    return (task.corrupted, task.clean) if direction == "denoise" else (task.clean, task.corrupted)


def _chunked_metric(logits: torch.Tensor, metric: Metric, b: int) -> list[float]:
    return [float(metric(logits[i:i + b])) for i in range(0, logits.shape[0], b)]


def baseline(model, task: PatchingTask) -> dict[str, float]:
    """``{"clean": metric of the clean run, "corrupted": metric of the corrupted run}``."""
    return {"clean": metric_of(model, task.clean, task.metric),
            "corrupted": metric_of(model, task.corrupted, task.metric)}


# ---------------------------------------------------------------------- activation patching
def _patch_layers(model, task, direction, hook_name, n_cells, cell_patch, layers, max_batch,
                  progress, desc, sweep=None):
    """Patch ``n_cells`` cells of each layer's ``hook_name``, ``max_batch // batch`` cells per
    forward. The unit of work is one forward (a chunk of cells of one layer): with a
    ``sweep`` the chunks go through ``sweep.pending`` (resumable; in a sharded run each rank
    computes its share and :meth:`~interp.results.Sweep.table` gathers them), and a chunk is
    the same forward whichever rank runs it, so the table equals a one-process run's."""
    task = task.checked(model)
    base_tokens, src_tokens = _base_src(task, direction)
    ref = baseline(model, task)
    layers = list(range(model.cfg.n_layers)) if layers is None else list(layers)
    b = task.batch
    per_fwd = max(1, max_batch // b)
    chunks = [{"layer": layer, "start": start, "stop": min(n_cells, start + per_fwd)}
              for layer in layers for start in range(0, n_cells, per_fwd)]
    todo = chunks if sweep is None else list(sweep.pending(chunks))
    from tqdm.auto import tqdm

    src_layer, src_act = None, None
    computed = {}
    for chunk in tqdm(todo, desc=desc, disable=not progress):
        layer, name = chunk["layer"], hook_name(chunk["layer"])
        if layer != src_layer:
            _, src = run_cache(model, src_tokens, [name])
            src_layer, src_act = layer, src[name]
        cells = list(range(chunk["start"], chunk["stop"]))

        def hook(act, hook, cells=cells, src_act=src_act):
            act = act.clone()
            for i, c in enumerate(cells):
                cell_patch(act[i * b:(i + 1) * b], src_act, c)
            return act

        with torch.no_grad(), attach(model, [(name, hook)]):
            logits = model(base_tokens.repeat(len(cells), 1))
        result = {"metric": _chunked_metric(logits, task.metric, b)}
        computed[(layer, chunk["start"], chunk["stop"])] = result["metric"]
        if sweep is not None:
            sweep.record(chunk, result)
    if sweep is not None:
        table = sweep.table()
        computed = {(int(r["layer"]), int(r["start"]), int(r["stop"])): r["metric"]
                    for r in table.to_dict("records")
                    if "start" in r and isinstance(r.get("metric"), list)}
    rows = []
    for chunk in chunks:
        metrics = computed[(chunk["layer"], chunk["start"], chunk["stop"])]
        for c, m in zip(range(chunk["start"], chunk["stop"]), metrics):
            rows.append({"layer": chunk["layer"], "cell": c, "metric": float(m),
                         "normalised": normalise(float(m), ref["clean"], ref["corrupted"])})
    df = pd.DataFrame(rows)[["layer", "cell", "metric", "normalised"]]
    df.attrs.update(ref, direction=direction)
    return df


def patch_residual(model, task: PatchingTask, direction: Direction = "denoise",
                   layers: Sequence[int] | None = None, max_batch: int = 64,
                   progress: bool = True, sweep=None) -> pd.DataFrame:
    """Patch the residual stream (``blocks.{l}.hook_resid_pre``, ``[batch, pos, d_model]``) at
    one (layer, position) at a time.

    Returns:
        DataFrame ``layer, pos, metric, normalised`` (normalised: 0 = corrupted, 1 = clean);
        ``df.attrs`` holds ``clean``, ``corrupted`` and ``direction``.
    """
    n = task.clean.shape[1]

    def patch(act, src, pos):
        act[:, pos] = src[:, pos]

    df = _patch_layers(model, task, direction, lambda l: f"blocks.{l}.hook_resid_pre", n, patch,
                       layers, max_batch, progress, "patch resid", sweep)
    return df.rename(columns={"cell": "pos"})


def patch_heads(model, task: PatchingTask, direction: Direction = "denoise",
                layers: Sequence[int] | None = None, max_batch: int = 64,
                progress: bool = True, sweep=None) -> pd.DataFrame:
    """Patch each head's output ``hook_z`` (``[batch, pos, head, d_head]``, all positions) one
    head at a time.

    Returns:
        DataFrame ``layer, head, metric, normalised``.
    """
    def patch(act, src, head):
        act[:, :, head] = src[:, :, head]

    df = _patch_layers(model, task, direction, lambda l: f"blocks.{l}.attn.hook_z",
                       model.cfg.n_heads, patch, layers, max_batch, progress, "patch heads", sweep)
    return df.rename(columns={"cell": "head"})


# ----------------------------------------------------------------------------- path patching
@torch.no_grad()
def projection_exact(model, layers: Sequence[int]) -> str | None:
    """None when :func:`project` reproduces the receiver inputs of ``layers`` exactly, else the
    reason it does not (a norm after attention, an encoder, an unsupported layer)."""
    from interp.families import describe_layers

    specs = describe_layers(model)
    for layer in layers:
        spec, block = specs[layer], model.blocks[layer]
        if not spec.causal:
            return f"{spec.describe()}: post-LN encoder (ln1 follows attention)"
        if "ln1_post" in block._modules:
            return (f"{spec.describe()}: the attention output is normalised before the residual "
                    f"(post_attention_layernorm), so a head's write is not z @ W_O")
        if spec.unsupported:
            return f"{spec.describe()}: {spec.unsupported[0]}"
    return None


def edges_exact(model) -> str | None:
    """None when the edge-level graph (:mod:`interp.circuits.graph`: ACDC, EAP, edge
    attribution, ``head_circuit``) applies to ``model``, else the reason: encoders (post-LN:
    ``ln1`` follows attention, so receivers do not read the residual stream) and layers with
    features no interp consumer reproduces. Post-attention norms (Gemma 2/3) and parallel
    attention + MLP blocks (GPT-NeoX) are handled by the graph itself; what it rebuilds is
    checked against a real forward before use (:func:`check_inputs`, :func:`check_writes`)."""
    from interp.families import describe_layers

    for spec in describe_layers(model):
        if not spec.causal:
            return f"{spec.describe()}: post-LN encoder (ln1 follows attention)"
        if spec.unsupported:
            return f"{spec.describe()}: {spec.unsupported[0]}"
    return None


def _inputs_by_forward(model, base_tokens, src, base, snd, rl: int, x: str, target: int):
    """Receiver input ``hook_{x}`` of head ``target`` at layer ``rl`` ``[S*b, n, dh]``, read
    from whole forwards (one per sender): base tokens, the sender's z from the source run,
    every other head's z and every MLP output in layers ``[sender, rl)`` frozen at base."""
    outs = []
    for sl, sh in snd:
        def sender(z, hook, sl=sl, sh=sh):
            z = base[f"blocks.{sl}.attn.hook_z"].clone()
            z[:, :, sh] = src[f"blocks.{sl}.attn.hook_z"][:, :, sh]
            return z

        def frozen(name):
            return lambda act, hook: base[name]

        grab = {}

        def read(act, hook):
            grab["x"] = act[:, :, target].clone()
            return act

        hooks = [(f"blocks.{sl}.attn.hook_z", sender)]
        hooks += [(f"blocks.{l}.attn.hook_z", frozen(f"blocks.{l}.attn.hook_z"))
                  for l in range(sl + 1, rl)]
        hooks += [(f"blocks.{l}.hook_mlp_out", frozen(f"blocks.{l}.hook_mlp_out"))
                  for l in range(sl, rl) if f"blocks.{l}.hook_mlp_out" in base]
        hooks.append((f"blocks.{rl}.attn.hook_{x}", read))
        with torch.no_grad(), attach(model, hooks):
            model(base_tokens)
        outs.append(grab["x"])
    return torch.stack(outs).flatten(0, 1)


def path_patch(model, task: PatchingTask, senders: Sequence[tuple[int, int]],
               receivers: Sequence[tuple[int, int]], inputs: Sequence[str] = INPUTS,
               direction: Direction = "denoise", progress: bool = False,
               method: Literal["auto", "projection", "forward"] = "auto") -> pd.DataFrame:
    """Path patching sender head -> receiver head through the receiver's q, k or v input.

    For each (sender, receiver, input) with ``sender_layer < receiver_layer``: the base run
    (corrupted for ``"denoise"``) with the receiver's ``input`` recomputed from
    ``resid_pre_base[receiver_layer] + (z_src - z_base)[sender] @ W_O[sender]`` -- only the
    sender's output difference reaches only that input; heads in between are frozen at their
    base value (they see the unmodified base residual). For k/v under GQA the KV head is shared;
    the other query heads of the group are restored to their base ``hook_z`` (see module doc).

    ``method``: ``"projection"`` recomputes the receiver input by hand (one forward per
    receiver for all senders), ``"forward"`` reads it from whole forwards with everything else
    frozen (one more forward per sender), ``"auto"`` takes the projection where it is exact
    (:func:`projection_exact`) and the forwards elsewhere.

    Returns:
        DataFrame ``sender_layer, sender_head, receiver_layer, receiver_head, input, metric,
        normalised`` (``attrs["method"]``: the method used).

    Raises:
        NotImplementedError: ``method="projection"`` on a model where it is not exact, or an
            encoder.
    """
    task = task.checked(model)
    if not ensure_info(model).causal:
        raise NotImplementedError("path_patch: encoders (post-LN BERT) are not supported: ln1 "
                                  "follows attention there, so receiver inputs are not "
                                  "ln1(resid_pre)")
    involved = sorted({l for l, _ in senders} | {l for l, _ in receivers})
    why = projection_exact(model, involved)
    if method == "auto":
        method = "projection" if why is None else "forward"
    elif method == "projection" and why is not None:
        raise NotImplementedError(f"path_patch: the hand projection is not exact here: {why}; "
                                  f"use method='forward' (or 'auto')")
    elif method not in ("projection", "forward"):
        raise ValueError(f"method must be 'auto', 'projection' or 'forward', got {method!r}")
    base_tokens, src_tokens = _base_src(task, direction)
    ref = baseline(model, task)
    b = task.batch
    group = model.cfg.n_heads // n_kv_heads(model)
    layers = sorted({l for l, _ in senders} | {l for l, _ in receivers})
    names = [f"blocks.{l}.attn.hook_z" for l in layers]
    names += [f"blocks.{l}.hook_resid_pre" for l in layers]
    if method == "forward":
        between = range(min(layers), max(layers) + 1)
        names = sorted({*names, *(f"blocks.{l}.attn.hook_z" for l in between),
                        *(f"blocks.{l}.hook_mlp_out" for l in between
                          if f"blocks.{l}.hook_mlp_out" in model.hook_dict)})
    if method == "projection":               # what the projection rebuilds, checked first
        rls, sls = sorted({l for l, _ in receivers}), sorted({l for l, _ in senders})
        names += [f"blocks.{l}.attn.hook_{x}" for l in rls for x in INPUTS]
        names += [f"blocks.{l}.hook_attn_out" for l in sls]
    _, base = run_cache(model, base_tokens, list(dict.fromkeys(names)))
    if method == "projection":
        for l in rls:
            check_inputs(model, l, base, "path_patch")
        for l in sls:
            check_writes(model, l, base, "path_patch")
    _, src = run_cache(model, src_tokens, [f"blocks.{l}.attn.hook_z" for l in layers])
    rows = []
    from tqdm.auto import tqdm

    jobs = [(r, x) for r in receivers for x in inputs]
    for (rl, rh), x in tqdm(jobs, desc="path patching", disable=not progress):
        snd = [s for s in senders if s[0] < rl]
        if not snd:
            continue
        target = rh if x == "q" else rh // group
        if method == "forward":
            new = _inputs_by_forward(model, base_tokens, src, base, snd, rl, x, target)
        else:
            resid = base[f"blocks.{rl}.hook_resid_pre"]                   # [b, n, d]
            deltas = []
            for sl, sh in snd:
                dz = (src[f"blocks.{sl}.attn.hook_z"]
                      - base[f"blocks.{sl}.attn.hook_z"])[:, :, sh]
                deltas.append(dz @ w_out(model, sl)[sh].to(dz.dtype))
            x_in = resid[None] + torch.stack(deltas)                        # [S, b, n, d]
            new = project(model, rl, x, x_in, target).flatten(0, 1)         # [S*b, n, dh]
        z_base = base[f"blocks.{rl}.attn.hook_z"].repeat(len(snd), 1, 1, 1)
        keep = [h for h in range(model.cfg.n_heads) if h // group == target and h != rh]

        def put(act, hook, new=new, target=target):
            act = act.clone()
            act[:, :, target] = new.to(act.dtype)
            return act

        def restore(z, hook, keep=keep, z_base=z_base):
            if x == "q" or not keep:
                return z
            z = z.clone()
            z[:, :, keep] = z_base[:, :, keep]
            return z

        hooks = [(f"blocks.{rl}.attn.hook_{x}", put), (f"blocks.{rl}.attn.hook_z", restore)]
        with torch.no_grad(), attach(model, hooks):
            logits = model(base_tokens.repeat(len(snd), 1))
        for (sl, sh), m in zip(snd, _chunked_metric(logits, task.metric, b)):
            rows.append({"sender_layer": sl, "sender_head": sh, "receiver_layer": rl,
                         "receiver_head": rh, "input": x, "metric": m,
                         "normalised": normalise(m, ref["clean"], ref["corrupted"])})
    df = pd.DataFrame(rows, columns=["sender_layer", "sender_head", "receiver_layer",
                                     "receiver_head", "input", "metric", "normalised"])
    df.attrs.update(ref, direction=direction, method=method)
    return df
