"""The ``streaming`` experiment kind end to end on a short text."""
import pandas as pd
import pytest

from interp.experiments import run_experiment


@pytest.mark.slow
def test_streaming_kind_writes_sweep_and_stream(tmp_path):
    spec = {"kind": "streaming", "config": {
        "text": "alice", "sweep_tokens": 160, "windows": [16, 32], "sinks": [0, 4],
        "stream_tokens": 120, "stream_window": 16, "stream_sinks": 4, "chunk": 40,
        "recompute_stride": 40, "threads": 1}}
    out = run_experiment(spec, out_dir=tmp_path / "run", progress=False)
    sweep = pd.read_csv(out / "window_sweep.csv")
    blow = pd.read_csv(out / "blowup.csv").set_index("window")
    assert len(sweep) == 1 + 2 * 2
    # losing the first tokens hurts at the smallest window, sinks win most of it back
    assert blow.loc[16, "blowup"] > 2.0 and blow.loc[32, "blowup"] > 1.5
    summary = pd.read_csv(out / "stream_summary.csv").set_index("mode")
    assert summary.loc["window", "ppl_after_evict"] > summary.loc["sink", "ppl_after_evict"]
    html = (out / "report.html").read_text()
    assert "ppl_vs_window" in html and "ppl_per_chunk" in html


def test_config_needs_window_only_and_sink_rows(tmp_path):
    from interp.config import ConfigError

    spec = {"kind": "streaming", "config": {"sinks": [4]}}
    with pytest.raises((ConfigError, ValueError), match="sinks must include 0"):
        run_experiment(spec, out_dir=tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad" / "report.html").exists()
