"""Brute-force references for the circuit tools, from whole-model forwards only.

Every function here runs the model's own forward with hooks on its activations
(``hook_z``, ``hook_mlp_out``, ``hook_resid_pre`` of block 0, ``hook_q/k/v``,
``ln1/ln2/ln_final.hook_in``) and nothing else: no weight matrices, no hand-written piece of
a layer (no norm, no projection, no ``W_O``). So they hold on every architecture the bridge
runs, whatever sits between a head's ``z`` and the residual stream (Gemma's post-attention
norm, GPT-NeoX's parallel blocks, ...). They are slow (one or two forwards per number) and
exist to check the fast tools.

Nodes are named as in :class:`interp.circuits.graph.HeadGraph`:

- senders: ``"embed"`` (``blocks.0.hook_resid_pre``), ``("head", layer, head)``,
  ``("mlp", layer)``;
- receivers: ``("q", layer, query_head)``, ``("k", layer, kv_head)``,
  ``("v", layer, kv_head)``, ``("mlp", layer)`` (the MLP's input, ``ln2.hook_in``),
  ``("logits",)`` (``ln_final.hook_in``).

Definitions (the issue's):

- *sender delivered to one receiver* (:func:`receiver_input`): run the base tokens with the
  sender's activation taken from the source run and every other head output (``hook_z``) and
  every MLP output (``hook_mlp_out``) frozen at its base value; read the receiver's input in
  that forward. The residual stream then differs from the base run by the sender's output
  difference only, delivered through the model's own modules.
- *path patching* (:func:`path_patch`): that input patched into a fresh base run (under GQA
  the other query heads of the receiver's KV group get their base ``hook_z`` back).
- *edge removed from the full circuit* (:func:`edge_removed`): the clean run with one
  receiver's input rebuilt with the sender at its corrupted value (ACDC's rule for the mask of
  every edge but one; a KV receiver is the whole KV head).
- *edge attribution* (:func:`edge_attribution`): ``delta . g`` with ``delta`` the sender's
  output difference at the receiver's read point (forward above) and ``g`` the gradient of
  the metric with respect to a zero perturbation added where only that receiver reads the
  residual stream (every other consumer of the same norm output detached), in a real forward.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

from interp.hooks import attach

Z = "blocks.{}.attn.hook_z"
MLP = "blocks.{}.hook_mlp_out"
EMBED = "blocks.0.hook_resid_pre"


def group(model) -> int:
    kv = getattr(model.cfg, "n_key_value_heads", None) or model.cfg.n_heads
    return model.cfg.n_heads // kv


def has_mlps(model) -> bool:
    return MLP.format(0) in model.hook_dict


def cache(model, tokens, names) -> dict[str, torch.Tensor]:
    """Activations ``names`` of one forward (keyed by the names asked for)."""
    out = {}

    def save(name):
        def fn(act, hook):
            out[name] = act.detach().clone()

        return fn

    with torch.no_grad(), attach(model, [(n, save(n)) for n in names]):
        model(tokens)
    return out


def node_names(model) -> list[str]:
    """Every sender activation: the embedding, each layer's ``hook_z`` and ``hook_mlp_out``."""
    names = [EMBED] + [Z.format(l) for l in range(model.cfg.n_layers)]
    if has_mlps(model):
        names += [MLP.format(l) for l in range(model.cfg.n_layers)]
    return names


def read_point(receiver) -> tuple[str, int | None]:
    """The hook a receiver's input is read at, and the head index in it (None: whole)."""
    kind = receiver[0]
    if kind in ("q", "k", "v"):
        return f"blocks.{receiver[1]}.attn.hook_{kind}", receiver[2]
    if kind == "mlp":
        return f"blocks.{receiver[1]}.ln2.hook_in", None
    if kind == "logits":
        return "ln_final.hook_in", None
    raise ValueError(receiver)


def resid_point(receiver) -> str:
    """Where a receiver reads the residual stream (the input of its norm)."""
    kind = receiver[0]
    if kind in ("q", "k", "v"):
        return f"blocks.{receiver[1]}.ln1.hook_in"
    return read_point(receiver)[0]


def _freeze_hooks(model, sender, base: dict, src: dict):
    """Hooks: every node at its ``base`` value, the sender at its ``src`` value."""
    hooks = []
    for l in range(model.cfg.n_layers):
        def zf(z, hook, l=l):
            out = base[Z.format(l)].clone()
            if sender[0] == "head" and sender[1] == l:
                out[:, :, sender[2]] = src[Z.format(l)][:, :, sender[2]]
            return out

        hooks.append((Z.format(l), zf))
        if has_mlps(model):
            def mf(act, hook, l=l):
                return (src if sender == ("mlp", l) else base)[MLP.format(l)].clone()

            hooks.append((MLP.format(l), mf))
    if sender == "embed":
        hooks.append((EMBED, lambda act, hook: src[EMBED].clone()))
    return hooks


@torch.no_grad()
def frozen_reads(model, tokens, sender, base: dict, src: dict, names) -> dict:
    """Activations ``names`` of a forward of ``tokens`` with only ``sender`` at its ``src``
    value and every other node frozen at ``base``."""
    grab = {}

    def read(name):
        def fn(act, hook):
            grab[name] = act.detach().clone()
            return act

        return fn

    with attach(model, _freeze_hooks(model, sender, base, src) + [(n, read(n)) for n in names]):
        model(tokens)
    return grab


def receiver_input(model, tokens, sender, receiver, base: dict, src: dict) -> torch.Tensor:
    """The receiver's input in that forward (:func:`frozen_reads`)."""
    name, idx = read_point(receiver)
    act = frozen_reads(model, tokens, sender, base, src, [name])[name]
    return act if idx is None else act[:, :, idx]


def _replace_input(receiver, value: torch.Tensor):
    name, idx = read_point(receiver)

    def put(act, hook):
        act = act.clone()
        if idx is None:
            act[...] = value
        else:
            act[:, :, idx] = value
        return act

    return name, put


def _tokens(task, direction):
    return (task.corrupted, task.clean) if direction == "denoise" else (task.clean, task.corrupted)


@torch.no_grad()
def path_patch(model, task, sender: tuple[int, int], receiver: tuple[int, int], x: str,
               direction: str = "denoise") -> float:
    """Path patching sender head -> receiver head through input ``x`` (the issue's brute
    force): metric of the base run with the receiver's ``x`` read from a forward where only
    the sender's ``hook_z`` comes from the source run and every other head and MLP output is
    frozen at base; under GQA the other query heads of the receiver's KV group are restored
    to their base ``hook_z``."""
    base_t, src_t = _tokens(task, direction)
    names = node_names(model)
    base, src = cache(model, base_t, names), cache(model, src_t, names)
    rl, rh = receiver
    g = group(model)
    target = rh if x == "q" else rh // g
    rcv = (x, rl, target)
    new = receiver_input(model, base_t, ("head", *sender), rcv, base, src)
    hooks = [_replace_input(rcv, new)]
    keep = [h for h in range(model.cfg.n_heads) if h // g == target and h != rh]
    if x != "q" and keep:
        def restore(z, hook):
            z = z.clone()
            z[:, :, keep] = base[Z.format(rl)][:, :, keep]
            return z

        hooks.append((Z.format(rl), restore))
    with attach(model, hooks):
        return float(task.metric(model(base_t)))


@torch.no_grad()
def edge_removed(model, task, sender, receiver) -> float:
    """The clean run with the receiver's input rebuilt with ``sender`` at its corrupted value
    (everything else clean): ACDC's run of every edge except ``sender -> receiver``."""
    names = node_names(model)
    clean, corr = cache(model, task.clean, names), cache(model, task.corrupted, names)
    new = receiver_input(model, task.clean, sender, receiver, clean, corr)
    with attach(model, [_replace_input(receiver, new)]):
        return float(task.metric(model(task.clean)))


def receiver_gradient(model, tokens, receiver, metric) -> torch.Tensor:
    """``d metric / d e`` at ``e = 0`` for a perturbation ``e`` of the residual stream as read
    by ``receiver`` only, in a real forward of ``tokens``: ``e`` is added at the input of the
    receiver's norm (``ln1`` / ``ln2`` / ``ln_final``) and every other output of that norm is
    detached (other heads' q/k/v and the other two of this head's q/k/v)."""
    point = resid_point(receiver)
    box = {}

    def add(act, hook):
        e = torch.zeros_like(act, requires_grad=True)
        box["e"] = e
        return act + e

    hooks = [(point, add)]
    if receiver[0] in ("q", "k", "v"):
        l = receiver[1]
        for x in ("q", "k", "v"):
            def keep_one(act, hook, x=x):
                out = act.detach().clone()
                if x == receiver[0]:
                    out[:, :, receiver[2]] = act[:, :, receiver[2]]
                return out

            hooks.append((f"blocks.{l}.attn.hook_{x}", keep_one))
    with torch.enable_grad(), attach(model, hooks):
        m = metric(model(tokens))
        (g,) = torch.autograd.grad(m, box["e"])
    return g.detach()


def edge_attribution(model, task, senders, receivers) -> torch.Tensor:
    """EAP scores ``[len(senders), len(receivers)]`` at the corrupted run:
    ``(resid(sender clean, rest corrupted) - resid(corrupted)) . d metric / d e_receiver`` at
    the receiver's read point (``NaN`` where the sender does not run before the receiver is
    left to the caller)."""
    names = node_names(model)
    clean, corr = cache(model, task.clean, names), cache(model, task.corrupted, names)
    points = sorted({resid_point(r) for r in receivers})
    base_at = cache(model, task.corrupted, points)
    out = torch.zeros(len(senders), len(receivers), dtype=torch.float64)
    grads = [receiver_gradient(model, task.corrupted, r, task.metric) for r in receivers]
    for i, s in enumerate(senders):
        reads = frozen_reads(model, task.corrupted, s, corr, clean, points)
        at = {p: reads[p] - base_at[p] for p in points}
        for j, r in enumerate(receivers):
            out[i, j] = float((at[resid_point(r)].double() * grads[j].double()).sum())
    return out


def node_attribution(model, task) -> torch.Tensor:
    """``[layer, head]``: ``sum (z_clean - z_corr)[h] . d metric / d z[h]`` at the corrupted
    run, the gradient from a real forward (a zero perturbation added at ``hook_z``)."""
    L, H = model.cfg.n_layers, model.cfg.n_heads
    names = [Z.format(l) for l in range(L)]
    clean, corr = cache(model, task.clean, names), cache(model, task.corrupted, names)
    es = {}

    def add(l):
        def fn(z, hook):
            es[l] = torch.zeros_like(z, requires_grad=True)
            return z + es[l]

        return fn

    with torch.enable_grad(), attach(model, [(Z.format(l), add(l)) for l in range(L)]):
        m = task.metric(model(task.corrupted))
        grads = torch.autograd.grad(m, [es[l] for l in range(L)])
    out = torch.zeros(L, H, dtype=torch.float64)
    for l in range(L):
        d = (clean[Z.format(l)] - corr[Z.format(l)]).double() * grads[l].double()
        out[l] = d.sum(dim=(0, 1, 3))
    return out


@torch.no_grad()
def patch_head(model, task, layer: int, head: int, direction: str = "denoise") -> float:
    """One forward: the base run with one head's ``hook_z`` from the source run."""
    base_t, src_t = _tokens(task, direction)
    src = cache(model, src_t, [Z.format(layer)])[Z.format(layer)]

    def fn(z, hook):
        z = z.clone()
        z[:, :, head] = src[:, :, head]
        return z

    with attach(model, [(Z.format(layer), fn)]):
        return float(task.metric(model(base_t)))


@torch.no_grad()
def patch_resid(model, task, layer: int, pos: int, direction: str = "denoise") -> float:
    """One forward: the base run with ``hook_resid_pre`` at one position from the source."""
    base_t, src_t = _tokens(task, direction)
    name = f"blocks.{layer}.hook_resid_pre"
    src = cache(model, src_t, [name])[name]

    def fn(act, hook):
        act = act.clone()
        act[:, pos] = src[:, pos]
        return act

    with attach(model, [(name, fn)]):
        return float(task.metric(model(base_t)))


def _raw(module):
    return getattr(module, "original_component", None) or module


@contextmanager
def zeroed_heads(model, heads):
    """The model with the ``o`` projection's weights reading each head's ``z`` set to zero
    (weights edited in place, restored on exit): zero ablation without any hook."""
    saved = []
    dh = model.cfg.d_head
    try:
        for l, h in heads:
            lin = _raw(model.blocks[l].attn.o)
            w = lin.weight
            conv = type(lin).__name__ == "Conv1D"              # GPT-2: [in, out]
            sl = (slice(h * dh, (h + 1) * dh), slice(None)) if conv else \
                (slice(None), slice(h * dh, (h + 1) * dh))
            saved.append((w, sl, w.data[sl].clone()))
            w.data[sl] = 0.0
        yield model
    finally:
        for w, sl, old in reversed(saved):
            w.data[sl] = old


@torch.no_grad()
def ablated_loss(model, tokens, heads, loss_fn, values: dict) -> float:
    """The hooked forward itself: ``hook_z`` of each ``(layer, head)`` replaced by
    ``values[(layer, head)]`` (broadcast to ``[batch, pos, d_head]``)."""
    by_layer = {}
    for l, h in heads:
        by_layer.setdefault(l, []).append(h)

    def make(l):
        def fn(z, hook):
            z = z.clone()
            for h in by_layer[l]:
                z[:, :, h] = values[(l, h)].to(z.dtype)
            return z

        return fn

    with attach(model, [(Z.format(l), make(l)) for l in by_layer]):
        return float(loss_fn(model(tokens), tokens))
