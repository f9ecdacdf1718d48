"""A small sequence model whose token mixer is any registered attention implementation.

Architecture
------------
::

    tokens [b, n] -> embed [b, n, d] (+ learned positions)
      -> n_layers x ( [x + ShortConv(x)];  x + Mixer(LN(x));  x + MLP(LN(x)) )
      -> LN -> unembed -> logits [b, n, vocab]

A layer's mixer is :class:`AttentionMixer` (q/k/v/o projections around one implementation from
``interp.attention.get(name, d_head=..., **options)``) or, for hybrids, several of them:

- ``combine = "sum"``: every layer holds all the listed mixers and adds their outputs
  (Based: linear attention with the Taylor map + a sliding window, summed);
- ``combine = "alternate"``: layer ``l`` holds mixer ``l % len(mixers)`` only.

The optional short convolution (``short_conv = k > 0``: a depthwise causal convolution over
the last ``k`` positions, as in Based and the Zoology MQAR models) hands each position its
predecessors' tokens directly; without it a softmax model must first learn a previous-token head
from the position embeddings, which takes far more steps than a CPU budget allows.

State size
----------
:meth:`RetrievalModel.state_size` is what the model carries when decoding ``seq_len`` tokens:
the sum over layers, mixers and heads of ``impl.state_size(seq_len)`` (floats per head). It is
the x axis of the recall-vs-state plot (Zoology / Based). A short convolution adds
``(k - 1) * d_model`` floats per layer (the last ``k - 1`` inputs it must remember).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from interp import attention
from interp.attention.registry import NotRegistered
from interp.config import ConfigError, require_at_least
from interp.errors import InputError


@dataclass(frozen=True)
class MixerSpec:
    """One attention implementation: a name from ``interp.attention.names()`` and its options
    (keyword options of ``interp.attention.get``; ``d_head`` is set by the model)."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        valid = attention.names()
        if self.name not in valid:
            raise NotRegistered(f"unknown attention implementation {self.name!r}; "
                             f"valid names: {', '.join(valid)}")
        if "d_head" in self.options:
            raise ConfigError("do not set d_head in mixer options: the model sets it to "
                             "d_model // n_heads")

    def build(self, d_head: int) -> attention.AttentionImpl:
        """``interp.attention.get(name, d_head=d_head, **options)``."""
        return attention.get(self.name, d_head=d_head, **self.options)

    def label(self) -> str:
        """``name`` plus ``key=value`` options, e.g. ``linear(feature_map=elu)``."""
        if not self.options:
            return self.name
        opts = ",".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return f"{self.name}({opts})"


@dataclass(frozen=True)
class RetrievalModelConfig:
    """Shape of a :class:`RetrievalModel` (strict config).

    Attributes:
        vocab_size: input and output vocabulary.
        d_model: residual width.
        n_layers: blocks.
        n_heads: heads per mixer; ``d_head = d_model // n_heads``.
        max_len: longest input (size of the learned position table).
        mixers: the attention implementations; several make a hybrid (see ``combine``).
        combine: ``"sum"`` (all mixers in every layer, outputs added) or ``"alternate"``.
        mlp_ratio: MLP hidden width / d_model (0 = attention only).
        positional: learned absolute position embeddings.
        short_conv: kernel size of a depthwise causal convolution at the start of every block
            (0 = none).
        seed: initialisation seed.
    """

    vocab_size: int
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 1
    max_len: int = 64
    mixers: list[MixerSpec] = field(default_factory=lambda: [MixerSpec("softmax")])
    combine: Literal["sum", "alternate"] = "sum"
    mlp_ratio: int = 4
    positional: bool = True
    short_conv: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        require_at_least(self, ("vocab_size", "d_model", "n_layers", "n_heads", "max_len"), 1)
        if self.short_conv < 0:
            raise ConfigError(f"short_conv must be >= 0, got {self.short_conv}")
        if self.mlp_ratio < 0:
            raise ConfigError(f"mlp_ratio must be >= 0, got {self.mlp_ratio}")
        if self.d_model % self.n_heads:
            raise ConfigError(f"d_model ({self.d_model}) must be a multiple of n_heads "
                             f"({self.n_heads})")
        if not self.mixers:
            raise ConfigError("mixers must name at least one attention implementation")
        object.__setattr__(self, "mixers", [
            m if isinstance(m, MixerSpec) else MixerSpec(**m) for m in self.mixers])

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    def layer_mixers(self, layer: int) -> list[MixerSpec]:
        """The mixers of block ``layer``."""
        if self.combine == "sum":
            return list(self.mixers)
        return [self.mixers[layer % len(self.mixers)]]


class AttentionMixer(nn.Module):
    """q/k/v/o projections around one attention implementation.

    ``forward(x [b, n, d_model]) -> [b, n, d_model]``; ``qkv(x)`` gives
    ``q, k, v [b, heads, n, d_head]`` (what probes hand to ``impl.pattern``).

    Under autocast (mixed-precision training, :class:`interp.models.toy.TrainPrecision`) the
    projections run in the low dtype but the attention implementation itself runs in float32
    with autocast off: softmax normalisers, masks filled with large negatives and the running
    sums of linear attention need float32 accumulation (and several implementations refuse
    mixed dtypes). Without autocast nothing is cast.
    """

    def __init__(self, d_model: int, n_heads: int, spec: MixerSpec) -> None:
        super().__init__()
        self.n_heads, self.d_head = n_heads, d_model // n_heads
        self.spec = spec
        self.qkv_proj = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out_proj = nn.Linear(d_model, d_model, bias=False)
        self.impl = spec.build(self.d_head)

    def qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, n, _ = x.shape
        qkv = self.qkv_proj(x).view(b, n, 3, self.n_heads, self.d_head)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [b, heads, n, d_head]
        return q, k, v

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x)
        if torch.is_autocast_enabled(x.device.type):
            with torch.autocast(x.device.type, enabled=False):
                out = self.impl(q.float(), k.float(), v.float(), causal=True)
        else:
            out = self.impl(q, k, v, causal=True)  # [b, heads, n, d_head]
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))

    def state_size(self, seq_len: int) -> int:
        """Floats carried over all heads when decoding ``seq_len`` tokens."""
        return self.n_heads * int(self.impl.state_size(seq_len))


class ShortConv(nn.Module):
    """Depthwise causal convolution, ``x [b, n, d] -> x + conv(x) [b, n, d]``; position ``t``
    sees ``x[t - k + 1 .. t]``."""

    def __init__(self, d_model: int, kernel: int) -> None:
        super().__init__()
        self.kernel = kernel
        self.conv = nn.Conv1d(d_model, d_model, kernel, groups=d_model, padding=kernel - 1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x.transpose(1, 2))[..., : x.shape[1]]  # [b, d, n], causal crop
        return x + y.transpose(1, 2)

    def state_size(self) -> int:
        return (self.kernel - 1) * self.conv.in_channels


class Block(nn.Module):
    """Pre-norm block: ``[x + conv(x)]``, ``x + sum(mixers(LN x))``, then ``x + MLP(LN x)``."""

    def __init__(self, cfg: RetrievalModelConfig, layer: int) -> None:
        super().__init__()
        self.conv = ShortConv(cfg.d_model, cfg.short_conv) if cfg.short_conv else None
        self.norm1 = nn.LayerNorm(cfg.d_model)
        self.mixers = nn.ModuleList(
            AttentionMixer(cfg.d_model, cfg.n_heads, spec) for spec in cfg.layer_mixers(layer))
        if cfg.mlp_ratio:
            self.norm2 = nn.LayerNorm(cfg.d_model)
            self.mlp = nn.Sequential(nn.Linear(cfg.d_model, cfg.mlp_ratio * cfg.d_model),
                                     nn.GELU(), nn.Linear(cfg.mlp_ratio * cfg.d_model, cfg.d_model))
        else:
            self.mlp = None

    def forward(self, x: Tensor) -> Tensor:
        if self.conv is not None:
            x = self.conv(x)
        h = self.norm1(x)
        x = x + sum(m(h) for m in self.mixers)
        if self.mlp is not None:
            x = x + self.mlp(self.norm2(x))
        return x


class RetrievalModel(nn.Module):
    """Embedding + blocks + unembedding (see the module docstring).

    ``forward(tokens LongTensor [b, n]) -> logits [b, n, vocab_size]`` with ``n <= max_len``.
    """

    def __init__(self, cfg: RetrievalModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
            self.pos = nn.Embedding(cfg.max_len, cfg.d_model) if cfg.positional else None
            self.blocks = nn.ModuleList(Block(cfg, layer) for layer in range(cfg.n_layers))
            self.norm = nn.LayerNorm(cfg.d_model)
            self.unembed = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
            for emb in (self.embed, self.pos):
                if emb is not None:
                    nn.init.normal_(emb.weight, std=0.02)

    def forward(self, tokens: Tensor) -> Tensor:
        if tokens.ndim != 2:
            raise InputError(f"tokens must be [batch, seq], got shape {tuple(tokens.shape)}")
        n = tokens.shape[1]
        if n > self.cfg.max_len:
            raise InputError(f"sequence of {n} tokens is longer than max_len={self.cfg.max_len}")
        x = self.embed(tokens)  # [b, n, d]
        if self.pos is not None:
            x = x + self.pos.weight[:n]
        for block in self.blocks:
            x = block(x)
        return self.unembed(self.norm(x))  # [b, n, vocab]

    def mixers(self) -> list[tuple[int, int, AttentionMixer]]:
        """``(layer, index within the layer, mixer)`` for every mixer, in order."""
        return [(l, i, m) for l, blk in enumerate(self.blocks) for i, m in enumerate(blk.mixers)]

    def state_size(self, seq_len: int) -> int:
        """Decoding state in floats: sum over layers, mixers and heads of ``impl.state_size``
        (plus the short convolutions' ``(k - 1) * d_model`` per layer)."""
        conv = sum(b.conv.state_size() for b in self.blocks if b.conv is not None)
        return conv + sum(m.state_size(seq_len) for _, _, m in self.mixers())

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
