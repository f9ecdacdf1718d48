"""interp.generate (batched greedy generation with a KV cache on the hooked model) against
independent references: HF ``generate(do_sample=False)`` on the same left-padded batch (tokens
and raw step logits, ``output_logits``) for a tiny random model of every causal family, and
full uncached, unpadded forwards of the bridge (``run_with_cache``) for what the hooks see.

Independent instances: the bridge is booted by ``interp.load_model`` from the folder; the HF
reference is a fresh eager instance (``load_reference``). Near-ties: tokens and logits are
compared on each row up to its first step whose top-2 margin in HF's logits is under MARGIN.
"""
from __future__ import annotations

import pytest
import torch

import interp
from interp.decoding import generate
from interp.errors import InputError, Refused
from interp.hooks import attach, count_hooks
from tests.families.tiny import CAUSAL, SLIDING, WINDOW, load_reference
from tests.test_generation_families import _tokenizer as _tok

#: three prompts of different lengths (bytes + BOS: 36, 3 and 16 tokens); the longest runs
#: past the tiny sliding window (6) before generation starts
PROMPTS = ("A longer prompt that goes well past", "Hi", "The quick brown")
NEW = 10
#: top-2 logit margin under which a step counts as a near-tie: 20x the largest difference
#: between these logits and HF's seen here (5e-7 of the logit scale, all families)
MARGIN = 1e-5


pytestmark = pytest.mark.usefixtures("one_thread")     # token-by-token decoding: one thread


def _rows(tok, prompts=PROMPTS) -> list[list[int]]:
    return [tok(p).input_ids for p in prompts]


@torch.no_grad()
def _hf_generate(hf, tok, rows, new, stops=()):
    """HF generate on the left-padded batch: (new ids per row cut after the first stop,
    raw logits [b, steps, vocab])."""
    pad = tok.pad_token_id
    width = max(map(len, rows))
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    out = hf.generate(ids, attention_mask=mask, max_new_tokens=new, do_sample=False,
                      eos_token_id=list(stops) or None, pad_token_id=pad,
                      output_logits=True, return_dict_in_generate=True)
    seqs = []
    for row in out.sequences[:, width:].tolist():
        cut = next((i + 1 for i, t in enumerate(row) if t in stops), len(row))
        seqs.append(row[:cut])
    return seqs, torch.stack(out.logits, 1).float()


def _clear_steps(logits: torch.Tensor) -> list[int]:
    """Per row, the number of leading steps whose top-2 margin is over MARGIN (past a near-tie
    two exact implementations may legitimately pick different tokens, and then diverge)."""
    top2 = logits.topk(2, dim=-1).values
    clear = (top2[..., 0] - top2[..., 1]) > MARGIN                      # [b, steps]
    return [int(row.long().cumprod(0).sum()) for row in clear]


@pytest.mark.parametrize("name", CAUSAL)
def test_batched_generation_equals_hf_generate(name, family_dir):
    """Mixed lengths in one left-padded batch: tokens equal HF generate's, and each step's
    logits equal HF's raw logits (1e-5 of their scale), on every row up to its first near-tie
    (random tiny models have some; at least 60% of all steps are compared)."""
    folder = family_dir(name)
    tok = _tok(folder)
    rows = _rows(tok)
    ref, ref_logits = _hf_generate(load_reference(name, folder), tok, rows, NEW)
    clear = _clear_steps(ref_logits)
    assert sum(clear) >= 0.6 * NEW * len(rows), f"too many near-ties: {clear}"

    out = generate(interp.load_model(str(folder)), rows, NEW, stop_ids=(), scores=True)
    assert out.scores.shape == ref_logits.shape
    scale = ref_logits.abs().max()
    for i, n in enumerate(clear):
        upto = min(n + 1, NEW)                  # the near-tie step's logits still agree
        assert out.new_ids[i][:n] == ref[i][:n], (i, out.new_ids[i], ref[i])
        assert (out.scores[i, :upto] - ref_logits[i, :upto]).abs().max() < 1e-5 * scale
    assert out.padding == [0, 33, 20]                 # 36, 3 and 16 tokens, left-padded
    assert out.stopped == [False] * 3


def test_rows_stop_independently(family_dir):
    """A stop token ends its row only; the other rows go on, as in HF generate with that EOS."""
    folder = family_dir("llama")
    tok = _tok(folder)
    rows = _rows(tok)
    bridge = interp.load_model(str(folder))
    free = generate(bridge, rows, NEW, stop_ids=()).new_ids
    j = next(j for j in range(2, NEW) if free[1][j] not in free[1][:j])
    stop = free[1][j]                      # row 1 stops at its (j+1)-th token
    ref, _ = _hf_generate(load_reference("llama", folder), tok, rows, NEW, stops=(stop,))
    out = generate(bridge, rows, NEW, stop_ids=(stop,))
    assert out.new_ids == ref
    assert out.new_ids[1] == free[1][:j + 1] and out.stopped[1]
    assert out.texts[1] == tok.decode(free[1][:j])
    longest = max(range(3), key=lambda i: len(out.new_ids[i]))
    assert len(out.new_ids[longest]) > j + 1   # some row went on past the stop of row 1


@pytest.mark.parametrize("name", ["qwen2", "gemma3"])
def test_hooks_fire_once_per_step_with_the_new_tokens(name, family_dir):
    """Each forward fires each hook once: the prefill with the padded prompt ``[b, P, ...]``,
    then one ``[b, 1, ...]`` per new token; the pattern covers every cached slot."""
    folder = family_dir(name)
    bridge = interp.load_model(str(folder))
    rows = _rows(_tok(folder))
    P = max(map(len, rows))
    seen = {"resid": [], "pattern": [], "q": []}
    bridge(torch.tensor([rows[0]]))          # the bridge adds its own hooks at a first forward
    before = count_hooks(bridge)

    def keep(kind):
        def fn(act, hook):
            seen[kind].append(tuple(act.shape))
        return fn

    hooks = [("blocks.1.hook_resid_post", keep("resid")),
             ("blocks.1.attn.hook_pattern", keep("pattern")),
             ("blocks.1.attn.hook_q", keep("q"))]
    with attach(bridge, hooks):
        out = generate(bridge, rows, NEW, stop_ids=())
    assert all(len(n) == NEW for n in out.new_ids)
    D, H = bridge.cfg.d_model, bridge.cfg.n_heads
    # NEW tokens need NEW forwards: the prefill gives the first, each later one a forward
    assert seen["resid"] == [(3, P, D)] + [(3, 1, D)] * (NEW - 1)
    assert seen["pattern"] == [(3, H, P, P)] + [(3, H, 1, P + t) for t in range(1, NEW)]
    assert [s[1] for s in seen["q"]] == [P] + [1] * (NEW - 1)
    assert count_hooks(bridge) == before


@pytest.mark.parametrize("name", ["gemma3", "gpt2"])
def test_cached_activations_equal_full_unpadded_forwards(name, family_dir):
    """``cache_hooks``: at every step, the residual stream and the attention pattern of every
    row equal an uncached forward of that row alone (no padding) over its prompt and the
    tokens generated so far, at the same position (gemma3: sliding window + GQA; gpt2: learned
    absolute positions)."""
    folder = family_dir(name)
    bridge = interp.load_model(str(folder))
    rows = _rows(_tok(folder))
    hooks = ["blocks.1.hook_resid_post", "blocks.1.attn.hook_pattern"]
    out = generate(bridge, rows, 6, stop_ids=(), cache_hooks=hooks)
    assert len(out.steps) == 6
    for i, (prompt, new) in enumerate(zip(rows, out.new_ids)):
        pad = out.padding[i]
        full = torch.tensor([prompt + new[:-1]])
        cache = {}

        def keeper(name):
            def keep(act, hook):
                cache[name] = act[0].detach().clone()
            return keep
        with attach(bridge, [(h, keeper(h)) for h in hooks]), torch.no_grad():
            bridge(full)
        resid, pattern = cache[hooks[0]], cache[hooks[1]]          # [n, D], [H, n, n]
        n_prompt = len(prompt)
        step0 = out.steps[0]
        assert torch.allclose(step0[hooks[0]][i, pad:], resid[:n_prompt], atol=1e-5)
        assert torch.allclose(step0[hooks[1]][i, :, pad:, pad:],
                              pattern[:, :n_prompt, :n_prompt], atol=1e-6)
        for t in range(1, 6):
            pos = n_prompt + t - 1
            step = out.steps[t]
            assert torch.allclose(step[hooks[0]][i, 0], resid[pos], atol=1e-5), (i, t)
            cached = step[hooks[1]][i, :, 0]                      # [H, P + t]
            assert torch.allclose(cached[:, pad:], pattern[:, pos, :pos + 1], atol=1e-6)
            assert float(cached[:, :pad].abs().sum()) == 0.0          # padding unseen


def test_sliding_window_runs_past_the_window(family_dir):
    """The tiny sliding families' window (6) is shorter than the generated sequences, so the
    equality tests above exercise the windowed cache."""
    assert WINDOW < len(_rows(_tok(family_dir("mistral")))[1]) + NEW
    assert {"mistral", "gemma3"} <= set(SLIDING)


def test_refusals_leave_the_model_as_it_was(family_dir):
    llama = interp.load_model(str(family_dir("llama")))
    llama(torch.tensor([[1, 40, 41]]))       # the bridge adds its own hooks at a first forward
    before = count_hooks(llama)
    with pytest.raises(Refused, match="encoder"):
        generate(interp.load_model(str(family_dir("bert"))), [[1, 40, 41]], 3)
    with pytest.raises(InputError, match="hooked model"):
        generate(load_reference("llama", family_dir("llama")), [[1, 40, 41]], 3)
    with pytest.raises(InputError, match="empty"):
        generate(llama, [[1, 40], []], 3)
    with pytest.raises(InputError, match="max_new_tokens"):
        generate(llama, [[1, 40]], -1)
    with pytest.raises(InputError, match="context"):
        generate(llama, [[1, 40]], llama.cfg.n_ctx)
    with interp.swap_attention(llama, "linear"):
        with pytest.raises(InputError, match="swapped"):
            generate(llama, [[1, 40, 41]], 3)
    # a hook that raises mid-generation: hooks removed, layers unswapped
    def boom(act, hook):
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"):
        with attach(llama, [("blocks.0.hook_resid_post", boom)]):
            generate(llama, [[1, 40, 41]], 3)
    assert count_hooks(llama) == before
    assert not llama.__dict__.get("_interp_swapped_layers")
    assert all("forward" not in block.attn.__dict__ for block in llama.blocks)


def test_full_forward_loop_equals_cached_and_runs_swapped(family_dir):
    """``use_cache=False`` (a full forward per token, one prompt at a time) gives the cached
    tokens, and is the path that works inside a swap: with softmax swapped in it still does."""
    folder = family_dir("qwen2")
    bridge = interp.load_model(str(folder))
    rows = _rows(_tok(folder))
    cached = generate(bridge, rows, NEW, stop_ids=()).new_ids
    assert generate(bridge, rows, NEW, stop_ids=(), use_cache=False).new_ids == cached
    with interp.swap_attention(bridge, "softmax"):
        assert generate(bridge, rows[:1], NEW, stop_ids=(), use_cache=False).new_ids == \
            cached[:1]


def test_toy_without_tokenizer_equals_full_forwards(toy_model):
    """The native toy (no tokenizer, no HF reference): token-id prompts of mixed lengths; each
    step's logits equal a full forward of that row alone over its tokens so far."""
    rows = [[1, 5, 6, 7, 8, 5, 6], [1, 9, 10, 9], [1, 3]]
    out = generate(toy_model, rows, 5, scores=True)
    assert out.texts is None and out.stopped == [False] * 3
    with torch.no_grad():
        for i, (prompt, new) in enumerate(zip(rows, out.new_ids)):
            full = toy_model(torch.tensor([prompt + new[:-1]]))[0]     # [n, vocab]
            want = full[len(prompt) - 1:]                             # the 5 decision rows
            assert (out.scores[i] - want).abs().max() < 1e-5 * want.abs().max()
            assert new == want.argmax(-1).tolist()
    with pytest.raises(InputError, match="tokenizer"):
        generate(toy_model, "text needs a tokenizer", 2)
