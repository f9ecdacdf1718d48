"""Every architecture family, loaded through the folder path from a tiny random checkpoint:
hooks exact against HF eager, probes against definitions computed from HF's own attention
weights, and swaps exact or refused (never silently different).

The family list comes from tests/families/tiny.py; tolerances are the issue's: logits 1e-4,
patterns 1e-5, softmax swap 1e-5 of the logit scale.
"""
from __future__ import annotations

import pytest
import torch

import interp
from interp.attention import names as impl_names
from interp.hooks import count_hooks
from tests.families.tiny import CAUSAL, FAMILY_NAMES, SLIDING, WINDOW, load_reference

N = 20          # prompt length: longer than every tiny sliding window (6)


@pytest.fixture(scope="module")
def family(family_dir):
    """``family(name)`` -> (bridge loaded from the folder, independent HF eager model, ids)."""
    cache = {}

    def get(name):
        if name not in cache:
            folder = family_dir(name)
            model = interp.load_model(folder)
            ref = load_reference(name, folder)
            ids = torch.randint(4, 260, (2, N), generator=torch.Generator().manual_seed(1))
            ids[:, 0] = 1                                       # <bos>
            with torch.no_grad():
                model(ids)                                      # wire the bridge's own hooks
            cache[name] = (model, ref, ids)
        return cache[name]

    return get


def _logits(model, ids):
    with torch.no_grad():
        return model(ids)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_hooks_exact_against_hf(family, name):
    model, ref, ids = family(name)
    info = model.interp_info
    assert info.kind == "folder" and info.bos_token_id == 1
    assert info.causal == (name != "bert")
    assert info.family == ref.config.model_type
    with torch.no_grad():
        want = ref(ids, output_attentions=True)
        logits, cache = model.run_with_cache(ids)
    assert (logits - want.logits).abs().max() < 1e-4
    for layer, pattern in enumerate(want.attentions):
        got = cache[f"blocks.{layer}.attn.hook_pattern"]
        assert (got - pattern).abs().max() < 1e-5, f"layer {layer}"


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_probes_match_definitions_on_hf_attention(family, name):
    """sink alpha(k) = mean over queries i >= k of A[i, k] (Gu et al.); locality = attention
    mass inside the window; induction = attention from the second copy to the token after the
    first occurrence (Olsson et al.). References are computed from HF's output_attentions."""
    from interp.attention import get as get_attention
    from interp.probes.induction import induction_scores
    from interp.probes.locality import locality_scores
    from interp.probes.sink import sink_scores

    model, ref, ids = family(name)
    with torch.no_grad():
        att = torch.stack(ref(ids, output_attentions=True).attentions)   # [L, b, h, q, k]
    causal = name != "bert"
    sink = sink_scores(model, ids, positions=(0,))
    i = torch.arange(N)                      # queries that can see key 0 in each layer
    seen = [(i < s.sliding_window) if s.sliding_window else i >= 0
            for s in interp.describe_layers(model)]
    per_sample = torch.stack([att[layer][..., seen[layer], 0].mean(-1)
                              for layer in range(len(att))]).double()   # [L, b, h]: alpha(0)
    got = sink.sort_values(["layer", "head"])
    for column, want in (("alpha", per_sample.mean(1)), ("alpha_min", per_sample.amin(1)),
                         ("alpha_max", per_sample.amax(1))):
        values = torch.tensor(got[column].to_numpy()).view_as(want)
        assert torch.allclose(values, want, atol=1e-5), column

    w = 4
    loc = locality_scores(model, ids, layouts={"w4": get_attention("sliding_window", window=w)})
    diff = i[:, None] - i[None, :]
    band = ((diff >= 0) & (diff < w)) if causal else (diff.abs() < w)
    want_loc = (att * band).sum(-1).mean(dim=(1, 3))                  # [L, h]
    got_loc = torch.tensor(loc.sort_values(["layer", "head"])["mass_inside"].to_numpy())
    assert torch.allclose(got_loc.view_as(want_loc), want_loc.double(), atol=1e-5)

    if not causal:
        return
    seg = 8
    gen = torch.Generator().manual_seed(2)       # distinct tokens: one earlier occurrence each
    rep = torch.stack([torch.randperm(256, generator=gen)[:seg] + 4 for _ in range(2)])
    toks = torch.cat([torch.ones(2, 1, dtype=torch.long), rep, rep], dim=1)   # bos + 2 copies
    df = induction_scores(model, toks, seg_len=seg).sort_values(["layer", "head"])
    with torch.no_grad():
        a = torch.stack(ref(toks, output_attentions=True).attentions)  # [L, b, h, q, k]
    qi = torch.arange(1 + seg, 1 + 2 * seg)                          # second copy
    ki = qi - seg + 1                                                # after first occurrence
    want_ind = a[..., qi, ki].mean(dim=(1, 3))                       # [L, h]
    got_ind = torch.tensor(df["induction"].to_numpy()).view_as(want_ind)
    assert torch.allclose(got_ind, want_ind.double(), atol=1e-5)


def _scale(logits):
    return logits.abs().max()


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_softmax_swap_equals_model_and_restores(family, name):
    model, _, ids = family(name)
    before = _logits(model, ids)
    hooks = count_hooks(model)
    with interp.swap_attention(model, "softmax"):
        swapped = _logits(model, ids)
        with torch.no_grad():
            _, cache = model.run_with_cache(ids, names_filter=lambda n: n.endswith("hook_pattern"))
    assert (swapped - before).abs().max() <= 1e-5 * _scale(before)
    with torch.no_grad():
        _, want = model.run_with_cache(ids, names_filter=lambda n: n.endswith("hook_pattern"))
    for key in want:                     # the swapped pattern (window, softcap) is the model's
        assert (cache[key] - want[key]).abs().max() < 1e-5, key
    after = _logits(model, ids)
    assert torch.equal(after, before)
    assert count_hooks(model) == hooks
    assert all("forward" not in b.attn.__dict__ for b in model.blocks)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_one_layer_softmax_swap_is_exact(family, name):
    """Only the middle layer swapped: the unswapped layers keep working under the swap's mask
    settings."""
    model, _, ids = family(name)
    before = _logits(model, ids)
    with interp.swap_attention(model, "softmax", layers=[1]):
        swapped = _logits(model, ids)
    assert (swapped - before).abs().max() <= 1e-5 * _scale(before)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_linear_swap_changes_logits_or_refuses_and_restores(family, name):
    model, _, ids = family(name)
    before = _logits(model, ids)
    specs = interp.describe_layers(model)
    needs = [s for s in specs if s.sliding_window is not None or s.softcap is not None]
    if needs:
        with pytest.raises(NotImplementedError, match=needs[0].layer_type) as err:
            with interp.swap_attention(model, "linear", feature_map="elu"):
                pass
        assert "cannot reproduce exactly" in str(err.value)
        assert all("forward" not in b.attn.__dict__ for b in model.blocks)
        ignore = ("sliding_window", "softcap")
    else:
        ignore = ()
    with interp.swap_attention(model, "linear", feature_map="elu", ignore=ignore):
        swapped = _logits(model, ids)
    assert (swapped - before).abs().max() > 1e-3 * _scale(before)
    assert torch.equal(_logits(model, ids), before)


@pytest.mark.parametrize("name", SLIDING)
def test_sliding_layers_keep_their_window(family, name):
    """Dropping the window knowingly changes the model: so the exact softmax swap above really
    applied each sliding layer's own window (a swap that forgot it would fail there)."""
    model, _, ids = family(name)
    specs = interp.describe_layers(model)
    assert {s.sliding_window for s in specs} >= {WINDOW}
    before = _logits(model, ids)
    with interp.swap_attention(model, "softmax", ignore=("sliding_window",)):
        dropped = _logits(model, ids)
    assert (dropped - before).abs().max() > 1e-3 * _scale(before)


@pytest.mark.parametrize("name", ["qwen3", "gemma2"])
@pytest.mark.parametrize("impl", impl_names())
def test_every_implementation_is_exact_or_refused(family, name, impl):
    """Qwen3-like (q/k norm) and Gemma-2-like (soft-capping, sliding windows, query_pre_attn
    scalar): each registered implementation, set up so that its own allowed set covers the
    whole causal triangle, must equal the model or be refused: never silently different."""
    model, _, ids = family(name)
    full = {"softmax": {}, "sliding_window": {"window": N}, "sink_window": {"window": N},
            "block_sparse": {"block_size": 4, "local_blocks": N, "random_blocks": 0},
            "linear": {"feature_map": "elu"}}
    before = _logits(model, ids)
    specs = interp.describe_layers(model)
    scored = any(s.sliding_window is not None or s.softcap is not None for s in specs)
    try:
        with interp.swap_attention(model, impl, **full.get(impl, {})):
            got = _logits(model, ids)
    except NotImplementedError as e:
        assert "cannot reproduce exactly" in str(e)
        assert impl == "linear" and scored, "a masking implementation was refused"
        return
    if impl == "linear":     # no window / softcap to honour: a real (intended) change
        assert not scored, "linear attention was swapped into soft-capped / windowed layers"
        assert (got - before).abs().max() > 1e-3 * _scale(before)
        return
    assert (got - before).abs().max() <= 1e-5 * _scale(before), impl


@pytest.mark.parametrize("name", CAUSAL)
def test_swap_refuses_padding(family, name):
    model, _, ids = family(name)
    mask = torch.ones_like(ids)
    mask[0, 0] = 0
    with pytest.raises(ValueError, match="padded"):
        with interp.swap_attention(model, "softmax"):
            with torch.no_grad():
                model(ids, attention_mask=mask)


def test_cli_probes_a_model_folder(family_dir, capsys):
    """`interp probe sink --model <folder>`: the CLI takes any loadable spec, and its table
    equals the library call on the same model."""
    import io

    import pandas as pd

    from interp.cli import main
    from interp.probes.sink import sink_scores

    folder = family_dir("qwen3")
    assert main(["probe", "sink", "--model", str(folder), "--prompt", "the cat sat on the mat",
                 "--format", "csv"]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out))
    model = interp.load_model(folder)
    want = sink_scores(model, "the cat sat on the mat")
    want = want[want["position"] == 0].groupby("layer")["alpha"].mean()
    assert len(table) == model.cfg.n_layers
    got = table.set_index("layer")["mass_0"]
    assert (got - want).abs().max() < 1e-4          # the CLI prints 4 decimals


@pytest.mark.parametrize("name", SLIDING)
def test_sink_alpha_counts_only_queries_inside_the_window(family, name):
    """alpha(k) = mean of A[i, k] over the queries that can see k: in a sliding layer, only
    i - k < window (queries beyond it give exactly 0 and must not dilute the mean)."""
    from interp.probes.sink import sink_scores

    model, ref, ids = family(name)
    with torch.no_grad():
        att = torch.stack(ref(ids, output_attentions=True).attentions)   # [L, b, h, q, k]
    df = sink_scores(model, ids, positions=(2,)).sort_values(["layer", "head"])
    for spec in interp.describe_layers(model):
        i = torch.arange(N)
        seen = (i >= 2) & ((i - 2 < spec.sliding_window) if spec.sliding_window else True)
        want = att[spec.layer][..., seen, 2].mean(-1).mean(0).double()   # [h]
        got = torch.tensor(df[df["layer"] == spec.layer]["alpha"].to_numpy())
        assert torch.allclose(got, want, atol=1e-5), spec.describe()


@pytest.mark.parametrize("name", ["llama", "gemma2", "gemma3"])
def test_head_weights_fold_each_familys_norms(family, name):
    """W_V, W_O, W_U as read from the HF modules by hand: the pre-attention norm's scale on
    W_V's rows, Gemma's post-attention norm on W_O's columns, the final norm on W_U, with
    Gemma's ``1 + weight`` convention."""
    from interp.weights import head_weights

    model, ref, _ = family(name)
    hw = head_weights(model)
    gemma = name.startswith("gemma")
    inner = ref.model
    H, d = hw.n_heads, hw.W_V.shape[-1]
    group = H // ref.config.num_key_value_heads
    for layer, block in enumerate(inner.layers):
        att = block.self_attn
        ln = block.input_layernorm.weight + (1.0 if gemma else 0.0)
        w_v = (att.v_proj.weight.T * ln[:, None]).view(-1, H // group, d)      # [D, kv, d]
        want_v = w_v.repeat_interleave(group, dim=1).permute(1, 0, 2)          # [H, D, d]
        assert torch.allclose(hw.W_V[layer], want_v, atol=1e-6)
        w_o = att.o_proj.weight.T.reshape(H, d, -1)                            # [H, d, D]
        if gemma:
            w_o = w_o * (1.0 + block.post_attention_layernorm.weight)
        assert torch.allclose(hw.W_O[layer], w_o, atol=1e-6)
    final = inner.norm.weight + (1.0 if gemma else 0.0)
    assert torch.allclose(hw.W_U, ref.lm_head.weight.T * final[:, None], atol=1e-6)


def test_gemma2_softcap_matters(family):
    """Dropping the soft-capping knowingly changes the model, so the exact softmax swap above
    really applied it."""
    model, _, ids = family("gemma2")
    before = _logits(model, ids)
    with interp.swap_attention(model, "softmax", ignore=("softcap",)):
        dropped = _logits(model, ids)
    assert (dropped - before).abs().max() > 1e-3 * _scale(before)
