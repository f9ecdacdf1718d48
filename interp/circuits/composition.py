"""Q-, K- and V-composition scores between attention heads (Elhage et al. 2021).

For an earlier head ``a`` (OV circuit ``W_OV^a = W_V^a W_O^a``, ``d_model x d_model``) and a later
head ``b``, with ``W_QK^b = W_Q^b W_K^b^T``::

    Q-composition  ||W_OV^a W_QK^b||_F   / (||W_OV^a||_F ||W_QK^b||_F)
    K-composition  ||W_OV^a W_QK^b^T||_F / (||W_OV^a||_F ||W_QK^b||_F)
    V-composition  ||W_OV^a W_OV^b||_F   / (||W_OV^a||_F ||W_OV^b||_F)

(the row-vector convention of TransformerLens: head ``a`` writes ``x W_OV^a`` into the
residual stream; K-composition means head ``b``'s keys read it). Every product has rank
<= d_head, so the norms are computed exactly from ``d_head x d_head`` factors: with
``W = Q R`` (QR of a ``d_model x d_head`` matrix), ``||W_1 C W_2^T||_F = ||R_1 C R_2^T||_F``.
Random heads score about ``1/sqrt(d_model)``-ish; compare scores against the distribution over
all pairs, not against zero.

What the matrices fold in, per family (:func:`interp.weights.head_weights` has the table):
the scale (and, for LayerNorms, the centering) of ``ln1`` on W_Q/W_K/W_V; the q/k norm scale
on W_Q/W_K (Qwen3, Gemma 3); the post-attention norm scale on W_O (Gemma 2/3). Each norm's
per-position divisor (RMS or standard deviation) multiplies a product by a positive scalar,
which cancels in these ratios, so the scores are exact for the linear maps the model applies;
biases and RoPE are left out (W_Q W_K^T is the score form at relative offset 0), as in the
paper. Refused (:class:`~interp.errors.Refused`, a ``NotImplementedError``, naming the
layer): Q/K-composition on layers with attention soft-capping (Gemma 2: the scores pass
``cap * tanh(s / cap)``, not a scalar multiple; ``ignore=("softcap",)`` scores the pre-cap
form knowingly; V-composition does not involve the scores and is computed), and encoders
(post-LN: ``ln1`` follows attention).
Tested per family against the definition computed from the HF modules' own weights
(``tests/circuits/test_tools_families.py``).
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch

from interp.errors import InputError, Refused
from interp.weights import head_weights

MODES = ("Q", "K", "V")


def _r(w: torch.Tensor) -> torch.Tensor:
    """A ``[..., d_head, d_head]`` factor R with ``R^T R = W^T W`` for ``W [..., d_model, d_head]``
    (so ``||W X||_F = ||R X||_F`` for any X): the transposed Cholesky factor of the Gram
    matrix, in float64 with a tiny ridge for rank-deficient heads (on the CPU: small algebra,
    and float64 is not on every accelerator)."""
    w = w.cpu().double()
    g = w.transpose(-1, -2) @ w
    ridge = 1e-12 * g.diagonal(dim1=-2, dim2=-1).mean(-1).clamp_min(1e-30)[..., None, None]
    eye = torch.eye(g.shape[-1], dtype=g.dtype)
    return torch.linalg.cholesky(g + ridge * eye).transpose(-1, -2)


def _refuse(model, w, mode: str, ignore: Sequence[str]) -> None:
    from interp.families import describe_layers, refuse

    if w.direct_path is not None:
        raise Refused(f"composition_scores: {w.direct_path}")
    if mode in ("Q", "K") and "softcap" not in ignore:
        for spec in describe_layers(model):
            if spec.softcap is not None and spec.layer > 0:
                raise refuse(spec, "composition_scores", "attention logit soft-capping",
                             f"{mode}-composition measures W_QK, and the scores pass "
                             f"cap * tanh(s / cap), which is not a scalar multiple of it; "
                             f"pass ignore=('softcap',) to score the pre-cap form knowingly")


@torch.no_grad()
def composition_scores(model, mode: str = "K", ignore: Sequence[str] = ()) -> pd.DataFrame:
    """Composition scores of every (earlier head, later head) pair.

    Args:
        model: a hooked model.
        mode: ``"Q"``, ``"K"`` or ``"V"``.
        ignore: ``("softcap",)`` scores Q/K-composition of soft-capped layers from the pre-cap
            W_QK (refused otherwise, see module doc).

    Returns:
        DataFrame with columns ``src_layer, src_head, dst_layer, dst_head, score`` for every
        pair with ``src_layer < dst_layer``.

    Raises:
        Refused: (a ``NotImplementedError``) encoders; Q/K on soft-capped layers unless
            ignored.
        InputError: an unknown ``mode``.
    """
    if mode not in MODES:
        raise InputError(f"mode must be one of {MODES}, got {mode!r}")
    w = head_weights(model)
    _refuse(model, w, mode, ignore)
    L, H = w.n_layers, w.n_heads
    W_O = w.W_O.cpu().double()                                  # [L, H, dh, d]
    # The big d_model-wide contraction runs in float32 on the model's device; the small
    # dh x dh algebra in float64 on the CPU.
    dev = w.W_O.device
    R_V, R_Q, R_K = _r(w.W_V), _r(w.W_Q), _r(w.W_K)             # [L, H, dh, dh]
    R_O = _r(W_O.transpose(-1, -2))                             # for W_O^T
    R_V32 = R_V.float().to(dev)
    ov_norm = torch.linalg.matrix_norm(R_V @ R_O.transpose(-1, -2))          # ||W_V W_O||
    qk_norm = torch.linalg.matrix_norm(R_Q @ R_K.transpose(-1, -2))          # ||W_Q W_K^T||
    rows = []
    for dst in range(1, L):
        if mode == "Q":      # W_V^a (W_O^a W_Q^b) W_K^b^T
            mid_w, right_r, dst_norm = w.W_Q[dst], R_K[dst], qk_norm[dst]
        elif mode == "K":    # W_V^a (W_O^a W_K^b) W_Q^b^T
            mid_w, right_r, dst_norm = w.W_K[dst], R_Q[dst], qk_norm[dst]
        else:                # W_V^a (W_O^a W_V^b) W_O^b
            mid_w, right_r, dst_norm = w.W_V[dst], R_O[dst], ov_norm[dst]
        dh_ = w.W_O.shape[2]
        src_o = w.W_O[:dst].reshape(dst * H * dh_, -1)           # [(dst H dh), d] float32
        mid = src_o @ mid_w.permute(1, 0, 2).reshape(mid_w.shape[1], H * dh_)  # one GEMM
        mid = mid.view(dst, H, dh_, H, dh_).permute(0, 1, 3, 2, 4)   # [dst, H, Hb, dh, dh]
        prod = R_V32[:dst, :, None] @ mid @ right_r.float().to(dev).transpose(-1, -2)[None, None]
        num = torch.linalg.matrix_norm(prod).double().cpu()      # [dst, H, Hb]
        score = num / (ov_norm[:dst, :, None] * dst_norm[None, None, :]).clamp_min(1e-30)
        sl, sh, dh = torch.meshgrid(torch.arange(dst), torch.arange(H), torch.arange(H),
                                    indexing="ij")
        rows.append(pd.DataFrame({"src_layer": sl.flatten().numpy(),
                                  "src_head": sh.flatten().numpy(),
                                  "dst_layer": dst, "dst_head": dh.flatten().numpy(),
                                  "score": score.flatten().numpy()}))
    return pd.concat(rows, ignore_index=True)


def composition_dense(model, mode: str = "K") -> torch.Tensor:
    """Reference: the same scores from explicit ``d_model x d_model`` matrices, as a tensor
    ``[L, H, L, H]`` (NaN where ``src_layer >= dst_layer``). Slow; for tests and small models."""
    w = head_weights(model)
    L, H = w.n_layers, w.n_heads
    OV = (w.W_V @ w.W_O).double().cpu()                         # [L, H, d, d]
    QK = (w.W_Q @ w.W_K.transpose(-1, -2)).double().cpu()
    out = torch.full((L, H, L, H), float("nan"), dtype=torch.float64)
    for a in range(L):
        for b in range(a + 1, L):
            for i in range(H):
                for j in range(H):
                    right = {"Q": QK[b, j], "K": QK[b, j].T, "V": OV[b, j]}[mode]
                    num = torch.linalg.matrix_norm(OV[a, i] @ right)
                    out[a, i, b, j] = num / (torch.linalg.matrix_norm(OV[a, i])
                                             * torch.linalg.matrix_norm(right))
    return out
