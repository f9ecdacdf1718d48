"""window_sweep (one masked forward per window) against the streaming KV cache (token-by-token
decode, positions inside the cache, keys re-rotated): two independent paths to the same
window-only perplexity."""
import math

import pandas as pd
import pytest
import torch

from interp.streaming import evaluate_stream, stream_tokens
from interp.streaming.window_sweep import blowup_table, window_sweep


@pytest.mark.slow
def test_sweep_equals_streaming_cache(smollm2, lm):
    from interp.data import load_text

    toks = stream_tokens(lm.tokenizer, load_text("alice"), 120)
    r = evaluate_stream(lm, toks, window=16, sinks=4, modes=("window", "sink"), chunk=60,
                        progress=False)
    sweep = window_sweep(smollm2, toks, windows=(16, 20), sinks=(0, 4))
    start = 20 + 4                       # sweep's ppl_beyond: tokens start+1 .. T-1
    stream = {m: math.exp(r.nll[m][start + 1:].mean()) for m in ("window", "sink")}
    pick = sweep.set_index(["window", "sinks"])["ppl_beyond"]
    # window-only cache of capacity 20 = window 20 without sinks; sink mode = 4 + 16.
    assert pick[(20, 0)] == pytest.approx(stream["window"], rel=1e-3)
    # sinks: original positions here, positions inside the cache in the stream; close
    assert pick[(16, 4)] == pytest.approx(stream["sink"], rel=0.1)
    assert pick[(16, 4)] < 0.5 * pick[(16, 0)] and stream["sink"] < 0.5 * stream["window"]
    dense = sweep[sweep.window.isna()].iloc[0]
    # dense over the whole text equals the model's own loss
    with torch.no_grad():
        logits = smollm2(toks[None])
    loss = torch.nn.functional.cross_entropy(logits[0, :-1], toks[1:])
    assert dense.ppl == pytest.approx(math.exp(float(loss)), rel=1e-4)
    # every window restriction costs something on text beyond the window
    assert (sweep.dropna().ppl_beyond > dense.ppl_beyond).all()
    assert not smollm2.__dict__.get("_interp_swapped_layers")       # every swap undone


def test_blowup_table_ratios():
    nan = math.nan
    sweep = pd.DataFrame({"window": [nan, 16, 16, 64, 64], "sinks": [nan, 0, 4, 0, 4],
                          "ppl": [1.0] * 5, "ppl_beyond": [10.0, 600.0, 60.0, 80.0, 25.0],
                          "n_beyond": [100] * 5})
    t = blowup_table(sweep).set_index("window")
    assert t.loc[16, "blowup"] == pytest.approx(10.0)
    assert t.loc[64, "blowup"] == pytest.approx(3.2)
    assert t.loc[64, "sink_vs_dense"] == pytest.approx(2.5)
    with pytest.raises(ValueError, match="sinks=3"):
        blowup_table(sweep, sinks=3)
    with pytest.raises(ValueError, match="window-only"):
        blowup_table(sweep[sweep.sinks != 0])


def test_bad_arguments(toy_model):
    n_ctx = toy_model.cfg.n_ctx
    toks = torch.zeros(n_ctx + 1, dtype=torch.long)
    with pytest.raises(ValueError, match="over the model's context"):
        window_sweep(toy_model, toks, windows=(4,))
    with pytest.raises(ValueError, match="windows must be positive"):
        window_sweep(toy_model, toks[:20], windows=(0,))
    with pytest.raises(ValueError, match="leave none beyond"):
        window_sweep(toy_model, toks[:10], windows=(8,), sinks=(0, 4))
    with pytest.raises(ValueError, match=r"\[T\] or \[1, T\]"):
        window_sweep(toy_model, torch.zeros(2, 20, dtype=torch.long), windows=(4,))
