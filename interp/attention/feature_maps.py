"""Feature maps ``phi`` for linear attention, and their registry.

Linear attention replaces ``exp(q.k * scale)`` by a kernel ``phi(q) . phi(k)`` so that
``sum_j phi(q_i).phi(k_j) v_j = phi(q_i) (sum_j phi(k_j) v_j^T)`` can be computed with a carried
``[feature_dim, d_head_v]`` state instead of an N x N matrix.

Registered maps (``FEATURE_MAPS.names()``):

- ``elu``: ``elu(x) + 1`` (Katharopoulos et al. 2020). ``f = d``.
- ``relu``: ``relu(x)``. ``f = d``. Rows can be all zero; the eps in the denominator keeps the
  output finite (zero) there.
- ``performer``: FAVOR+ positive orthogonal random features (Choromanski et al. 2021),
  ``phi(x) = exp(w_r . x' - |x'|^2 / 2) / sqrt(m)``, ``x' = x * sqrt(scale)``, so that
  ``E[phi(q).phi(k)] = exp(q.k * scale)``. ``m = n_features``; features are drawn from ``seed``
  (same on every device). Query features subtract their row max (a per-query constant, which the
  normalisation cancels); key features are bounded by ``exp(|w|^2 / 2)`` and kept unshifted so
  the state can be carried across calls.
- ``cosformer``: ``relu`` with the re-weighting ``cos(pi/2 * (i - j) / M)`` (Qin et al. 2022),
  decomposed as ``cos(a_i)cos(a_j) + sin(a_i)sin(a_j)``, ``a_i = pi/2 * i / M``, so
  ``phi(x_i) = [relu(x_i) cos a_i, relu(x_i) sin a_i]`` (``f = 2d``). ``M`` is ``max_len``, or the
  call's length when ``max_len`` is None (then a carried state cannot be resumed).
- ``taylor``: Based's 2nd-order Taylor kernel ``1 + s + s^2/2``, ``s = q.k * scale``, via
  ``phi(x) = [1, x', vec(x' x'^T) / sqrt(2)]`` (``f = 1 + p + p^2``), ``x' = x P * sqrt(scale)``
  with an optional learnable projection ``P [d_head, feature_dim]`` (``p = feature_dim or d``).
- ``hedgehog``: learnable softmax-like map (Zhang et al. 2024): ``z = x' W + b``,
  ``phi = [softmax(z), softmax(-z)]`` (``f = 2 * feature_dim``), ``W`` initialised to the identity
  (random when ``feature_dim != d_head``). One map shared by all heads.

Every map's ``forward(x, scale=, positions=, length=, is_query=)`` takes ``x [..., n, d]`` in
float32/64 and returns ``[..., n, f]``; ``kernel(q, k, ...)`` is the reference kernel matrix
``[..., nq, nk]`` written from the definition (used by ``naive``).
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from interp.attention.registry import Registry, keyword_options
from interp.errors import InputError

FEATURE_MAPS: Registry[Any] = Registry("feature map")


class FeatureMap(nn.Module):
    """Base class. Subclasses take ``d_head`` positionally and their options keyword-only."""

    name: str = "?"
    #: True when a carried state cannot be resumed (the map depends on the total length).
    needs_fixed_length: bool = False
    #: True when the map has parameters sized by ``d_head``.
    sized: bool = False

    def __init__(self, d_head: int) -> None:
        super().__init__()
        self.d_head = d_head

    def dim(self, d_head: int) -> int:
        """Feature dimension ``f`` for heads of size ``d_head``."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {opt: getattr(self, opt) for opt in keyword_options(type(self))}

    def forward(
        self, x: Tensor, *, scale: float, positions: Tensor, length: int, is_query: bool
    ) -> Tensor:
        """``x [..., n, d]`` -> ``[..., n, f]``; ``positions [n]`` absolute token positions."""
        raise NotImplementedError

    def forward_into(
        self, x: Tensor, out: Tensor, *, scale: float, positions: Tensor, length: int,
        is_query: bool,
    ) -> Tensor:
        """``forward(x)`` written into ``out`` (its shape ``[..., n, f]``, any strides: the chunked
        linear form hands views of its chunk buffers) and returned. Maps whose features are an
        elementwise function of ``x`` override it to skip the temporary."""
        return out.copy_(self(x, scale=scale, positions=positions, length=length,
                              is_query=is_query))

    def kernel(
        self, q: Tensor, k: Tensor, *, scale: float, positions: Tensor, length: int
    ) -> Tensor:
        """Reference kernel ``[..., n, n]`` between ``q [..., n, d]`` and ``k [..., n, d]``."""
        fq = self(q, scale=scale, positions=positions, length=length, is_query=True)
        fk = self(k, scale=scale, positions=positions, length=length, is_query=False)
        return torch.matmul(fq, fk.transpose(-1, -2))

    def check_d_head(self, d: int) -> None:
        if self.sized and d != self.d_head:
            raise InputError(
                f"feature map {self.name!r} was built for d_head={self.d_head} but got "
                f"d_head={d}; pass d_head={d} to interp.attention.get(...)"
            )


@FEATURE_MAPS.register("elu")
class EluFeatureMap(FeatureMap):
    def __init__(self, d_head: int) -> None:
        super().__init__(d_head)

    def dim(self, d_head: int) -> int:
        return d_head

    def forward(self, x, *, scale, positions, length, is_query):  # noqa: D102
        return F.elu(x) + 1.0

    def forward_into(self, x, out, *, scale, positions, length, is_query):  # noqa: D102
        # elu(x) + 1 = exp(min(x, 0)) + max(x, 0): equal up to rounding of the exp (x <= 0) and
        # exact for x > 0; ~30% faster on the CPU than elu's expm1 path plus a copy
        return torch.clamp(x, max=0.0, out=out).exp_().add_(torch.clamp(x, min=0.0))


@FEATURE_MAPS.register("relu")
class ReluFeatureMap(FeatureMap):
    def __init__(self, d_head: int) -> None:
        super().__init__(d_head)

    def dim(self, d_head: int) -> int:
        return d_head

    def forward(self, x, *, scale, positions, length, is_query):  # noqa: D102
        return F.relu(x)

    def forward_into(self, x, out, *, scale, positions, length, is_query):  # noqa: D102
        return torch.clamp(x, min=0.0, out=out)


def orthogonal_gaussian(m: int, d: int, seed: int) -> Tensor:
    """``[m, d]`` float64 rows: blocks of orthonormal directions with chi(d)-distributed norms,
    so each row is marginally N(0, I_d) (Performer ORFs). Drawn on CPU from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    blocks = []
    for _ in range(math.ceil(m / d)):
        qmat, r = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
        qmat = qmat * torch.sign(torch.diagonal(r))  # sign fix: Haar-distributed directions
        blocks.append(qmat.T)
    w = torch.cat(blocks, 0)[:m]
    norms = torch.randn(m, d, generator=g, dtype=torch.float64).norm(dim=1, keepdim=True)
    return w * norms


@FEATURE_MAPS.register("performer")
class PerformerFeatureMap(FeatureMap):
    def __init__(self, d_head: int, *, n_features: int = 64, seed: int = 0) -> None:
        super().__init__(d_head)
        if not (isinstance(n_features, int) and n_features >= 1):
            raise InputError(f"n_features must be a positive int, got {n_features!r}")
        self.n_features = n_features
        self.seed = int(seed)
        self._omega: dict[tuple, Tensor] = {}

    def dim(self, d_head: int) -> int:
        return self.n_features

    def omega(self, d: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        """``[m, d]`` random features, deterministic in ``(seed, d)``, cached per device/dtype."""
        key = (d, dtype, str(device))
        if key not in self._omega:
            self._omega[key] = orthogonal_gaussian(self.n_features, d, self.seed).to(device, dtype)
        return self._omega[key]

    def forward(self, x, *, scale, positions, length, is_query):  # noqa: D102
        x = x * math.sqrt(scale)
        proj = torch.matmul(x, self.omega(x.shape[-1], x.dtype, x.device).T)  # [..., n, m]
        if is_query:
            shift = proj.detach().amax(dim=-1, keepdim=True)  # per-query constant, cancels
        else:
            shift = 0.5 * (x * x).sum(-1, keepdim=True)
        return torch.exp(proj - shift) / math.sqrt(self.n_features)


@FEATURE_MAPS.register("cosformer")
class CosformerFeatureMap(FeatureMap):
    def __init__(self, d_head: int, *, max_len: int | None = None) -> None:
        super().__init__(d_head)
        if max_len is not None and not (isinstance(max_len, int) and max_len >= 1):
            raise InputError(f"max_len must be a positive int or None, got {max_len!r}")
        self.max_len = max_len
        self.needs_fixed_length = max_len is None

    def dim(self, d_head: int) -> int:
        return 2 * d_head

    def _m(self, positions: Tensor, length: int) -> int:
        m = self.max_len if self.max_len is not None else length
        if positions.numel() and int(positions.max()) >= m:
            raise InputError(
                f"cosformer position {int(positions.max())} >= max_len {m}; "
                "raise max_len so that every position is below it"
            )
        return m

    def forward(self, x, *, scale, positions, length, is_query):  # noqa: D102
        angle = (math.pi / 2) * positions.to(x.dtype) / self._m(positions, length)  # [n]
        r = F.relu(x)
        return torch.cat([r * torch.cos(angle)[:, None], r * torch.sin(angle)[:, None]], dim=-1)

    def kernel(self, q, k, *, scale, positions, length):  # noqa: D102
        m = self._m(positions, length)
        rel = positions[:, None].to(q.dtype) - positions[None, :].to(q.dtype)  # [n, n] i - j
        return torch.matmul(F.relu(q), F.relu(k).transpose(-1, -2)) * torch.cos(
            (math.pi / 2) * rel / m
        )


@FEATURE_MAPS.register("taylor")
class TaylorFeatureMap(FeatureMap):
    def __init__(self, d_head: int, *, feature_dim: int | None = None, seed: int = 0) -> None:
        super().__init__(d_head)
        if feature_dim is not None and not (isinstance(feature_dim, int) and feature_dim >= 1):
            raise InputError(f"feature_dim must be a positive int or None, got {feature_dim!r}")
        self.feature_dim = feature_dim
        self.seed = int(seed)
        self.sized = feature_dim is not None
        if feature_dim is not None:
            g = torch.Generator().manual_seed(self.seed)
            w = torch.randn(d_head, feature_dim, generator=g) / math.sqrt(d_head)
            self.proj = nn.Parameter(w)  # [d_head, feature_dim]

    def dim(self, d_head: int) -> int:
        p = self.feature_dim or d_head
        return 1 + p + p * p

    def _project(self, x: Tensor) -> Tensor:
        if self.feature_dim is None:
            return x
        self.check_d_head(x.shape[-1])
        return torch.matmul(x, self.proj.to(x.dtype))

    def forward(self, x, *, scale, positions, length, is_query):  # noqa: D102
        x = self._project(x) * math.sqrt(scale)  # [..., n, p]
        outer = (x[..., :, None] * x[..., None, :]).flatten(-2) / math.sqrt(2.0)
        return torch.cat([torch.ones_like(x[..., :1]), x, outer], dim=-1)

    def kernel(self, q, k, *, scale, positions, length):  # noqa: D102
        s = torch.matmul(self._project(q), self._project(k).transpose(-1, -2)) * scale
        return 1.0 + s + 0.5 * s * s


@FEATURE_MAPS.register("hedgehog")
class HedgehogFeatureMap(FeatureMap):
    sized = True

    def __init__(self, d_head: int, *, feature_dim: int | None = None, seed: int = 0) -> None:
        super().__init__(d_head)
        if feature_dim is not None and not (isinstance(feature_dim, int) and feature_dim >= 1):
            raise InputError(f"feature_dim must be a positive int or None, got {feature_dim!r}")
        self.feature_dim = feature_dim
        self.seed = int(seed)
        p = feature_dim or d_head
        if p == d_head:
            w = torch.eye(d_head)
        else:
            w = torch.randn(d_head, p, generator=torch.Generator().manual_seed(self.seed))
            w = w / math.sqrt(d_head)
        self.weight = nn.Parameter(w)  # [d_head, p]
        self.bias = nn.Parameter(torch.zeros(p))  # [p]

    def dim(self, d_head: int) -> int:
        return 2 * (self.feature_dim or self.d_head)

    def forward(self, x, *, scale, positions, length, is_query):  # noqa: D102
        self.check_d_head(x.shape[-1])
        z = torch.matmul(x * math.sqrt(scale), self.weight.to(x.dtype)) + self.bias.to(x.dtype)
        return torch.cat([torch.softmax(z, dim=-1), torch.softmax(-z, dim=-1)], dim=-1)
