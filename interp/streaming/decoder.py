"""A manual forward over a HF decoder's own layers, reading and writing a
:class:`~interp.streaming.cache.StreamingKVCache`.

Architecture
------------
``StreamingLM(hf_model)`` reuses the HF modules (embedding, per-layer norms, q/k/v/o
projections, q/k norms, MLP, final norm, LM head, rotary module) and replaces only what the
cache changes: where keys and values live, and which RoPE position each key gets. What each
layer's attention does is read once, in ``__init__``, from
:func:`interp.families.layers.describe_hf_layers` (one :class:`~interp.families.layers.LayerAttention`
per layer); anything it cannot reproduce exactly is refused there with
:func:`interp.families.layers.refuse` (``NotImplementedError`` naming the family / layer feature).
One call of :meth:`StreamingLM.step` appends ``n`` tokens of ``batch`` streams::

    ids [batch, n] -> embed_tokens (Gemma's sqrt(D) scaling lives inside it) -> each layer:
        h = input_layernorm(x)
        q [b, H, n, d], k/v [b, KV, n, d] = projections(h)   (q_proj/k_proj/v_proj with their
                                                             biases, or Phi-3's fused qkv_proj)
        q, k = q_norm(q), k_norm(k)                          (Qwen3, Gemma 3: per head, pre-RoPE)
        cache.write(layer, slots, k, v)                      (k stored un-rotated)
        K = rope(cache keys [b, KV, L, d], cache positions)  (rotated at read time; table of
        Q = rope(q, query positions)                          the layer's type; partial rotary
                                                              rotates the leading dims only)
        scores = Q.K * scaling, tanh soft-capped (Gemma 2), masked: key kp visible from query
                 qp iff kp <= qp and qp - kp < window (the layer's own sliding window)
        a = o_proj(softmax(scores) V)                        (SDPA when not soft-capped)
        pre-norm (Llama, Mistral, Qwen2/3, Phi-3):
            x = x + a;  x = x + mlp(post_attention_layernorm(x))
        sandwich norms (Gemma 2/3):
            x = x + post_attention_layernorm(a)
            x = x + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(x)))
    -> norm -> lm_head -> final logit soft-capping (Gemma 2) -> logits [batch, n, vocab]

RoPE tables come from the model's own ``rotary_emb`` (Gemma 3: called per layer type, local
and global theta), so they are the cos/sin HF computes. While no token has been evicted the
positions equal the stream positions, so logits equal HF's full forward (tested to 1e-4 for
every supported family in ``tests/streaming/test_families.py``). After eviction, positions are
cache positions (StreamingLLM), and a sliding-window layer masks by cache position too. Several
tokens per call are allowed only while nothing is evicted (prefill); afterwards one token per
call. Everything runs under ``torch.inference_mode``; buffers are allocated once per cache.

Supported families: ``SUPPORTED_FAMILIES``. Refused (``NotImplementedError`` in ``__init__``):
other layouts (GPT-2, GPT-NeoX, BERT, ...: no ``model.layers[i].self_attn``), encoders, other
Llama-style families whose decoder-layer wiring is not verified here, any layer with an
``unsupported`` feature in its description, and RoPE whose tables depend on the sequence
length (``dynamic``, ``longrope``) when the cache is longer than the original context.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from interp.families import LayerAttention, describe_hf_layers, refuse
from interp.streaming.cache import StreamingKVCache

WHO = "StreamingLM"

#: HF ``model_type`` -> how its decoder layer wires norms around attention and MLP
#: (each reproduced here and tested against HF on a tiny random model of the family)
SUPPORTED_FAMILIES = {
    "llama": "pre-norm", "mistral": "pre-norm", "qwen2": "pre-norm", "qwen3": "pre-norm",
    "phi3": "pre-norm", "gemma2": "sandwich", "gemma3_text": "sandwich",
}

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
    fused_qkv: bool


def _family(hf_model) -> tuple[str, str]:
    cfg = getattr(hf_model, "config", None)
    cfg = getattr(cfg, "text_config", None) or cfg
    return str(getattr(cfg, "model_type", "?")), type(hf_model).__name__


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
    """Streaming decoding of a HF causal LM of a supported family (``SUPPORTED_FAMILIES``;
    e.g. from ``interp.models.registry.load_hf("smollm2-135m")``).

    Attributes:
        hf: the HF model (not modified).
        specs: :class:`~interp.families.layers.LayerAttention` per layer.
        n_layers, n_heads, n_kv_heads, head_dim, vocab: geometry.

    Raises:
        NotImplementedError: (in ``__init__``) a model or layer feature this forward cannot
            reproduce exactly; the message names the family / layer and why.
    """

    def __init__(self, hf_model, tokenizer=None):
        family, cls = _family(hf_model)
        try:
            specs = describe_hf_layers(hf_model)
        except NotImplementedError as e:
            raise NotImplementedError(
                f"{WHO}: family {family!r} ({cls}) is not supported: it recomputes attention "
                f"over the modules of Llama-style HF decoders (model.layers[i].self_attn with "
                f"separate or Phi-3-style fused q/k/v projections) and cannot reproduce this "
                f"model's layers exactly ({e})") from e
        cfg = getattr(hf_model.config, "text_config", None) or hf_model.config
        self.hf = hf_model.eval()
        self.tokenizer = tokenizer
        inner = hf_model.model
        self.layers = list(inner.layers)
        if family not in SUPPORTED_FAMILIES:
            raise NotImplementedError(
                f"{WHO}: family {family!r} ({cls}) is not supported: only the decoder-layer "
                f"wiring of {', '.join(sorted(SUPPORTED_FAMILIES))} is reproduced and tested "
                f"against HF; another family may place norms, residuals or attention features "
                f"differently. Refusing rather than computing something different.")
        self.structure = SUPPORTED_FAMILIES[family]
        self.specs = specs
        rotary = getattr(inner, "rotary_emb", None)
        per_type = rotary is not None and "layer_type" in inspect.signature(
            rotary.forward).parameters
        plans = []
        for spec, layer in zip(specs, self.layers):
            attn = layer.self_attn
            if spec.unsupported:
                raise refuse(spec, WHO, spec.unsupported[0], "it is not implemented in the "
                             "streaming forward")
            if not spec.causal or spec.layer_type not in ("full_attention", "sliding_attention"):
                raise refuse(spec, WHO, f"{spec.layer_type} attention",
                             "the streaming cache is causal")
            if spec.rotary_dim is None or rotary is None:
                raise refuse(spec, WHO, "no rotary embedding",
                             "StreamingLM assigns positions through RoPE")
            fused = hasattr(attn, "qkv_proj")
            if not fused and not all(hasattr(attn, p) for p in ("q_proj", "k_proj", "v_proj")):
                raise refuse(spec, WHO, "an unknown q/k/v projection layout",
                             "expected q_proj/k_proj/v_proj or a fused qkv_proj")
            if spec.qk_norm and not (hasattr(attn, "q_norm") and hasattr(attn, "k_norm")):
                raise refuse(spec, WHO, "q/k norm", "the layer has no q_norm/k_norm modules")
            if self.structure == "sandwich" and not all(hasattr(layer, n) for n in (
                    "pre_feedforward_layernorm", "post_feedforward_layernorm")):
                raise refuse(spec, WHO, "Gemma-style sandwich norms",
                             "the layer lacks pre/post feed-forward norms")
            if spec.sliding_window is not None and spec.layer_type != "sliding_attention" \
                    and family not in ("mistral", "phi3"):
                raise refuse(spec, WHO, "a sliding window on a full-attention layer",
                             "the family is not known to window every layer")
            plans.append(_Layer(spec=spec, rope_key=spec.layer_type if per_type else None,
                                window=spec.sliding_window, softcap=spec.softcap,
                                scaling=spec.scaling, fused_qkv=fused))
        if not per_type and len({s.rope_theta for s in specs}) > 1:
            raise refuse(specs[0], WHO, "a RoPE base per layer type",
                         "the model's rotary module computes one table for all layers")
        geometry = {(s.n_heads, s.n_kv_heads, s.head_dim) for s in specs}
        if len(geometry) > 1:
            raise refuse(specs[0], WHO, "layers of different head geometry",
                         f"the cache holds one shape for all layers, got {sorted(geometry)}")
        self._plans = plans
        self._rope_kinds = {p.rope_key: _rope_kind(cfg, p.rope_key) for p in plans}
        self.n_layers = len(self.layers)
        self.n_heads, self.n_kv_heads, self.head_dim = geometry.pop()
        self.scaling = specs[0].scaling
        self.vocab = cfg.vocab_size
        self.final_softcap = getattr(cfg, "final_logit_softcapping", None)
        self.n_ctx = int(getattr(cfg, "max_position_embeddings", 1 << 30))
        p = next(hf_model.parameters())
        self.dtype, self.device = p.dtype, p.device
        self._tab: dict[str | None, tuple[Tensor, Tensor]] = {}
        self._tab_len = 0

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
            raise ValueError(f"capacity {capacity} is over the model's context of {self.n_ctx}")
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
        rotary = self.hf.model.rotary_emb
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

    def _qkv(self, plan: _Layer, attn, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q ``[b, H, n, d]``, k/v ``[b, KV, n, d]`` of normed hidden states ``h`` (q/k after
        the layer's q/k norm, before RoPE)."""
        b, n, _ = h.shape
        H, KV, d = self.n_heads, self.n_kv_heads, self.head_dim
        if plan.fused_qkv:
            qkv = attn.qkv_proj(h)
            q, k, v = qkv.split([H * d, KV * d, KV * d], dim=-1)
        else:
            q, k, v = attn.q_proj(h), attn.k_proj(h), attn.v_proj(h)
        q, k, v = q.view(b, n, H, d), k.view(b, n, KV, d), v.view(b, n, KV, d)
        if plan.spec.qk_norm:                       # per-head RMSNorm over d, before RoPE
            q, k = attn.q_norm(q), attn.k_norm(k)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

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
            raise ValueError(f"ids have batch {b}, the cache holds {cache.batch} streams")
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
        x = self.hf.model.embed_tokens(ids.to(self.device))            # [b, n, D]
        for li, (plan, layer) in enumerate(zip(self._plans, self.layers)):
            attn = layer.self_attn
            q, k, v = self._qkv(plan, attn, layer.input_layernorm(x))
            cache.write(li, slots, k, v)
            cos_k, sin_k, cos_q, sin_q = rot[plan.rope_key]
            keys = _rotate(cache.keys(li, length), cos_k, sin_k)       # [b, KV, L, d]
            q = _rotate(q, cos_q, sin_q)
            o = self._attend(plan, q, keys, cache.values(li, length), masks[plan.window])
            a = attn.o_proj(o.transpose(1, 2).reshape(b, n, H * d))
            if self.structure == "sandwich":
                x = x + layer.post_attention_layernorm(a)
                x = x + layer.post_feedforward_layernorm(
                    layer.mlp(layer.pre_feedforward_layernorm(x)))
            else:
                x = x + a
                x = x + layer.mlp(layer.post_attention_layernorm(x))
        cache.advance(n)
        logits = self.hf.lm_head(self.hf.model.norm(x))
        if self.final_softcap is not None:
            logits = torch.tanh(logits / self.final_softcap) * self.final_softcap
        return logits.float()

    @torch.inference_mode()
    def forward(self, ids: Tensor) -> Tensor:
        """Fresh dense forward of ``ids`` ``[batch, n]`` (positions ``0..n-1``); logits
        ``[batch, n, vocab]``. Used for recomputation baselines."""
        if ids.dim() == 1:
            ids = ids[None]
        cache = self.new_cache(ids.shape[1], 0, batch=ids.shape[0])
        return self.step(ids, cache)
