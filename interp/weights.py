"""Per-head weight matrices of a hooked model, in TransformerLens' row-vector convention.

``head_weights(model)`` returns :class:`HeadWeights` with

    W_Q, W_K, W_V  [n_layers, n_heads, d_model, d_head]   (q = x @ W_Q; GQA K/V expanded so
                                                           query head h uses kv head h // group)
    W_O            [n_layers, n_heads, d_head, d_model]
    W_E            [d_vocab, d_model]
    W_U            [d_model, d_vocab]

What is folded in (``fold_norms=True``, the default)
----------------------------------------------------
Every norm a head's direct path crosses is of the form ``y = (x [- mean(x)]) / s(x) * g + b``
with ``s(x)`` a positive scalar per position (RMS or standard deviation). Its linear part is
``x P diag(g) / s(x)`` with ``P = I - 11^T/d`` for a LayerNorm (centering) and ``P = I`` for
an RMSNorm; the per-position scalar ``1 / s(x)`` and the bias ``b`` are left out, as in Elhage
et al. 2021. Folded per norm (read from the model's own modules and checked numerically
against them, :func:`norm_fold`; a norm of another form is refused):

============================  =========================  =====================================
norm                          families                   folded into
============================  =========================  =====================================
``ln1`` (before attention)    all decoders               rows of W_Q, W_K, W_V: ``P diag(g) W``
``q_norm`` / ``k_norm``       Qwen3, Gemma 3             columns of W_Q / W_K: ``W diag(g)``
``ln1_post`` (post-attention  Gemma 2, Gemma 3           columns of W_O: ``W_O diag(g)``
norm)
``ln_final``                  all decoders               rows of W_U: ``P diag(g) W_U``
embedding scale               Gemma (``sqrt(d_model)``)  W_E (the embedding module's own
                                                         output for each token, a scalar
                                                         multiple of the table)
============================  =========================  =====================================

Gemma's RMSNorms scale by ``1 + weight`` and LayerNorms (GPT-2, GPT-NeoX) center; both come
out of the numeric check, not from a family list. Left out, on every family: biases, the
per-position scalars ``1 / s(x)`` (for scores that are ratios of norms, like composition and
copying scores, they cancel exactly), rotary embeddings (RoPE: W_Q W_K^T is the score form at
relative offset 0), attention soft-capping and Gemma 2's final logit soft-capping (both act on
scores / logits after these matrices). ``HeadWeights.folds`` lists what was folded.

Encoders (post-LN BERT): ``ln1`` follows attention there, so these matrices are not a direct
path of the model; ``HeadWeights.direct_path`` then holds the reason (None for decoders) and
tools that need a direct path (:func:`interp.circuits.composition_scores`) refuse.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from interp.errors import Refused
from interp.families import family_of
from interp.families.tl import raw


@dataclass
class HeadWeights:
    W_Q: torch.Tensor
    W_K: torch.Tensor
    W_V: torch.Tensor
    W_O: torch.Tensor
    W_E: torch.Tensor
    W_U: torch.Tensor
    folds: tuple[str, ...] = field(default=())
    direct_path: str | None = None

    @property
    def n_layers(self) -> int:
        return self.W_Q.shape[0]

    @property
    def n_heads(self) -> int:
        return self.W_Q.shape[1]


def _weight(comp) -> torch.Tensor | None:
    for name in ("weight", "w"):
        w = getattr(comp, name, None)
        if isinstance(w, torch.Tensor):
            return w.detach().float()
    return None


@torch.no_grad()
def norm_fold(norm, d: int, name: str = "norm") -> tuple[torch.Tensor, bool] | None:
    """``(g [d], centers)`` of a norm module (bridge or raw) such that its output is
    ``(x [- mean(x)]) / s(x) * g + b`` (``centers``: it subtracts the mean); None when there
    is no module or it is the identity.

    Read from the module's weight (``g = weight`` or ``1 + weight``, Gemma) and checked by
    running the module on random inputs: the convention that reproduces its output is the one
    returned.

    Raises:
        Refused (a NotImplementedError): a norm of another form (the message names it).
    """
    if norm is None:
        return None
    comp = raw(norm)
    param = next(iter(comp.parameters()), None)
    dev = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    gen = torch.Generator().manual_seed(0)
    x = (100 * torch.randn(4, d, generator=gen)).to(dev, dtype)
    y = comp(x).float()
    xf = x.float()
    tol = (1e-4 if dtype == torch.float32 else 2e-2) * float(y.abs().max().clamp_min(1e-6))
    if float((y - xf).abs().max()) <= tol:
        return None
    centers = float((comp(x + 37.0).float() - y).abs().max()) <= tol
    xc = xf - xf.mean(-1, keepdim=True) if centers else xf
    r = xc / xc.pow(2).mean(-1, keepdim=True).sqrt()
    w = _weight(comp)
    cands = [torch.ones(d, device=dev)] if w is None else [w.to(dev), w.to(dev) + 1.0]
    for g in cands:
        b = y - r * g                                    # the bias: one row for every x
        if float((b - b[:1]).abs().max()) <= tol:
            return g, centers
    raise Refused(
        f"head_weights: {name} ({type(comp).__name__}) is not of the form "
        f"(x [- mean]) / rms * weight + bias, so it cannot be folded into the head matrices")


def _fold_rows(w: torch.Tensor, fold) -> torch.Tensor:
    """``P diag(g) W`` over the ``d_model`` axis ``-2`` of ``w``."""
    g, centers = fold
    w = w * g.to(w.device)[:, None]
    return w - w.mean(-2, keepdim=True) if centers else w


def _fold_cols(w: torch.Tensor, fold) -> torch.Tensor:
    """``W P diag(g)`` over the last axis of ``w``."""
    g, centers = fold
    if centers:
        w = w - w.mean(-1, keepdim=True)
    return w * g.to(w.device)


@torch.no_grad()
def embed_scale(model) -> float:
    """The scalar ``c`` with ``embed(token) = c * W_E[token]`` for the model's own embedding
    module (``sqrt(d_model)`` on Gemma, 1 elsewhere).

    Raises:
        Refused (a NotImplementedError): an embedding that is not a scaled table lookup.
    """
    W_E = model.W_E.detach()
    ids = torch.arange(min(16, W_E.shape[0]), device=W_E.device)
    e = family_of(model).embedding()(ids).float()
    w = W_E[ids].float()
    c = float((e * w).sum() / (w * w).sum().clamp_min(1e-30))
    if float((e - c * w).abs().max()) > 1e-3 * float(e.abs().max().clamp_min(1e-6)):
        raise Refused("head_weights: the embedding module is not a scaled lookup "
                                  "of W_E, so W_E cannot stand for what it writes")
    return c


@torch.no_grad()
def head_weights(model, fold_norms: bool = True) -> HeadWeights:
    """The model's per-head matrices as float32 tensors on the model's device, with the norms
    and the embedding scale folded in as the module docstring states per family (callers move
    small results to the CPU at the edge)."""
    from interp.models.loading import ensure_info

    W_Q = model.W_Q.detach().float().clone()
    W_K = model.W_K.detach().float().clone()
    W_V = model.W_V.detach().float().clone()
    W_O = model.W_O.detach().float().clone()
    n_heads = W_Q.shape[1]
    group = n_heads // W_K.shape[1]
    if group > 1:
        W_K = W_K.repeat_interleave(group, dim=1)
        W_V = W_V.repeat_interleave(group, dim=1)
    W_E = model.W_E.detach().float()
    W_U = model.W_U.detach().float()
    d, dh = W_Q.shape[-2], W_Q.shape[-1]
    folds: list[str] = []
    causal = bool(getattr(ensure_info(model), "causal", True))
    direct = None if causal else ("post-LN encoder: ln1 follows attention, so W_Q/W_K/W_V do "
                                  "not read the residual stream a head writes to")
    if fold_norms:
        seen = set()

        def note(what, fold):
            if fold is not None:
                seen.add(f"{what} scale" + (" and centering" if fold[1] else ""))

        family = family_of(model)
        for layer in range(len(model.blocks)):
            mods = family.norm_modules(layer)
            ln1 = norm_fold(mods["ln1"], d, f"layer {layer} ln1")
            if ln1 is not None:
                W_Q[layer], W_K[layer], W_V[layer] = (_fold_rows(W_Q[layer], ln1),
                                                      _fold_rows(W_K[layer], ln1),
                                                      _fold_rows(W_V[layer], ln1))
            note("ln1", ln1)
            for key, W in (("query_norm", W_Q), ("key_norm", W_K)):
                qk = norm_fold(mods[key], dh, f"layer {layer} {key.replace('_', ' ')}")
                if qk is not None:
                    W[layer] = _fold_cols(W[layer], qk)
                note("q/k norm", qk)
            post = norm_fold(mods["post_attention"], d, f"layer {layer} post-attention norm")
            if post is not None:                        # Gemma: norm(attn_out) -> residual
                W_O[layer] = _fold_cols(W_O[layer], post)
            note("post-attention norm", post)
        final = norm_fold(family.final_norm(), d, "ln_final")
        if final is not None:
            W_U = _fold_rows(W_U, final)
        note("final norm", final)
        folds = sorted(seen)
        c = embed_scale(model)
        if abs(c - 1.0) > 1e-6:
            W_E = W_E * c
            folds.append(f"embedding scale {c:g}")
    return HeadWeights(W_Q=W_Q, W_K=W_K, W_V=W_V, W_O=W_O, W_E=W_E, W_U=W_U,
                       folds=tuple(folds), direct_path=direct)
