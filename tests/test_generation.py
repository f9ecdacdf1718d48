"""Greedy generation (interp.generation) equals HF generate(do_sample=False) token for token,
for both paths: the plain HF model with its own cache and the hooked bridge (full forwards)."""
from __future__ import annotations

import pytest
import torch

from interp.generation import chat_ids, chat_text, greedy_generate, stop_token_ids

PROMPTS = [
    "What is the capital of France? Answer in a few words.",
    "Write one sentence about the sea.",
    "What is 2 plus 3?",
    "List three colours.",
]


def _hf_reference(hf, tok, prompt: str, max_new_tokens: int) -> list[int]:
    ids = chat_ids(tok, prompt)
    with torch.no_grad():
        out = hf.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                          max_new_tokens=max_new_tokens, do_sample=False,
                          eos_token_id=stop_token_ids(tok), pad_token_id=tok.eos_token_id)
    return out[0, len(ids):].tolist()


def test_chat_ids_match_apply_chat_template(smollm2_hf):
    _, tok = smollm2_hf
    for p in PROMPTS:
        ref = tok.apply_chat_template([{"role": "user", "content": p}],
                                      add_generation_prompt=True, tokenize=True)
        ref = ref["input_ids"] if hasattr(ref, "keys") else ref
        assert chat_ids(tok, p) == list(ref)
        assert chat_text(tok, p).endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize("prompt", PROMPTS, ids=["capital", "sea", "sum", "colours"])
def test_hf_cached_path_equals_hf_generate(smollm2_hf, prompt):
    hf, tok = smollm2_hf
    ref = _hf_reference(hf, tok, prompt, 24)
    got = greedy_generate(hf, prompt, tokenizer=tok, max_new_tokens=24)
    assert list(got.new_ids) == ref
    assert got.stopped == (ref[-1] in stop_token_ids(tok))


def test_bridge_path_equals_hf_generate(smollm2, smollm2_hf):
    hf, tok = smollm2_hf
    prompt = PROMPTS[0]
    ref = _hf_reference(hf, tok, prompt, 12)
    got = greedy_generate(smollm2, prompt, max_new_tokens=12)
    assert list(got.new_ids) == ref


@pytest.mark.parametrize("prompt", PROMPTS[1:], ids=["sea", "sum", "colours"])
def test_bridge_path_equals_hf_generate_more_prompts(smollm2, smollm2_hf, prompt):
    hf, tok = smollm2_hf
    ref = _hf_reference(hf, tok, prompt, 20)
    assert list(greedy_generate(smollm2, prompt, max_new_tokens=20).new_ids) == ref


def test_stop_token_ends_generation_and_is_not_in_text(smollm2_hf):
    hf, tok = smollm2_hf
    got = greedy_generate(hf, PROMPTS[0], tokenizer=tok, max_new_tokens=40)
    assert got.stopped and got.new_ids[-1] in stop_token_ids(tok)
    assert "<|im_end|>" not in got.text and "Paris" in got.text
    assert tok.decode(got.new_ids[:-1]) == got.text


def test_max_new_tokens_and_errors(smollm2_hf):
    hf, tok = smollm2_hf
    got = greedy_generate(hf, PROMPTS[1], tokenizer=tok, max_new_tokens=3)
    assert len(got.new_ids) == 3 and not got.stopped
    assert greedy_generate(hf, PROMPTS[1], tokenizer=tok, max_new_tokens=0).new_ids == ()
    with pytest.raises(ValueError, match="max_new_tokens"):
        greedy_generate(hf, PROMPTS[1], tokenizer=tok, max_new_tokens=-1)
    with pytest.raises(ValueError, match="tokenizer"):
        greedy_generate(hf, PROMPTS[1])
    with pytest.raises(ValueError, match="empty"):
        greedy_generate(hf, [], tokenizer=tok)
