"""Streaming evaluation: modes agree while the stream fits the cache, the chunk table is
complete, the CLI prints it, and window-only blows up where sink + window does not."""
from __future__ import annotations

import io
import math

import pandas as pd
import pytest
import torch

from interp.streaming import StreamingLM, evaluate_stream, stream_tokens


@pytest.fixture(scope="module")
def text():
    from interp.data import load_text

    return load_text("pydoc-topics")


def test_modes_agree_while_the_stream_fits(lm, text):
    toks = stream_tokens(lm.tokenizer, text, 30)
    assert toks[0] == lm.tokenizer.bos_token_id
    seen = []
    r = evaluate_stream(lm, toks, window=36, sinks=4, chunk=10, recompute_stride=7,
                        on_chunk=seen.append, progress=False)
    assert torch.isnan(r.nll["dense"][0]) and not torch.isnan(r.nll["dense"][1:]).any()
    for mode in ("window", "sink"):
        assert torch.allclose(r.nll[mode][1:], r.nll["dense"][1:], atol=1e-4)
    rec = ~torch.isnan(r.nll["recompute"])
    assert rec.nonzero().flatten().tolist() == [7, 14, 21, 28]
    assert torch.allclose(r.nll["recompute"][rec], r.nll["dense"][rec], atol=1e-4)
    assert len(seen) == len(r.chunks) == 4 * 3
    assert set(r.chunks["mode"]) == {"dense", "window", "sink", "recompute"}
    dense = r.chunks[r.chunks["mode"] == "dense"]
    # chunk perplexity = exp(mean nll over its tokens)
    assert dense.ppl.iloc[1] == pytest.approx(math.exp(r.nll["dense"][10:20].mean()))
    summ = r.summary().set_index("mode")
    assert summ.loc["sink", "ppl"] == pytest.approx(summ.loc["dense", "ppl"], rel=1e-4)


def test_bad_arguments(lm):
    with pytest.raises(ValueError, match="unknown mode"):
        evaluate_stream(lm, torch.arange(10), modes=("sinks",), progress=False)
    with pytest.raises(ValueError, match="over the model's context"):
        evaluate_stream(lm, torch.arange(10), window=9000, progress=False)
    with pytest.raises(ValueError, match="only"):
        stream_tokens(lm.tokenizer, "a short text", 1000)


def test_cli_stream_prints_chunks(capsys):
    from interp.cli import main

    rc = main(["stream", "--tokens", "40", "--window", "16", "--sinks", "4", "--chunk", "20",
               "--mode", "sink", "--mode", "window", "--text", "pydoc-topics",
               "--format", "csv", "--threads", "1"])
    assert rc == 0
    out = capsys.readouterr()
    df = pd.read_csv(io.StringIO(out.out))
    assert set(df["mode"]) == {"sink", "window"} and len(df) == 4
    assert "ppl" in out.err and "summary" in out.err


def test_cli_stream_unknown_text(capsys):
    from interp.cli import main

    assert main(["stream", "--text", "alise", "--tokens", "10"]) == 2
    assert "Did you mean 'alice'" in capsys.readouterr().err


@pytest.mark.slow
def test_window_only_blows_up_where_sinks_do_not():
    """600-token stream, cache 4 + 64: once the first tokens leave the cache, window-only
    perplexity is several times that of sink + window, which stays close to dense."""
    from interp.data import load_text

    lm = StreamingLM.from_name("smollm2-135m", dtype="bfloat16")      # 2x faster decode
    toks = stream_tokens(lm.tokenizer, load_text("alice"), 600)
    r = evaluate_stream(lm, toks, window=64, sinks=4, modes=("dense", "window", "sink"),
                        chunk=200, progress=False)
    s = r.summary().set_index("mode").ppl_after_evict
    assert s["window"] > 2.5 * s["sink"], s
    assert s["sink"] < 1.5 * s["dense"], s
