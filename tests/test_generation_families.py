"""Greedy generation (interp.generation.greedy_ids) on a tiny random model of every causal
family of tests/families/tiny.py: the bridge path (full forwards) and the plain HF path (its
own KV cache) both give HF ``generate(do_sample=False, max_new_tokens=12)`` token for token.

Independent instances: the bridge is booted from the folder by ``interp.load_model`` (its own
HF model inside), the plain-HF path and the ``generate`` reference each get a fresh HF eager
instance, and the full-forward trajectory another one, so no instance is shared with a bridge
(after booting, a bridge's wrapped HF model gives wrong tokens with its own cache; greedy_ids
refuses it, tested below).

Near-ties: random tiny models can have top-2 logits within float noise, where two exact
implementations may legitimately pick different tokens. The prompt (20 tokens with BOS,
longer than the sliding windows of 6, so generation runs past them) is one where the top-2
margin of the full-forward logits is over 1e-3 at every one of the 12 steps in every family
(asserted first, so a tie reads as a bad prompt, not as a bug). Exactness of the cached path
does not rest on argmax alone: its logits are compared with full forwards at every step
(1e-4).
"""
from __future__ import annotations

import pytest
import torch

from interp.generation import greedy_ids, stop_token_ids
from tests.families.tiny import CAUSAL, load_reference

PROMPT = "The quick brown fox"
NEW = 12
MARGIN = 1e-3


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Token-by-token decoding: one CPU thread (see ``one_thread`` in tests/conftest.py)."""


def _tokenizer(folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def _bridge(name, folder):
    """The hooked model from the folder: interp.load_model, or (an interp without folder
    loading) TransformerLens' boot around its own HF instance."""
    import interp

    try:
        return interp.load_model(str(folder))
    except ValueError as e:
        if "unknown model" not in str(e):
            raise
    from transformer_lens.model_bridge import TransformerBridge

    return TransformerBridge.boot_transformers(
        str(folder), hf_model=load_reference(name, folder), tokenizer=_tokenizer(folder))


@torch.no_grad()
def _full_forward_trajectory(hf, ids: list[int], n: int, stops: set[int]):
    """Greedy ids by a full forward per step, and the last-row logits of each step."""
    seq = torch.tensor([ids])
    new, logits = [], []
    for _ in range(n):
        row = hf(seq).logits[0, -1]
        logits.append(row)
        nxt = int(row.argmax())
        new.append(nxt)
        if nxt in stops:
            break
        seq = torch.cat([seq, torch.tensor([[nxt]])], 1)
    return new, torch.stack(logits)


@torch.no_grad()
def _cached_logits(hf, ids: list[int], new: list[int]) -> torch.Tensor:
    """Last-row logits of HF's own cached path along the token sequence ``ids + new``."""
    import inspect

    key = "cache" if "cache" in inspect.signature(hf.forward).parameters else "past_key_values"
    out = hf(input_ids=torch.tensor([ids]), use_cache=True)
    rows = [out.logits[0, -1]]
    for tok in new[:-1]:
        cache = getattr(out, key, None)
        out = hf(input_ids=torch.tensor([[tok]]), use_cache=True, **{key: cache})
        rows.append(out.logits[0, -1])
    return torch.stack(rows)


@pytest.mark.parametrize("name", CAUSAL)
def test_greedy_ids_equal_hf_generate(name, family_dir):
    folder = family_dir(name)
    tok = _tokenizer(folder)
    ids = tok(PROMPT).input_ids
    stops = stop_token_ids(tok)

    with torch.no_grad():
        out = load_reference(name, folder).generate(
            torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=NEW, do_sample=False, eos_token_id=stops,
            pad_token_id=tok.pad_token_id)
    ref = out[0, len(ids):].tolist()

    traj, logits = _full_forward_trajectory(load_reference(name, folder), ids, NEW, set(stops))
    top2 = logits.topk(2, dim=-1).values
    assert (top2[:, 0] - top2[:, 1]).min() > MARGIN, "near-tie: pick another prompt"
    assert traj == ref

    plain = load_reference(name, folder)
    assert greedy_ids(plain, ids, NEW, stops)[0] == ref
    assert (_cached_logits(plain, ids, ref) - logits).abs().max() < 1e-4

    bridge = _bridge(name, folder)
    assert greedy_ids(bridge, ids, NEW, stops)[0] == ref


def test_encoders_are_refused(family_dir):
    folder = family_dir("bert")
    with pytest.raises(NotImplementedError, match="bert"):
        greedy_ids(load_reference("bert", folder), [1, 40, 41], 3)
    with pytest.raises(NotImplementedError, match="bert"):
        greedy_ids(_bridge("bert", folder), [1, 40, 41], 3)


def test_hf_model_wrapped_by_a_bridge_is_refused(family_dir):
    """After booting a bridge around an HF instance, that instance's own cache gives wrong
    tokens; greedy_ids refuses it instead of returning them."""
    from transformer_lens.model_bridge import TransformerBridge

    folder = family_dir("llama")
    hf = load_reference("llama", folder)
    TransformerBridge.boot_transformers(str(folder), hf_model=hf, tokenizer=_tokenizer(folder))
    with pytest.raises(ValueError, match="bridge"):
        greedy_ids(hf, [1, 40, 41], 3)
