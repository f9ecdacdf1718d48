"""A manual forward over a HF decoder's own layers, reading and writing a
:class:`~interp.streaming.cache.StreamingKVCache`.

Architecture
------------
``StreamingLM(hf_model)`` reuses the HF modules and replaces only what the cache changes:
where keys and values live, and which RoPE position each key gets. What each layer's attention
does is read once, in ``__init__``, from :func:`interp.families.rotary.describe_hf_layers`
(one :class:`~interp.families.LayerAttention` per layer), and everything about how the
family's block is wired comes from its adapter (:func:`interp.families.streaming_parts`:
embedding, per-layer q/k/v with norms, output projection + residual wiring + MLP, final norm
and LM head, the rotary module). Anything it cannot reproduce exactly is refused there with
:func:`interp.families.refuse` (:class:`~interp.errors.Refused` naming the family / layer
feature). One call of :meth:`StreamingLM.step` appends ``n`` tokens of ``batch`` streams::

    ids [batch, n] -> parts.embed -> each layer:
        q [b, H, n, d], k/v [b, KV, n, d] = layer.qkv(x)     (input norm, projections, q/k norm)
        cache.write(layer, slots, k, v)                      (k stored un-rotated)
        K = rope(cache keys [b, KV, L, d], cache positions)  (rotated at read time; table of
        Q = rope(q, query positions)                          the layer's type; partial rotary
                                                              rotates the leading dims only)
        scores = Q.K * scaling, tanh soft-capped (Gemma 2), masked: key kp visible from query
                 qp iff kp <= qp and qp - kp < window (the layer's own sliding window)
        x = layer.write(x, softmax(scores) V)                (o projection, residual wiring and
                                                              MLP: pre-norm or sandwich norms)
    -> parts.final (final norm, LM head, Gemma 2's final soft-capping) -> logits [batch, n, vocab]

RoPE tables come from the model's own rotary module (Gemma 3: called per layer type, local
and global theta), so they are the cos/sin HF computes. While no token has been evicted the
positions equal the stream positions, so logits equal HF's full forward (tested to 1e-4 for
every supported family in ``tests/streaming/test_families.py``). After eviction, positions are
cache positions (StreamingLLM), and a sliding-window layer masks by cache position too. Several
tokens per call are allowed only while nothing is evicted (prefill); afterwards one token per
call. Everything runs under ``torch.inference_mode``; buffers are allocated once per cache.

Supported families: :func:`interp.families.streaming_families`. Refused (``Refused`` in
``__init__``): other layouts (GPT-2, GPT-NeoX, BERT, ...), encoders, families whose
decoder-layer wiring is not verified here, any layer with an ``unsupported`` feature in its
description, and RoPE whose tables depend on the sequence length (``dynamic``, ``longrope``)
when the cache is longer than the original context.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from interp.errors import InputError, Refused
from interp.families import LayerAttention, refuse, streaming_families, streaming_parts
from interp.families.registry import hf_family_name
from interp.families.rotary import describe_hf_layers
from interp.streaming.cache import StreamingKVCache

WHO = "StreamingLM"

#: RoPE types whose cos/sin depend on the length of the sequence being run
_LENGTH_DEPENDENT_ROPE = ("dynamic", "longrope")


def rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """RoPE of ``x`` ``[..., d]`` by tables ``[..., rd]`` (``rd < d``: partial rotary, the
    leading ``rd`` dims rotate and the rest pass through, as HF's Phi-3 / NeoX do)."""
    rd = cos.shape[-1]
    if rd == x.shape[-1]:
        return x * cos + rotate_half(x) * sin
    rot, rest = x[..., :rd], x[..., rd:]
    return torch.cat((rot * cos + rotate_half(rot) * sin, rest), dim=-1)


@dataclass(frozen=True)
class _Layer:
    """What :meth:`StreamingLM.step` does in one layer (built once from the layer's spec)."""

    spec: LayerAttention
    rope_key: str | None          # layer type whose RoPE table this layer uses (Gemma 3)
    window: int | None
    softcap: float | None
    scaling: float
    steps: object                 # the family's layer steps: .qkv(x), .write(x, o)


def _rope_kind(cfg, layer_type: str | None) -> tuple[str, int | None]:
    """(rope_type, original context) of a layer type from the HF config."""
    params = getattr(cfg, "rope_parameters", None) or {}
    if layer_type is not None and isinstance(params.get(layer_type), dict):
        params = params[layer_type]
    kind = str(params.get("rope_type", params.get("type", "default")))
    orig = params.get("original_max_position_embeddings",
                      getattr(cfg, "max_position_embeddings", None))
    return kind, orig


class StreamingLM:
    """Streaming decoding of a HF causal LM of a supported family
    (:func:`interp.families.streaming_families`; e.g. from
    ``interp.models.registry.load_hf("smollm2-135m")``).

    Attributes:
        hf: the HF model (not modified).
        specs: :class:`~interp.families.LayerAttention` per layer.
        structure: the family's block wiring (``"pre-norm"`` or ``"sandwich"``).
        n_layers, n_heads, n_kv_heads, head_dim, vocab: geometry.

    Raises:
        Refused: (in ``__init__``) a model or layer feature this forward cannot reproduce
            exactly; the message names the family / layer and why.
    """

    def __init__(self, hf_model, tokenizer=None):
        family, cls = hf_family_name(hf_model), type(hf_model).__name__
        try:
            specs = describe_hf_layers(hf_model)
        except NotImplementedError as e:
            raise Refused(
                f"{WHO}: family {family!r} ({cls}) is not supported: it recomputes attention "
                f"over the modules of Llama-style HF decoders (separate or Phi-3-style fused "
                f"q/k/v projections) and cannot reproduce this "
                f"model's layers exactly ({e})") from e
        cfg = getattr(hf_model.config, "text_config", None) or hf_model.config
        self.hf = hf_model.eval()
        self.tokenizer = tokenizer
        supported = streaming_families()
        if family not in supported:
            raise Refused(
                f"{WHO}: family {family!r} ({cls}) is not supported: only the decoder-layer "
                f"wiring of {', '.join(sorted(supported))} is reproduced and tested "
                f"against HF; another family may place norms, residuals or attention features "
                f"differently. Refusing rather than computing something different.")
        self.parts = parts = streaming_parts(hf_model, WHO)
        self.structure = parts.structure
        self.specs = specs
        rotary = parts.rotary
        per_type = rotary is not None and "layer_type" in inspect.signature(
            rotary.forward).parameters
        plans = [self._plan(i, spec, rotary, per_type) for i, spec in enumerate(specs)]
        if not per_type and len({s.rope_theta for s in specs}) > 1:
            raise refuse(specs[0], WHO, "a RoPE base per layer type",
                         "the model's rotary module computes one table for all layers")
        geometry = {(s.n_heads, s.n_kv_heads, s.head_dim) for s in specs}
        if len(geometry) > 1:
            raise refuse(specs[0], WHO, "layers of different head geometry",
                         f"the cache holds one shape for all layers, got {sorted(geometry)}")
        self._plans = plans
        self._rope_kinds = {p.rope_key: _rope_kind(cfg, p.rope_key) for p in plans}
        self.n_layers = len(specs)
        self.n_heads, self.n_kv_heads, self.head_dim = geometry.pop()
        self.scaling = specs[0].scaling
        self.vocab = cfg.vocab_size
        self.n_ctx = int(getattr(cfg, "max_position_embeddings", 1 << 30))
        p = next(hf_model.parameters())
        self.dtype, self.device = p.dtype, p.device
        self._tab: dict[str | None, tuple[Tensor, Tensor]] = {}
        self._tab_len = 0

    def _plan(self, i: int, spec: LayerAttention, rotary, per_type: bool) -> _Layer:
        """Layer ``i``'s plan, after the checks every family shares; the family's own layer
        steps (and their checks) come from ``self.parts.layer``."""
        if spec.unsupported:
            raise refuse(spec, WHO, spec.unsupported[0], "it is not implemented in the "
                         "streaming forward")
        if not spec.causal or spec.layer_type not in ("full_attention", "sliding_attention"):
            raise refuse(spec, WHO, f"{spec.layer_type} attention",
                         "the streaming cache is causal")
        if spec.rotary_dim is None or rotary is None:
            raise refuse(spec, WHO, "no rotary embedding",
                         "StreamingLM assigns positions through RoPE")
        return _Layer(spec=spec, rope_key=spec.layer_type if per_type else None,
                      window=spec.sliding_window, softcap=spec.softcap, scaling=spec.scaling,
                      steps=self.parts.layer(i, spec))

    @classmethod
    def from_name(cls, name: str = "smollm2-135m", dtype: torch.dtype | str | None = None,
                  device: str | torch.device | None = None) -> "StreamingLM":
        """Load ``name`` (registry name, folder, ``.gguf`` file or hub id) with
        :func:`interp.models.registry.load_hf` in ``dtype`` (default float32; ``"bfloat16"``
        is ~3x faster per decode step on CPUs with bf16) on ``device`` (default CPU;
        ``"auto"``: CUDA when available). Caches and RoPE tables follow the model."""
        from interp.devices import resolve_device
        from interp.models.registry import load_hf

        model, tok = load_hf(name, dtype)
        if device is not None:
            model = model.to(resolve_device(device))
        return cls(model, tok)

    # ------------------------------------------------------------------ helpers

    def new_cache(self, capacity: int, n_sink: int | list[int] = 0,
                  batch: int | None = None) -> StreamingKVCache:
        """An empty cache for this model (``capacity`` tokens per stream)."""
        if capacity > self.n_ctx:
            raise InputError(f"capacity {capacity} is over the model's context of {self.n_ctx}")
        self._tables(capacity)
        return StreamingKVCache(self.n_layers, self.n_kv_heads, self.head_dim, capacity,
                                n_sink=n_sink, batch=batch, dtype=self.dtype, device=self.device)

    def _tables(self, n: int) -> None:
        """cos/sin ``[n, rotary_dim]`` for positions ``0..n-1`` from the model's rotary module,
        one pair per layer type that has its own table."""
        if self._tab_len >= n:
            return
        for key, (kind, orig) in self._rope_kinds.items():
            if any(k in kind for k in _LENGTH_DEPENDENT_ROPE) and (orig is None or n >= orig):
                spec = next(p.spec for p in self._plans if p.rope_key == key)
                raise refuse(spec, WHO, f"{kind!r} RoPE with a cache of {n} tokens",
                             f"its tables depend on the sequence length once it reaches the "
                             f"original context ({orig}); use a capacity below it")
        pos = torch.arange(n, device=self.device)[None]
        x = torch.zeros(1, dtype=self.dtype, device=self.device)
        rotary = self.parts.rotary
        tab = {}
        with torch.inference_mode():
            for key in {p.rope_key for p in self._plans}:
                cos, sin = rotary(x, pos) if key is None else rotary(x, pos, key)
                tab[key] = (cos[0].clone(), sin[0].clone())
        for p in self._plans:
            if tab[p.rope_key][0].shape[-1] != p.spec.rotary_dim:
                raise refuse(p.spec, WHO, f"rotary over {p.spec.rotary_dim} dims",
                             f"the model's rotary module gives tables of "
                             f"{tab[p.rope_key][0].shape[-1]} dims")
        self._tab, self._tab_len = tab, n

    def _attend(self, plan: _Layer, q: Tensor, k: Tensor, v: Tensor,
                mask: Tensor | None) -> Tensor:
        """Attention output ``[b, H, n, d]`` of rotated ``q`` ``[b, H, n, d]`` over rotated
        ``k`` / ``v`` ``[b, KV, L, d]``; ``mask`` ``[b, 1, n, L]`` (True = visible) or None."""
        H, KV = self.n_heads, self.n_kv_heads
        if plan.softcap is None:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=plan.scaling,
                                                  enable_gqa=H != KV)
        # soft-capping (Gemma 2) happens between the scores and the mask: explicit scores,
        # as HF's eager attention computes them (softmax in float32)
        b, _, n, d = q.shape
        g = H // KV
        qg = q.view(b, KV, g, n, d)                                     # head h -> kv h // g
        scores = qg @ k[:, :, None].transpose(-1, -2) * plan.scaling    # [b, KV, g, n, L]
        scores = torch.tanh(scores / plan.softcap) * plan.softcap
        if mask is not None:
            scores = scores.masked_fill(~mask[:, :, None], float("-inf"))
        w = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        return (w @ v[:, :, None]).view(b, H, n, d)

    # ------------------------------------------------------------------ forward

    @torch.inference_mode()
    def step(self, ids: Tensor, cache: StreamingKVCache) -> Tensor:
        """Append ``ids`` ``[batch, n]`` to the streams in ``cache``; returns logits
        ``[batch, n, vocab]`` (float32), row ``i`` predicting the token after ``ids[:, i]``."""
        if ids.dim() == 1:
            ids = ids[:, None]
        b, n = ids.shape
        if b != cache.batch:
            raise InputError(f"ids have batch {b}, the cache holds {cache.batch} streams")
        self._tables(cache.capacity)
        slots = cache.write_slots(n)                                   # [b, n]
        qpos = cache.query_positions(n)                                # [b, n]
        kpos = cache.positions(cache.n_seen + n)                       # [b, L]
        length = kpos.shape[1]
        # masks by position, one per window size: key kp visible from query qp iff
        # kp <= qp and (no window or qp - kp < window); None when every key is visible
        dist = qpos[:, None, :, None] - kpos[:, None, None, :]         # [b, 1, n, L]
        masks: dict[int | None, Tensor | None] = {}
        for w in {p.window for p in self._plans}:
            ok = dist >= 0
            if w is not None:
                ok = ok & (dist < w)
            masks[w] = None if bool(ok.all()) else ok
        rot = {}
        for key, (cos, sin) in self._tab.items():
            rot[key] = (cos[kpos][:, None], sin[kpos][:, None],       # keys [b, 1, L, rd]
                        cos[qpos][:, None], sin[qpos][:, None])       # queries [b, 1, n, rd]
        H, d = self.n_heads, self.head_dim
        x = self.parts.embed(ids.to(self.device))                      # [b, n, D]
        for li, plan in enumerate(self._plans):
            q, k, v = plan.steps.qkv(x)                                # [b, H|KV, n, d]
            cache.write(li, slots, k, v)
            cos_k, sin_k, cos_q, sin_q = rot[plan.rope_key]
            keys = _rotate(cache.keys(li, length), cos_k, sin_k)       # [b, KV, L, d]
            q = _rotate(q, cos_q, sin_q)
            o = self._attend(plan, q, keys, cache.values(li, length), masks[plan.window])
            x = plan.steps.write(x, o.transpose(1, 2).reshape(b, n, H * d))
        cache.advance(n)
        return self.parts.final(x).float()

    @torch.inference_mode()
    def forward(self, ids: Tensor) -> Tensor:
        """Fresh dense forward of ``ids`` ``[batch, n]`` (positions ``0..n-1``); logits
        ``[batch, n, vocab]``. Used for recomputation baselines."""
        if ids.dim() == 1:
            ids = ids[None]
        cache = self.new_cache(ids.shape[1], 0, batch=ids.shape[0])
        return self.step(ids, cache)
