"""Long-context probes: the blockwise path (row blocks of exact softmax, never an [n, n]
pattern) equals the pattern-hook path on the toy, SmolLM2 and each family's tiny model; no
[n, n] tensor is built; the forward stops after the last probed layer; hooks and swaps are
gone afterwards, also when a reducer raises."""
from __future__ import annotations

import warnings

import pytest
import torch

import interp
from interp.attention.rows import MAX_ROWS, row_block_attention
from interp.hooks import count_hooks
from interp.probes import blockwise
from interp.probes.blockwise import choose_method, run_blockwise
from interp.probes.distraction import CATEGORIES, distraction_scores
from interp.probes.induction import pattern_scores, repeated_random_tokens
from interp.probes.locality import default_layouts, locality_scores
from interp.probes.sink import sink_probe
from interp.s2a import load_examples
from interp.s2a.pipeline import _segment_prompt
from tests.families.tiny import FAMILY_NAMES, SLIDING, WINDOW
from tests.shapes import ShapeRecorder, has_square

TOL = 1e-5


def max_diff(a, b, cols):
    return float((a[cols].reset_index(drop=True) - b[cols].reset_index(drop=True)).abs().max().max())


# ------------------------------------------------------------------ the row-block kernel


def dense_reference(q, k, v, scale, causal, window, softcap):
    """softmax(cap(q k^T scale) + mask) v with the whole [n, n] matrix, float64."""
    h, hk, n = q.shape[1], k.shape[1], q.shape[2]
    k = k.double().repeat_interleave(h // hk, dim=1)
    v = v.double().repeat_interleave(h // hk, dim=1)
    s = q.double() @ k.transpose(-1, -2) * scale
    if softcap is not None:
        s = softcap * torch.tanh(s / softcap)
    i = torch.arange(n)[:, None]
    j = torch.arange(n)[None, :]
    ok = (j <= i) if causal else torch.ones(n, n, dtype=torch.bool)
    if window is not None:
        ok &= ((i - j) if causal else (i - j).abs()) < window
    p = torch.softmax(s.masked_fill(~ok, float("-inf")), -1)
    return p @ v, p


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
@pytest.mark.parametrize("window,softcap", [(None, None), (5, None), (None, 2.0), (4, 1.5)])
@pytest.mark.parametrize("block_rows", [1, 7, None])
def test_row_blocks_equal_the_dense_reference(causal, window, softcap, block_rows):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, h, 23, 8, generator=g) for h in (4, 2, 2))
    seen = torch.zeros(2, 4, 23, 23, dtype=torch.float64)

    def on_rows(i0, j0, p):
        seen[:, :, i0:i0 + p.shape[2], j0:j0 + p.shape[3]] += p.double()

    out = row_block_attention(q, k, v, scale=0.3, causal=causal, window=window,
                              softcap=softcap, block_rows=block_rows, on_rows=on_rows)
    ref, pattern = dense_reference(q, k, v, 0.3, causal, window, softcap)
    assert (out.double() - ref).abs().max() < 1e-5
    assert (seen - pattern).abs().max() < 1e-6      # every row, every key, once


def test_default_blocks_never_hold_the_whole_matrix():
    n = MAX_ROWS * 2 + 17
    q = torch.randn(1, 2, n, 4)
    rec = ShapeRecorder()
    with rec:
        row_block_attention(q, q, q, scale=0.5)
    assert not has_square(rec.shapes, n)


# ------------------------------------------------------------------ probes: blockwise == pattern


def _both(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs, method="pattern"), fn(*args, **kwargs, method="blockwise")


SINK_COLS = ["alpha", "alpha_min", "alpha_max", "sink_share"]
INDUCTION_COLS = ["induction", "prefix_matching", "previous_token", "duplicate_token"]


def test_toy_probes_blockwise_equal_pattern(toy_model):
    x = torch.randint(0, 20, (3, 60))
    a, b = _both(sink_probe, toy_model, x, positions=[0, 1, 5])
    assert max_diff(a.scores, b.scores, SINK_COLS) < TOL
    assert max_diff(a.norms, b.norms, ["k_ratio", "v_ratio"]) < TOL
    for toks, seg in ((x, None), (repeated_random_tokens(toy_model, batch=3, seg_len=20), 20)):
        a, b = _both(pattern_scores, toy_model, toks, seg_len=seg)
        assert max_diff(a, b, INDUCTION_COLS) < TOL
        assert a.prefix_matching.max() > 0.05           # a non-trivial comparison
    a, b = _both(locality_scores, toy_model, x, default_layouts((4, 16)), min_query=8)
    assert max_diff(a, b, ["mass_inside", "min_mass_inside"]) < TOL
    assert a.mass_inside.min() < 0.9


def test_smollm2_probes_blockwise_equal_pattern(smollm2):
    text = ("The lighthouse keeper climbed the stairs every evening. The lighthouse keeper "
            "lit the lamp, and the ships passed safely. ") * 6
    a, b = _both(sink_probe, smollm2, text)
    assert max_diff(a.scores, b.scores, SINK_COLS) < TOL
    assert a.scores.alpha.max() > 0.5                   # smollm2 has strong sinks
    a, b = _both(pattern_scores, smollm2, smollm2.to_tokens(text))
    assert max_diff(a, b, INDUCTION_COLS) < TOL
    toks = repeated_random_tokens(smollm2, batch=2, seg_len=40)
    a, b = _both(pattern_scores, smollm2, toks, seg_len=40)
    assert max_diff(a, b, INDUCTION_COLS) < TOL
    assert a.induction.max() > 0.5
    a, b = _both(locality_scores, smollm2, text, default_layouts((16,)), layers=[0, 7, 15])
    assert max_diff(a, b, ["mass_inside", "min_mass_inside"]) < TOL


def test_smollm2_distraction_blockwise_equals_pattern(smollm2):
    tok = smollm2.tokenizer
    ex = load_examples(limit=1)[0]
    lp = _segment_prompt(tok, ex.id, ex.segments, ex.question)
    a, b = _both(distraction_scores, smollm2, [lp], layers=[0, 10, 29])
    assert max_diff(a, b, list(CATEGORIES)) < TOL


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_families_blockwise_equal_pattern(family_dir, name):
    """Every family's own attention (sliding windows, Gemma 2 soft-capping, q/k norms,
    partial rotary, a bidirectional encoder) reduced blockwise equals its pattern hook."""
    model = interp.load_model(str(family_dir(name)))
    g = torch.Generator().manual_seed(1)
    x = torch.randint(4, 40, (2, 3 * WINDOW + 5), generator=g)
    a, b = _both(sink_probe, model, x, positions=[0, 2])
    assert max_diff(a.scores, b.scores, SINK_COLS) < TOL
    a, b = _both(pattern_scores, model, x)
    assert max_diff(a, b, INDUCTION_COLS) < TOL
    if name in SLIDING:     # keys beyond the window get nothing, in both paths
        a, b = _both(locality_scores, model, x, default_layouts((WINDOW,)))
        assert max_diff(a, b, ["mass_inside", "min_mass_inside"]) < TOL


# ------------------------------------------------------------------ memory and early stop


@pytest.mark.parametrize("probe", ["sink", "induction", "locality", "distraction"])
@torch.no_grad()
def test_blockwise_probe_builds_no_square_tensor_and_no_logits(smollm2, probe):
    n = 600
    x = torch.randint(1000, 5000, (1, n))
    x[0, 300:400] = x[0, 100:200]
    rec = ShapeRecorder()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rec:
            if probe == "sink":
                sink_probe(smollm2, x, layers=[0, 5], method="blockwise")
            elif probe == "induction":
                pattern_scores(smollm2, x, layers=[0, 5], method="blockwise")
            elif probe == "locality":
                locality_scores(smollm2, x, layers=[0, 5], method="blockwise")
            else:
                out = {}
                run_blockwise(smollm2, x, [0, 5],
                              lambda layer, i0, j0, p: out.setdefault(layer, p.sum()))
    assert not has_square(rec.shapes, n), f"{probe}: an [n, n] tensor was built"
    vocab = smollm2.cfg.d_vocab
    assert not any(len(s) == 3 and s[-1] == vocab for s in rec.shapes), "logits were computed"
    # the pattern path, by contrast, holds the [n, n] pattern (the check can fail)
    rec = ShapeRecorder()
    with rec:
        sink_probe(smollm2, x, layers=[0], norms=False, method="pattern")
    assert has_square(rec.shapes, n)


def test_blockwise_stops_after_last_probed_layer(toy_model):
    calls = []
    hooks = [(f"blocks.{layer}.hook_resid_pre", lambda x, hook: calls.append(hook.name))
             for layer in range(toy_model.cfg.n_layers)]
    run_blockwise(toy_model, torch.randint(0, 50, (1, 30)), [0], lambda *a: None, hooks)
    assert len(calls) == 1 and calls[0].startswith("blocks.0.")    # layer 1 never ran


def test_reducer_error_leaves_model_unswapped_and_unhooked(toy_model):
    x = torch.randint(0, 50, (2, 30))
    before = toy_model(x)
    hooks_before = count_hooks(toy_model)

    def bad(layer, i0, j0, p):
        raise KeyError("reducer failed")

    with pytest.raises(KeyError, match="reducer failed"):
        run_blockwise(toy_model, x, [1], bad)
    assert count_hooks(toy_model) == hooks_before
    assert not toy_model.__dict__.get("_interp_swapped_layers")
    assert torch.equal(toy_model(x), before)


def test_choose_method(toy_model, monkeypatch):
    x = torch.zeros(2, 40, dtype=torch.long)
    assert choose_method(toy_model, x, "auto") == "pattern"
    monkeypatch.setattr(blockwise, "AUTO_PATTERN_FLOATS", 2 * 4 * 40 * 40 - 1)
    assert choose_method(toy_model, x, "auto") == "blockwise"
    assert choose_method(toy_model, x, "pattern") == "pattern"
    with pytest.raises(ValueError, match="method must be one of"):
        choose_method(toy_model, x, "fast")


@pytest.mark.slow
def test_smollm2_full_context_probe_peak_rss_under_4gb(tmp_path):
    """A sink + induction probe of SmolLM2 at its full 8192-token context, in a fresh process:
    peak RSS (model load included) under 4 GB. Read from ``VmHWM`` (this process's own
    high-water mark), not ``ru_maxrss``, which after fork + exec still counts the parent's RSS
    at the fork (a multi-GB pytest process)."""
    import subprocess
    import sys

    code = (
        "import torch, interp\n"
        "from interp.probes.sink import sink_probe\n"
        "from interp.probes.induction import pattern_scores\n"
        "torch.set_num_threads(2)\n"
        "m = interp.load_model('smollm2-135m')\n"
        "x = torch.randint(1000, 40000, (1, 8192))\n"
        "x[0, 4096:] = x[0, :4096]\n"
        "s = sink_probe(m, x, layers=[0, 1, 2, 3])\n"
        "d = pattern_scores(m, x, seg_len=4096, offset=0, layers=[3])\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]\n"
        "print(int(hwm.split()[1]) / 2**20, s.scores.alpha.max(), d.induction.max())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=900, check=True).stdout.split()
    rss_gb, alpha, ind = map(float, out[-3:])
    assert rss_gb < 4.0, f"peak RSS {rss_gb:.2f} GB"
    assert 0 < alpha <= 1 and 0 <= ind <= 1


def test_encoder_copying_is_refused_not_invented(family_dir):
    """BERT's post-LN attention has no direct OV path: copying_scores refuses by name and
    induction_scores keeps its pattern scores with copying NaN and a warning."""
    from interp.probes.common import ProbeWarning
    from interp.probes.induction import copying_scores, induction_scores

    model = interp.load_model(str(family_dir("bert")))
    with pytest.raises(ValueError, match="copying scores"):
        copying_scores(model)
    x = torch.randint(4, 40, (1, 20))
    with pytest.warns(ProbeWarning, match="copying is NaN"):
        df = induction_scores(model, x, seg_len=None)
    assert df.copying.isna().all() and df.previous_token.notna().all()
