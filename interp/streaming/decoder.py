"""A manual forward over a HF Llama model's own layers, reading and writing a
:class:`~interp.streaming.cache.StreamingKVCache`.

Architecture
------------
``StreamingLM(hf_model)`` reuses the HF modules (embedding, per-layer RMSNorms, q/k/v/o
projections, MLP, final norm, LM head) and replaces only what the cache changes: where keys
and values live, and which RoPE position each key gets. One call of :meth:`StreamingLM.step`
appends ``n`` tokens of ``batch`` streams::

    ids [batch, n] -> embed -> for each layer:
        h = input_layernorm(x)
        q [b, H, n, d], k/v [b, KV, n, d] = projections(h)      (k stored un-rotated)
        cache.write(layer, slots, k, v)
        K = rope(cache keys [b, KV, L, d], cache positions)      (rotated at read time)
        Q = rope(q, query positions)
        x = x + o_proj(SDPA(Q, K, V, causal-by-position mask, GQA))
        x = x + mlp(post_attention_layernorm(x))
    -> norm -> lm_head -> logits [batch, n, vocab]

RoPE tables come from the model's own ``rotary_emb`` (the same cos/sin as HF computes).
While no token has been evicted the positions equal the stream positions, so logits equal
HF's full forward (tested to 1e-4). Several tokens per call are allowed only while nothing
is evicted (prefill); afterwards one token per call. Everything runs under
``torch.inference_mode``; buffers are allocated once per cache.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from interp.streaming.cache import StreamingKVCache


def rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class StreamingLM:
    """Streaming decoding of a HF ``LlamaForCausalLM`` (e.g. from
    ``interp.models.registry.load_hf("smollm2-135m")``).

    Attributes:
        hf: the HF model (not modified).
        n_layers, n_heads, n_kv_heads, head_dim, vocab: geometry.
    """

    def __init__(self, hf_model, tokenizer=None):
        inner = getattr(hf_model, "model", None)
        layers = getattr(inner, "layers", None)
        if layers is None or not hasattr(inner, "rotary_emb") or not hasattr(
                layers[0], "self_attn") or not hasattr(layers[0].self_attn, "q_proj"):
            raise NotImplementedError(
                f"StreamingLM supports Llama-style HF causal LMs (model.layers[i].self_attn."
                f"q_proj, model.rotary_emb); got {type(hf_model).__name__}")
        cfg = hf_model.config
        self.hf = hf_model.eval()
        self.tokenizer = tokenizer
        self.layers = list(layers)
        self.n_layers = len(self.layers)
        self.n_heads = cfg.num_attention_heads
        self.n_kv_heads = cfg.num_key_value_heads
        attn = self.layers[0].self_attn
        self.head_dim = attn.head_dim
        self.scaling = attn.scaling
        self.vocab = cfg.vocab_size
        self.n_ctx = int(getattr(cfg, "max_position_embeddings", 1 << 30))
        p = next(hf_model.parameters())
        self.dtype, self.device = p.dtype, p.device
        self._cos = self._sin = None

    @classmethod
    def from_name(cls, name: str = "smollm2-135m",
                  dtype: torch.dtype | str | None = None) -> "StreamingLM":
        """Load pretrained ``name`` with :func:`interp.models.registry.load_hf` (``dtype``
        default float32; ``"bfloat16"`` is ~3x faster per decode step on CPUs with bf16)."""
        from interp.models.registry import load_hf

        model, tok = load_hf(name, dtype)
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
        """cos/sin ``[n, d_head]`` for positions ``0..n-1`` from the model's rotary module."""
        if self._cos is not None and self._cos.shape[0] >= n:
            return
        pos = torch.arange(n, device=self.device)[None]
        x = torch.zeros(1, dtype=self.dtype, device=self.device)
        with torch.inference_mode():
            cos, sin = self.hf.model.rotary_emb(x, pos)
        self._cos, self._sin = cos[0].clone(), sin[0].clone()

    def _rope(self, x: Tensor, pos: Tensor) -> Tensor:
        """x ``[b, heads, n, d]`` rotated by positions ``pos`` ``[b, n]``."""
        cos = self._cos[pos][:, None]                                  # [b, 1, n, d]
        sin = self._sin[pos][:, None]
        return x * cos + rotate_half(x) * sin

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
        slots = cache.write_slots(n)                                   # [b, n]
        qpos = cache.query_positions(n)                                # [b, n]
        kpos = cache.positions(cache.n_seen + n)                       # [b, L]
        length = kpos.shape[1]
        mask = None
        if n > 1:                                  # prefill: causal by position
            mask = kpos[:, None, None, :] <= qpos[:, None, :, None]    # [b, 1, n, L]
        cos_k = self._cos[kpos][:, None]                               # [b, 1, L, d]
        sin_k = self._sin[kpos][:, None]
        H, KV, d = self.n_heads, self.n_kv_heads, self.head_dim
        x = self.hf.model.embed_tokens(ids.to(self.device))            # [b, n, D]
        for li, layer in enumerate(self.layers):
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            q = attn.q_proj(h).view(b, n, H, d).transpose(1, 2)        # [b, H, n, d]
            k = attn.k_proj(h).view(b, n, KV, d).transpose(1, 2)       # [b, KV, n, d]
            v = attn.v_proj(h).view(b, n, KV, d).transpose(1, 2)
            cache.write(li, slots, k, v)
            keys = cache.keys(li, length)
            keys = keys * cos_k + rotate_half(keys) * sin_k           # [b, KV, L, d]
            q = self._rope(q, qpos)
            o = F.scaled_dot_product_attention(q, keys, cache.values(li, length),
                                               attn_mask=mask, scale=self.scaling,
                                               enable_gqa=H != KV)      # [b, H, n, d]
            x = x + attn.o_proj(o.transpose(1, 2).reshape(b, n, H * d))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        cache.advance(n)
        x = self.hf.model.norm(x)
        return self.hf.lm_head(x).float()

    @torch.inference_mode()
    def forward(self, ids: Tensor) -> Tensor:
        """Fresh dense forward of ``ids`` ``[batch, n]`` (positions ``0..n-1``); logits
        ``[batch, n, vocab]``. Used for recomputation baselines."""
        if ids.dim() == 1:
            ids = ids[None]
        cache = self.new_cache(ids.shape[1], 0, batch=ids.shape[0])
        return self.step(ids, cache)
