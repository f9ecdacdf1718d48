"""StreamingLM on every causal family of tests/families/tiny.py: exact against HF, or refused.

For a family StreamingLM supports (``interp.families.streaming_families()``, keyed by HF model type):

- dense: a never-evicting cache over a prompt longer than the sliding windows (24 tokens,
  windows of 6) gives HF eager's full-forward logits within 1e-4, decoding token by token and
  after a multi-token prefill;
- sink + window: streams with 1 sink + 8 recent tokens and 0 sinks + 9 recent tokens (one
  batch, capacity 9) decoding token by token give the logits of an independent reference
  built from HF's own forward (:func:`_streaming_reference`) within 1e-4.

Why not "a fresh HF forward over the kept tokens re-positioned 0..C-1": that equals streaming
only for a one-layer model. The cache holds each kept token's keys/values as computed when
that token was the query, from layer inputs that saw tokens evicted since; a fresh forward
recomputes the deeper layers' inputs from the kept tokens alone (measured on these tiny
models: 0.2 to 1.0 in the logits). Positions assigned inside the cache only change
the RoPE angles of those stored keys. So the reference runs HF's full forward (its own
embedding, masks, rotary tables, norms, soft-capping, LM head) over the kept tokens at
positions 0..n-1, with a forward pre-hook on every decoder layer that puts back, for every
kept token but the newest, the layer input it had when it was processed. That is exactly
what a StreamingLLM cache means, computed by HF's code and not by StreamingLM's.

Any other family (GPT-2, GPT-NeoX, BERT: other module layouts) must be refused in
``StreamingLM.__init__`` with a NotImplementedError naming the family.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch

from interp.streaming import StreamingLM
from interp.families import streaming_families
from tests.families.tiny import CAUSAL, VOCAB, WINDOW, load_reference

T = 4 * WINDOW             # prompt length: 24 tokens, longer than windows and capacity
CAPACITY = 9               # 1 sink + 8 recent, or 0 sinks + 9 recent
SINKS = [1, 0]
TOL = 1e-4


@pytest.fixture(scope="module")
def ids():
    g = torch.Generator().manual_seed(5)
    return torch.randint(4, VOCAB, (1, T), generator=g)


_SPECIAL = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)


def _sharp(model):
    """As tests/families/tiny.py builds them: weight matrices doubled (sharper patterns)."""
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.mul_(2.0)
    return model.eval()


def _model_type(hf) -> str:
    cfg = getattr(hf.config, "text_config", None) or hf.config
    return cfg.model_type


def _kept(t: int, n_sink: int, capacity: int) -> list[int]:
    """Stream indices held by a sink + window cache once token ``t`` is appended."""
    if t < capacity:
        return list(range(t + 1))
    return list(range(n_sink)) + list(range(t - (capacity - n_sink) + 1, t + 1))


@torch.no_grad()
def _streaming_reference(hf, ids: torch.Tensor, n_sink: int, capacity: int) -> torch.Tensor:
    """Logits ``[T, vocab]`` of StreamingLLM decoding (``n_sink`` sinks, ``capacity`` kept
    tokens, positions inside the cache), built from HF's forward; see the module docstring."""
    layers = hf.model.layers
    stored: list[dict[int, torch.Tensor]] = [{} for _ in layers]   # layer -> token -> [D]
    current: dict[str, list[int]] = {}

    def pre_hook(li):
        def hook(module, args, kwargs):
            h = args[0] if args else kwargs["hidden_states"]       # [1, n, D]
            kept = current["kept"]
            stored[li][kept[-1]] = h[0, -1].clone()
            h = torch.stack([stored[li][j] for j in kept])[None].to(h.dtype)
            if args:
                return (h, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": h}
        return hook

    handles = [layer.register_forward_pre_hook(pre_hook(li), with_kwargs=True)
               for li, layer in enumerate(layers)]
    try:
        out = []
        for t in range(ids.shape[1]):
            current["kept"] = kept = _kept(t, n_sink, capacity)
            out.append(hf(input_ids=ids[:, kept], use_cache=False).logits[0, -1])
    finally:
        for h in handles:
            h.remove()
    return torch.stack(out)


def _load(name, family_dir):
    return load_reference(name, family_dir(name))


@pytest.mark.parametrize("name", CAUSAL)
def test_streaming_exact_or_refused(name, family_dir, ids):
    hf = _load(name, family_dir)
    family = _model_type(hf)
    if family not in streaming_families():
        with pytest.raises(NotImplementedError, match=family):
            StreamingLM(hf)
        return
    lm = StreamingLM(hf)
    with torch.no_grad():
        ref = hf(ids).logits                                          # [1, T, V]

    # dense: never-evicting cache, token by token and after a prefill
    assert (lm.forward(ids) - ref).abs().max() < TOL
    cache = lm.new_cache(32, 1)
    got = torch.cat([lm.step(ids[:, t:t + 1], cache) for t in range(T)], 1)
    assert (got - ref).abs().max() < TOL
    cache = lm.new_cache(32, 1)
    first = lm.step(ids[:, :10], cache)
    rest = torch.cat([lm.step(ids[:, t:t + 1], cache) for t in range(10, T)], 1)
    assert (torch.cat([first, rest], 1) - ref).abs().max() < TOL

    # sink + window: batch of a 1-sink and a 0-sink stream, capacity 9, token by token
    cache = lm.new_cache(CAPACITY, SINKS)
    got = torch.cat([lm.step(ids[:, t:t + 1].expand(len(SINKS), 1), cache)
                     for t in range(T)], 1)                            # [2, T, V]
    for row, s in enumerate(SINKS):
        want = _streaming_reference(hf, ids, s, CAPACITY)
        assert (got[row] - want).abs().max() < TOL, (name, s)
        # while nothing was evicted the reference is HF's dense forward
        assert (want[:CAPACITY] - ref[0, :CAPACITY]).abs().max() < TOL
    # after eviction: where some layer looks further back than the 8 recent tokens, the
    # stream differs from dense attention (the check has teeth); where every layer has a
    # window shorter than that (Mistral), the cache loses nothing and equals dense attention
    far = [w is None or w > CAPACITY - SINKS[0] for w in (s.sliding_window for s in lm.specs)]
    off = (got[0, CAPACITY:] - ref[0, CAPACITY:]).abs().max()
    assert off > 1e-2 if any(far) else off < TOL


def test_reference_is_not_a_fresh_forward_over_kept_tokens(family_dir, ids):
    """Documents why the reference puts stored layer inputs back: a fresh forward over the
    kept tokens (re-positioned 0..C-1) differs from a cache with positions assigned inside
    it in every multi-layer model, from the first eviction on."""
    hf = _load("llama", family_dir)
    want = _streaming_reference(hf, ids, 1, CAPACITY)
    t = T - 1
    with torch.no_grad():
        fresh = hf(ids[:, _kept(t, 1, CAPACITY)]).logits[0, -1]
    assert (fresh - want[t]).abs().max() > 1e-2


def test_partial_rotary_is_exact(ids):
    """Partial rotary (Phi-3 with partial_rotary_factor 0.5: 8 of 16 dims rotate)."""
    import transformers as T_

    hf = _sharp(T_.Phi3ForCausalLM(T_.Phi3Config(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        partial_rotary_factor=0.5, **_SPECIAL)))
    lm = StreamingLM(hf)
    assert lm.specs[0].rotary_dim == 8
    with torch.no_grad():
        ref = hf(ids).logits
    assert (lm.forward(ids) - ref).abs().max() < TOL
    cache = lm.new_cache(CAPACITY, 1)
    got = torch.cat([lm.step(ids[:, t:t + 1], cache) for t in range(T)], 1)
    assert (got[0] - _streaming_reference(hf, ids, 1, CAPACITY)).abs().max() < TOL


def test_bert_is_refused(family_dir):
    with pytest.raises(NotImplementedError, match="bert"):
        StreamingLM(_load("bert", family_dir))


def test_unsupported_layer_feature_is_refused(family_dir, monkeypatch):
    """A layer whose description lists an unsupported feature is refused, naming it."""
    import interp.streaming.decoder as dec

    real = dec.describe_hf_layers

    def with_sinks(model):
        specs = real(model)
        return [dataclasses.replace(specs[0], unsupported=("learned attention sinks (gpt-oss)",)),
                *specs[1:]]

    monkeypatch.setattr(dec, "describe_hf_layers", with_sinks)
    with pytest.raises(NotImplementedError, match="llama layer 0.*attention sinks"):
        StreamingLM(_load("llama", family_dir))


def test_length_dependent_rope_is_refused_beyond_original_context():
    """Dynamic-NTK RoPE tables depend on the sequence length once it passes the original
    context; a cache that long is refused, a shorter one is exact."""
    import transformers as T_

    hf = _sharp(T_.LlamaForCausalLM(T_.LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, **_SPECIAL,
        rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0})))
    lm = StreamingLM(hf)
    with pytest.raises(NotImplementedError, match="dynamic"):
        lm.new_cache(64)
    ids = torch.randint(4, VOCAB, (1, 20))
    with torch.no_grad():
        ref = hf(ids).logits
    assert (lm.forward(ids) - ref).abs().max() < TOL
