"""Direct logit attribution: which components write the answer's logit directly.

Architecture
------------
The residual stream at a position is a sum of component writes::

    resid_final = embed + sum_l ( sum_h head_{l,h} + attn_bias_l + mlp_l )

:func:`residual_decomposition` returns those writes as vectors, read from one forward's
hooks (``blocks.0.hook_resid_pre``, ``hook_z``, ``hook_attn_out``, ``hook_resid_pre/post``)
and each head's write ``z_h W_O^h`` from the family adapter. The sum is checked against the
model's own final residual; a mismatch is refused, never approximated.

A norm between a write and the logits is frozen at this run's value, so each component's
share is linear and the shares add up exactly:

- a norm ``y = P(x) * s(x) * g + b`` (``P`` = mean-centering for LayerNorm, identity for
  RMSNorm; ``g`` read and checked by :func:`interp.weights.norm_fold`) becomes
  ``c -> P(c) * s * g`` with ``s`` the scale of this run's input at this position, its bias
  ``b`` a separate term. This is how the final norm is treated (TransformerLens'
  ``apply_ln_to_stack``), and on Gemma 2/3 also each layer's post-attention norm: a head's
  write is ``P(z_h W_O^h) * s_l * g_l`` (TransformerLens #828: DLA not adding up on Gemma 2).
- the final soft-cap ``logit = c * tanh(u / c)`` (Gemma 2) is frozen as the ratio
  ``logit / u`` of this run for each token, so shares of ``u`` scale to shares of the logit.

:func:`direct_logit_attribution` projects every frozen write onto ``W_U[:, answer]``
(minus ``W_U[:, contrast]``) with those factors: one row per component, rows summing to the
model's ``logit[answer] - logit[contrast]`` at that position. Components: ``embed`` (token
and any learned positional embedding), ``L{l}H{h}``, ``L{l}.attn_bias`` (the output bias,
where the layer has one), ``L{l}.mlp`` (where there are MLPs), and ``bias`` (the final norm's
bias and the unembedding bias, where they exist).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import pandas as pd
import torch

from interp.attribution.lens import check_logits, check_positions
from interp.errors import InputError, Refused, UnknownName
from interp.families import family_of
from interp.families.tl import raw
from interp.hooks import attach
from interp.probes.common import to_tokens
from interp.weights import norm_fold


@dataclass
class Decomposition:
    """The residual stream at one position split into component writes.

    Attributes:
        frame: one row per component: ``component, layer, head`` (``layer``/``head`` are
            ``<NA>`` where they do not apply: embed, bias; mlp and attn_bias have no head).
        vectors: ``[components, batch, d_model]`` raw residual-stream writes; with ``bias``
            (zero here) they sum to the final residual at ``position``.
        normed: ``[components, batch, d_model]`` the same writes through the final norm frozen
            at this run's scale (``P(c) * s * g``); the ``bias`` row holds the norm's bias.
            ``normed.sum(0) = final_norm(resid_final)``.
        logits: ``[batch, vocab]`` the model's own logits at ``position``.
        position: the position (non-negative).
    """

    frame: pd.DataFrame
    vectors: torch.Tensor
    normed: torch.Tensor
    logits: torch.Tensor
    position: int


def _frozen_norm(norm, x: torch.Tensor, d: int, name: str):
    """``(g, centers, s, b)`` freezing ``norm`` at its input ``x [batch, d]``: ``norm(x) =
    P(x) * s * g + b`` with ``s [batch, 1]`` (None for an identity/missing norm)."""
    fold = norm_fold(norm, d, name)
    if fold is None:
        return None
    g, centers = fold
    comp = raw(norm)
    param = next(iter(comp.parameters()), None)
    xf = x if param is None else x.to(param.dtype)
    y = comp(xf).double()
    b = comp(torch.zeros_like(xf[:1])).double()[0]
    px = x.double() - x.double().mean(-1, keepdim=True) if centers else x.double()
    u = px * g.double().to(x.device)
    s = ((y - b) * u).sum(-1, keepdim=True) / (u * u).sum(-1, keepdim=True).clamp_min(1e-300)
    return g.double().to(x.device), centers, s, b


def _apply(frozen, c: torch.Tensor) -> torch.Tensor:
    """A component write ``c [..., batch, d]`` through a frozen norm (without its bias)."""
    if frozen is None:
        return c
    g, centers, s, _ = frozen
    c = c - c.mean(-1, keepdim=True) if centers else c
    return c * s * g


@torch.no_grad()
def residual_decomposition(model, tokens, position: int = -1) -> Decomposition:
    """Split the final residual stream at ``position`` into component writes.

    Args:
        tokens: ``[batch, seq]`` ids or prompt(s).
        position: the position (negative counts from the end).

    Returns:
        :class:`Decomposition` (``frame``, ``vectors``/``normed`` ``[components, batch,
        d_model]`` float64, ``logits [batch, vocab]``).

    Raises:
        Refused: encoders; a model whose component writes do not add up to its residual.
    """
    check_logits(model, "residual_decomposition")
    tokens = to_tokens(model, tokens)
    (p,) = check_positions(position, tokens.shape[1], "residual_decomposition")
    fam, L, d = family_of(model), model.cfg.n_layers, model.cfg.d_model
    names = ["blocks.0.hook_resid_pre"]
    for l in range(L):
        names += [f"blocks.{l}.hook_resid_pre", f"blocks.{l}.hook_resid_post",
                  f"blocks.{l}.attn.hook_z", f"blocks.{l}.hook_attn_out"]
    names = list(dict.fromkeys(names))
    got: dict[str, torch.Tensor] = {}

    def saver(n: str):
        def fn(act, hook):
            got[n] = act[:, p].detach().double()
        return fn

    with attach(model, [(n, saver(n)) for n in names]):
        logits = model(tokens)[:, p].double()

    rows, vecs = [("embed", None, None)], [got["blocks.0.hook_resid_pre"]]
    for l in range(L):
        z = got[f"blocks.{l}.attn.hook_z"]                            # [b, H, dh]
        heads = fam.head_outputs(l, z.float()[:, None]).double()[:, :, 0]   # [H, b, d]
        bias = fam.output_bias(l, z.float()[:, None]).double()[:, 0]        # [b, d]
        post = fam.post_attention_norm(l)
        attn_out = got[f"blocks.{l}.hook_attn_out"]
        if post is not None:
            frozen = _frozen_norm(post, heads.sum(0) + bias, d, f"layer {l} post-attention norm")
            heads, bias = _apply(frozen, heads), _apply(frozen, bias) + frozen[3]
        if float((heads.sum(0) + bias - attn_out).abs().max()) > \
                1e-4 * float(attn_out.abs().max().clamp_min(1e-6)):
            raise Refused(f"residual_decomposition: layer {l}'s head writes do not add up to "
                          f"its attention output (hook_attn_out) on {model.cfg.model_name}")
        rows += [(f"L{l}H{h}", l, h) for h in range(len(heads))]
        vecs += list(heads)
        if float(bias.abs().max()) > 0:
            rows.append((f"L{l}.attn_bias", l, None))
            vecs.append(bias)
        mlp = got[f"blocks.{l}.hook_resid_post"] - got[f"blocks.{l}.hook_resid_pre"] - attn_out
        if f"blocks.{l}.hook_mlp_out" in model.hook_dict:
            rows.append((f"L{l}.mlp", l, None))
            vecs.append(mlp)
    vectors = torch.stack(vecs)
    final = got[f"blocks.{L - 1}.hook_resid_post"]
    scale = float(final.abs().max().clamp_min(1e-6))
    if float((vectors.sum(0) - final).abs().max()) > 1e-4 * scale:
        raise Refused(f"residual_decomposition: the component writes of "
                      f"{model.cfg.model_name} do not add up to its final residual stream "
                      f"(a block writes something other than attention + MLP)")
    frozen = _frozen_norm(fam.final_norm(), final, d, "final norm")
    normed = _apply(frozen, vectors)
    norm_bias = torch.zeros_like(final) if frozen is None else frozen[3].expand_as(final)
    rows.append(("bias", None, None))
    vectors = torch.cat([vectors, torch.zeros_like(final)[None]])
    normed = torch.cat([normed, norm_bias[None]])
    frame = pd.DataFrame(rows, columns=["component", "layer", "head"]).astype(
        {"layer": "Int64", "head": "Int64"})
    return Decomposition(frame=frame, vectors=vectors, normed=normed, logits=logits, position=p)


def answer_ids(model, answer, batch: int, what: str = "answer") -> torch.Tensor:
    """An answer (token id, single-token string, or a list of those, one per example) ->
    ``[batch]`` ids. A string that is not one token, or an id outside the vocabulary, is an
    InputError naming it."""
    items = list(answer) if isinstance(answer, (list, tuple, torch.Tensor)) else [answer] * batch
    if len(items) != batch:
        raise InputError(f"{what}: {len(items)} entries for a batch of {batch}")
    ids = []
    for a in items:
        if isinstance(a, torch.Tensor):
            a = int(a)
        if isinstance(a, str):
            tok = getattr(model, "tokenizer", None)
            if tok is None:
                raise InputError(f"{what} {a!r}: the model has no tokenizer; give a token id")
            enc = tok.encode(a, add_special_tokens=False)
            if len(enc) != 1:
                raise InputError(f"{what} {a!r} is {len(enc)} tokens for this tokenizer "
                                 f"({enc}); give a single token (e.g. with its leading space) "
                                 f"or its id")
            a = enc[0]
        if not isinstance(a, int) or not 0 <= a < model.cfg.d_vocab:
            raise InputError(f"{what} {a!r} is not a token id in 0..{model.cfg.d_vocab - 1}")
        ids.append(a)
    return torch.tensor(ids)


@torch.no_grad()
def direct_logit_attribution(model, tokens, answer, contrast=None, position: int = -1,
                             per_example: bool = False,
                             components: Sequence[str] | None = None) -> pd.DataFrame:
    """Each component's direct contribution to ``logit[answer] - logit[contrast]`` (or
    ``logit[answer]``) at ``position``, in logit units, with the final norm (and any
    post-attention norm and final soft-cap) frozen at this run's values (see module doc).

    Args:
        tokens: ``[batch, seq]`` ids or prompt(s).
        answer, contrast: a token id or single-token string, or one per example.
        position: where the logit is read (negative from the end).
        per_example: one row per (example, component) with an ``example`` column, instead
            of the mean over the batch.
        components: keep only these rows (names as in the ``component`` column, e.g.
            ``["L3H2", "L3.mlp"]``); the kept rows no longer sum to the logit difference.

    Returns:
        DataFrame ``component, layer, head, value`` (``layer``/``head`` nullable ints). Its
        ``value`` column sums to the model's own logit difference (per example, or the
        batch mean); ``df.attrs["logit_diff"]`` holds that difference per example,
        ``df.attrs["total"]`` the sum of all rows per example (before ``components``).

    Raises:
        InputError: an answer that is not one token, a position outside the prompt.
        UnknownName: a name in ``components`` that is not a component of this model.
        Refused: encoders.
    """
    check_logits(model, "direct_logit_attribution")
    tokens = to_tokens(model, tokens)
    dec = residual_decomposition(model, tokens, position)
    if components is not None:
        components = [components] if isinstance(components, str) else list(components)
        known = set(dec.frame.component)
        unknown = [c for c in components if c not in known]
        if unknown:
            raise UnknownName(
                f"direct_logit_attribution: unknown component(s) {unknown} for "
                f"{model.cfg.model_name}; components are embed, L{{layer}}H{{head}} (layers "
                f"0..{model.cfg.n_layers - 1}, heads 0..{model.cfg.n_heads - 1}), "
                f"L{{layer}}.mlp, L{{layer}}.attn_bias where the layer has one, and bias")
    b = tokens.shape[0]
    fam = family_of(model)
    a_ids = answer_ids(model, answer, b)
    W = fam.unembedding().weight.detach().double()                 # [vocab, d]
    ub = fam.unembedding().bias
    cap = fam.final_softcap()

    def share(ids: torch.Tensor) -> torch.Tensor:                  # [components, batch]
        w = W[ids.to(W.device)]                                    # [b, d]
        vals = (dec.normed * w[None]).sum(-1)
        if ub is not None:
            vals[-1] += ub.detach().double()[ids.to(ub.device)]
        if cap is not None:                        # frozen ratio logit / pre-cap logit
            u = vals.sum(0)
            logit = torch.tanh(u / cap) * cap
            vals = vals * torch.where(u == 0, torch.ones_like(u), logit / u)
        return vals

    vals = share(a_ids)
    diff = dec.logits[torch.arange(b), a_ids.to(dec.logits.device)]
    if contrast is not None:
        c_ids = answer_ids(model, contrast, b, "contrast")
        vals = vals - share(c_ids)
        diff = diff - dec.logits[torch.arange(b), c_ids.to(dec.logits.device)]
    if per_example:
        frames = []
        for i in range(b):
            f = dec.frame.copy()
            f.insert(0, "example", i)
            f["value"] = vals[:, i].cpu().numpy()
            frames.append(f)
        df = pd.concat(frames, ignore_index=True)
    else:
        df = dec.frame.copy()
        df["value"] = vals.mean(1).cpu().numpy()
    df.attrs.update(logit_diff=[float(x) for x in diff], position=dec.position,
                    total=[float(x) for x in vals.sum(0)])
    if components is not None:
        df = df[df.component.isin(components)].reset_index(drop=True)
    return df


def head_matrix(df: pd.DataFrame, n_layers: int, n_heads: int) -> torch.Tensor:
    """The head rows of a DLA table as ``[n_layers, n_heads]`` (NaN where absent)."""
    out = torch.full((n_layers, n_heads), float("nan"))
    heads = df[df["head"].notna() & df["component"].str.match(r"^L\d+H\d+$")]
    for r in heads.itertuples():
        out[int(r.layer), int(r.head)] = float(r.value)
    return out


__all__: Sequence[str] = ("Decomposition", "answer_ids", "direct_logit_attribution",
                          "head_matrix", "residual_decomposition")
