"""Independent references for the logit lens and direct logit attribution, computed from a
plain HF model (eager attention) with PyTorch hooks on its own modules: no interp code, no
TransformerLens. Written from the HF modules' definitions:

- a head's write = the ``o_proj`` input's slice of that head times the matching columns of
  ``o_proj`` (GPT-2's ``Conv1D`` stores the transposed weight);
- RMSNorm ``y = x / sqrt(mean(x^2) + eps) * g`` (Gemma: ``* (1 + w)``), LayerNorm ``y = (x -
  mean) / sqrt(var + eps) * w + b``; "frozen" = the scale ``1/sqrt(...)`` of this run's input;
- the final soft-cap ``c * tanh(u / c)`` (Gemma 2: ``final_logit_softcapping``).
"""
from __future__ import annotations

import torch
from torch import nn

GEMMA = ("gemma2", "gemma3", "gemma3_text")


def _kind(hf) -> str:
    return hf.config.model_type


def layers(hf):
    base = hf.base_model
    for attr in ("layers", "h"):
        if hasattr(base, attr):
            return list(getattr(base, attr))
    raise AssertionError(f"no layer list on {type(base).__name__}")


def out_proj(layer):
    for path in ("self_attn.o_proj", "attn.c_proj", "attention.dense"):
        mod = layer
        try:
            for part in path.split("."):
                mod = getattr(mod, part)
            return mod
        except AttributeError:
            continue
    raise AssertionError(f"no attention output projection on {type(layer).__name__}")


def final_norm(hf):
    base = hf.base_model
    for attr in ("norm", "ln_f", "final_layer_norm"):
        if hasattr(base, attr):
            return getattr(base, attr)
    raise AssertionError(f"no final norm on {type(base).__name__}")


def post_norms(hf):
    """Gemma 2/3's per-layer post-attention norms (elsewhere ``post_attention_layernorm`` is
    the norm before the MLP, not after attention)."""
    if _kind(hf) not in GEMMA:
        return None
    return [layer.post_attention_layernorm for layer in layers(hf)]


def softcap(hf) -> float | None:
    cap = getattr(hf.config, "final_logit_softcapping", None)
    return float(cap) if cap else None


def frozen(norm: nn.Module, x: torch.Tensor, gemma: bool):
    """``c -> P(c) * s(x) * g``: the norm as a linear map at this input ``x [..., d]``."""
    x = x.double()
    if isinstance(norm, nn.LayerNorm):
        s = 1 / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + norm.eps)
        g = norm.weight.double()
        return lambda c: (c - c.mean(-1, keepdim=True)) * s * g
    eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", None))
    s = 1 / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    g = norm.weight.double() + 1 if gemma else norm.weight.double()
    return lambda c: c * s * g


@torch.no_grad()
def run(hf, ids: torch.Tensor) -> dict:
    """One forward of ``ids [batch, seq]``: logits, hidden states, and the inputs of every
    attention output projection, post-attention norm and the final norm."""
    got: dict = {"o_in": {}, "post_in": {}}
    handles = []

    def keep(store, key):
        def fn(module, args):
            store[key] = args[0].detach().double()
        return fn

    for l, layer in enumerate(layers(hf)):
        handles.append(out_proj(layer).register_forward_pre_hook(keep(got["o_in"], l)))
    for l, norm in enumerate(post_norms(hf) or []):
        handles.append(norm.register_forward_pre_hook(keep(got["post_in"], l)))
    handles.append(final_norm(hf).register_forward_pre_hook(keep(got, "final_in")))
    try:
        out = hf(ids, output_hidden_states=True)
    finally:
        for h in handles:
            h.remove()
    got["logits"] = out.logits.double()
    got["hidden"] = [h.double() for h in out.hidden_states]
    return got


@torch.no_grad()
def lens(hf, hidden: torch.Tensor) -> torch.Tensor:
    """HF's final norm, LM head and soft-cap applied to a residual ``[..., d]``."""
    norm = final_norm(hf)
    u = hf.get_output_embeddings()(norm(hidden.to(norm.weight.dtype))).double()
    cap = softcap(hf)
    return u if cap is None else cap * torch.tanh(u / cap)


@torch.no_grad()
def head_dla(hf, got: dict, position: int, answer: torch.Tensor,
             contrast: torch.Tensor | None) -> torch.Tensor:
    """``[n_layers, n_heads]`` batch-mean direct logit attribution of every head: the head's
    write (through the frozen post-attention norm, then the frozen final norm) dotted with
    the unembedding of answer minus contrast, each token's share scaled by its frozen
    soft-cap ratio ``logit / pre-cap logit``."""
    gemma = _kind(hf) in GEMMA
    cfg = hf.config
    H = cfg.num_attention_heads
    dh = getattr(cfg, "head_dim", None) or cfg.hidden_size // H
    W_U = hf.get_output_embeddings().weight.double()
    b = answer.shape[0]
    x_f = got["final_in"][:, position]
    fin = frozen(final_norm(hf), x_f, gemma)
    cap = softcap(hf)
    normed_final = final_norm(hf)(x_f.to(W_U.dtype).float()).double()
    u = normed_final @ W_U.T                                       # [b, vocab] pre-cap

    def ratio(ids):
        uu = u[torch.arange(b), ids]
        return torch.ones_like(uu) if cap is None else cap * torch.tanh(uu / cap) / uu

    posts = post_norms(hf)
    out = torch.zeros(len(layers(hf)), H, dtype=torch.float64)
    for l, layer in enumerate(layers(hf)):
        proj = out_proj(layer)
        z = got["o_in"][l][:, position]                            # [b, H * dh]
        w = proj.weight.double()
        for h in range(H):
            sl = slice(h * dh, (h + 1) * dh)
            write = z[:, sl] @ (w[sl, :] if type(proj).__name__ == "Conv1D" else w[:, sl].T)
            if posts is not None:
                write = frozen(posts[l], got["post_in"][l][:, position], gemma)(write)
            write = fin(write)
            val = ratio(answer) * (write * W_U[answer]).sum(-1)
            if contrast is not None:
                val = val - ratio(contrast) * (write * W_U[contrast]).sum(-1)
            out[l, h] = val.mean()
    return out
