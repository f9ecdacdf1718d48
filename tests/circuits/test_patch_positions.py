"""Patching by position and pattern (``patch_heads(component=..., by_position=...)``,
``patch_pattern``) on the toy model and every tiny family of tests/families/tiny.py.

Every number is checked against an independent single-cell forward written here: the base
tokens run once with one hook that copies one cell of the source run's activation (cached by
a plain forward) into the base activation, nothing else. Also checked: which hook points'
edits reach the output on each family (the family adapters' ``patchable`` claims), the GQA
key/value head -> query heads map (against the config and against which heads' outputs move
when one KV head is perturbed), pattern-entry semantics (TransformerLens' overwrite, and the
renormalised row summing to 1), the start-at-layer forward against the whole forward, sweeps,
argument validation, and TransformerLens' own ``get_act_patch_attn_head_*_by_pos`` functions
run on a bridge.
"""
from __future__ import annotations

import pandas as pd
import pytest
import torch

import interp
from interp.circuits.activation import patch_heads
from interp.circuits.metrics import logprob_metric
from interp.circuits.model import forward_from
from interp.circuits.positions import COMPONENTS, patch_pattern
from interp.circuits.tasks import PatchingTask, induction_task
from interp.errors import InputError, Refused
from interp.families import family_of
from interp.hooks import attach
from tests.circuits import brute as B
from tests.families.tiny import CAUSAL, FAMILY_NAMES

MODELS = ("toy",) + CAUSAL
HOOK = "blocks.{}.attn.hook_{}"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, toy_model):
    """``tiny(name)`` -> (model, task): the toy (conftest) or a tiny family loaded from its
    folder (noisy norm scales and biases), with a short induction task (9 tokens)."""
    from tests.families.tiny import build_family

    cache = {}

    def get(name):
        if name not in cache:
            if name == "toy":
                model = toy_model
            else:
                folder = build_family(name, tmp_path_factory.mktemp(f"pos-{name}"), perturb=True)
                model = interp.load_model(folder)
            cache[name] = (model, _task(model, name))
        return cache[name]

    return get


def _task(model, name):
    if name != "bert":
        return induction_task(model, batch=2, seg_len=4, seed=0)
    gen = torch.Generator().manual_seed(3)
    clean = torch.randint(4, 260, (2, 9), generator=gen)
    corrupted = clean.clone()
    corrupted[:, 1:4] = torch.randint(4, 260, (2, 3), generator=gen)
    pos = torch.tensor([5, 8])
    return PatchingTask(clean, corrupted, logprob_metric(pos, clean[:, pos]), name="mlm")


def _pairs(task) -> list[tuple[int, int]]:
    """(dest, src) pairs inside the task's sequence (8 or 9 tokens: with or without BOS):
    into the first copy, the diagonal, and the first token."""
    n = task.clean.shape[1]
    return [(n - 4, n - 7), (n - 2, n - 5), (n - 1, n - 1), (n - 1, 0)]


def _tokens(task, direction):
    return (task.corrupted, task.clean) if direction == "denoise" else (task.clean, task.corrupted)


@torch.no_grad()
def single(model, task, name, edit, direction="denoise") -> float:
    """One hooked forward of the base tokens: ``edit(base act, source act)`` (in place, on a
    copy) at hook point ``name``, the source activation from a plain forward."""
    base_t, src_t = _tokens(task, direction)
    src = B.cache(model, src_t, [name])[name]

    def fn(act, hook):
        act = act.clone()
        edit(act, src)
        return act

    with attach(model, [(name, fn)]):
        return float(task.metric(model(base_t)))


def _tol(df) -> float:
    return 1e-5 * max(1.0, abs(df.attrs["clean"]), abs(df.attrs["corrupted"]))


def _edit(component, by_position, head, pos):
    """The single-cell edit, written from the hook layouts: ``[b, pos, head, d]`` for q/k/v/z
    (k/v: KV heads), ``[b, head, dest, src]`` for the pattern (a position is a dest row)."""
    if component == "pattern":
        if by_position:
            def edit(a, s):
                a[:, head, pos, :] = s[:, head, pos, :]
        else:
            def edit(a, s):
                a[:, head] = s[:, head]
    elif by_position:
        def edit(a, s):
            a[:, pos, head, :] = s[:, pos, head, :]
    else:
        def edit(a, s):
            a[:, :, head, :] = s[:, :, head, :]
    return edit


def _n_kv(model) -> int:
    hf = getattr(getattr(model, "original_model", None), "config", None)
    kv = getattr(hf, "num_key_value_heads", None) if hf is not None else None
    return int(kv or getattr(model.cfg, "n_key_value_heads", None) or model.cfg.n_heads)


# ------------------------------------------------------------------ every cell, every family
@pytest.mark.parametrize("name", MODELS + ("bert",))
def test_every_cell_by_position_equals_a_single_cell_forward(tiny, name):
    """Every (layer, head, position) cell of every component; BERT (bidirectional encoder)
    takes z/q/k/v (its hook_pattern edits are discarded: refused, tested below)."""
    model, task = tiny(name)
    moved = {}
    for component in (c for c in COMPONENTS if name != "bert" or c != "pattern"):
        df = patch_heads(model, task, component=component, by_position=True, progress=False)
        H = _n_kv(model) if component in ("k", "v") else model.cfg.n_heads
        seq = task.clean.shape[1]
        assert len(df) == model.cfg.n_layers * H * seq
        assert set(df["head"]) == set(range(H)) and set(df.pos) == set(range(seq))
        tol = _tol(df)
        for r in df.itertuples():
            want = single(model, task, HOOK.format(r.layer, component),
                          _edit(component, True, r.head, r.pos))
            assert abs(r.metric - want) <= tol, (component, r)
        moved[component] = float((df.metric - df.attrs["corrupted"]).abs().max())
    assert min(moved.values()) > 1e-6, moved           # every component's patches matter
    assert max(moved.values()) > 1e-3, moved


@pytest.mark.parametrize("name", MODELS)
def test_whole_head_components_and_noise_direction(tiny, name):
    """``by_position=False`` for q/k/v/pattern (every position of a head at once) in both
    directions, each row = the single-cell forward."""
    model, task = tiny(name)
    for component, direction in (("q", "noise"), ("k", "denoise"), ("v", "noise"),
                                 ("pattern", "denoise"), ("pattern", "noise")):
        df = patch_heads(model, task, direction=direction, component=component,
                         progress=False, max_batch=4)
        assert "pos" not in df.columns
        for r in df.itertuples():
            want = single(model, task, HOOK.format(r.layer, component),
                          _edit(component, False, r.head, None), direction)
            assert abs(r.metric - want) <= _tol(df), (component, direction, r)


@pytest.mark.parametrize("name", MODELS)
def test_z_table_is_unchanged(tiny, name):
    """``by_position=False`` with ``"z"`` is today's table: columns ``layer, head, metric,
    normalised``, one row per (layer, head), each = the brute force of
    tests/circuits/brute.py; the explicit arguments give the default call's table."""
    model, task = tiny(name)
    df = patch_heads(model, task, progress=False)
    assert list(df.columns) == ["layer", "head", "metric", "normalised"]
    assert len(df) == model.cfg.n_layers * model.cfg.n_heads
    for r in df.itertuples():
        assert abs(r.metric - B.patch_head(model, task, r.layer, r.head)) <= _tol(df)
    explicit = patch_heads(model, task, component="z", by_position=False, progress=False)
    pd.testing.assert_frame_equal(explicit, df)


# --------------------------------------------------------------------------------- GQA
@pytest.mark.parametrize("name", MODELS)
def test_kv_tables_name_the_query_heads_that_read_them(tiny, name):
    """k/v tables have one row per KV head (the config's count) and ``query_heads`` lists
    exactly the query heads whose output moves when that KV head's value is perturbed."""
    model, task = tiny(name)
    n_kv, H = _n_kv(model), model.cfg.n_heads
    df = patch_heads(model, task, component="k", layers=[1], progress=False)
    assert list(df.columns) == ["layer", "head", "query_heads", "metric", "normalised"]
    assert list(df["head"]) == list(range(n_kv))
    groups = [sorted(int(h) for h in s.split(",")) for s in df.query_heads]
    assert sorted(h for g in groups for h in g) == list(range(H))      # a partition
    assert all(len(g) == H // n_kv for g in groups)
    z_name, v_name = HOOK.format(1, "z"), HOOK.format(1, "v")
    ref = B.cache(model, task.clean, [z_name])[z_name]
    for g, readers in zip(df["head"], groups):
        def bump(v, hook, g=g):
            v = v.clone()
            v[:, :, g] += 1.0
            return v

        with attach(model, [(v_name, bump)]):
            z = B.cache(model, task.clean, [z_name])[z_name]
        changed = [h for h in range(H) if (z[:, :, h] - ref[:, :, h]).abs().max() > 1e-6]
        assert changed == readers, (g, changed, readers)
    v = patch_heads(model, task, component="v", layers=[1], by_position=True,
                    positions=[3], progress=False)
    assert list(v.query_heads) == list(df.query_heads)


# ------------------------------------------------------------ which hook edits propagate
@pytest.mark.filterwarnings("ignore:A hook on .*hook_pattern returned a modified tensor")
@pytest.mark.parametrize("name", ("toy",) + FAMILY_NAMES)
def test_patchable_components_are_the_ones_whose_edits_reach_the_output(tiny, name):
    """Every family's claim: a component is patched iff editing its hook point changes the
    logits; a component whose edits are discarded (BERT's hook_pattern) is refused by name."""
    model, task = tiny(name)
    with torch.no_grad():
        base = model(task.clean)
    for component in COMPONENTS:
        hp = HOOK.format(1, component)

        def scramble(act, hook):
            return act * 0.5 + 0.1 if component != "pattern" else act.flip(-1) * 0.5

        with torch.no_grad(), attach(model, [(hp, scramble)]):
            moved = float((model(task.clean) - base).abs().max()) > 1e-6
        if moved:
            patch_heads(model, task, component=component, layers=[1], progress=False)
        else:
            with pytest.raises(Refused, match=f"hook_{component}"):
                patch_heads(model, task, component=component, layers=[1], progress=False)
        assert (component in family_of(model).patchable) == moved, component
    if name == "bert":
        with pytest.raises(Refused, match="hook_pattern"):
            patch_pattern(model, task, [(3, 5)], progress=False)
        # bidirectional: src > dest is a real entry there, so only the refusal stops it


# ---------------------------------------------------------------- single pattern entries
def _entry_edit(head, dest, src, renormalise):
    def edit(a, s):
        new = s[:, head, dest, src].clone()
        if renormalise:
            row = a[:, head, dest].clone()
            others = row.sum(-1) - row[:, src]
            row *= ((1 - new) / others)[:, None]
            row[:, src] = new
            assert torch.allclose(row.sum(-1), torch.ones_like(new), atol=1e-5)
            a[:, head, dest] = row
        else:
            a[:, head, dest, src] = new
    return edit


@pytest.mark.parametrize("name", MODELS)
def test_pattern_entries_equal_single_entry_forwards(tiny, name):
    model, task = tiny(name)
    tables = {}
    for renorm in (False, True):
        df = patch_pattern(model, task, _pairs(task), renormalise=renorm, progress=False)
        assert list(df.columns) == ["layer", "head", "dest", "src", "metric", "normalised"]
        assert len(df) == model.cfg.n_layers * model.cfg.n_heads * 4
        for r in df.itertuples():
            want = single(model, task, HOOK.format(r.layer, "pattern"),
                          _entry_edit(r.head, r.dest, r.src, renorm))
            assert abs(r.metric - want) <= _tol(df), (renorm, r)
        tables[renorm] = df
    # the two semantics differ (some row's other entries matter), and the entries' patches
    # move the metric
    assert (tables[True].metric - tables[False].metric).abs().max() > 1e-5
    assert (tables[False].metric - tables[False].attrs["corrupted"]).abs().max() > 1e-5


def test_renormalised_row_sums_to_one_in_the_forward(tiny, monkeypatch):
    """The row the patched forward actually uses: the pattern patch of ``patch_pattern`` applied
    to a real ``hook_pattern`` batch leaves the entry at the source value, every row summing to
    1 (renormalise=True) or to ``1 - old + new`` (TransformerLens' overwrite), and the head's
    output at ``dest`` recomputed from that row and ``hook_v`` equals ``hook_z`` of a forward
    with that row."""
    import interp.circuits.activation as A

    model, task = tiny("llama")
    seen = {}
    real = A._patch_layers

    def spy(*args, **kwargs):
        seen["patch"] = args[5]
        return real(*args, **kwargs)

    monkeypatch.setattr(A, "_patch_layers", spy)
    names = [HOOK.format(1, x) for x in ("pattern", "v", "z")]
    base = B.cache(model, task.corrupted, names)
    src = B.cache(model, task.clean, names)
    for renorm in (False, True):
        patch_pattern(model, task, [(7, 4)], layers=[1], heads=[2], renormalise=renorm,
                      progress=False)
        a = base[names[0]].clone()
        seen["patch"](a, src[names[0]], {"head": 2, "dest": 7, "src": 4})
        old, new = base[names[0]][:, 2, 7, 4], src[names[0]][:, 2, 7, 4]
        torch.testing.assert_close(a[:, 2, 7, 4], new)
        want_sum = torch.ones_like(new) if renorm else 1 - old + new
        torch.testing.assert_close(a[:, 2, 7].sum(-1), want_sum, atol=1e-6, rtol=0)
        assert (new - old).abs().max() > 1e-4
        changed = torch.ones_like(a, dtype=torch.bool)
        changed[:, 2, 7] = False
        assert torch.equal(a[changed], base[names[0]][changed])   # nothing else moved

        def set_row(p, hook, a=a):
            return a

        with attach(model, [(names[0], set_row)]):
            z = B.cache(model, task.corrupted, [names[2]])[names[2]]
        v = base[names[1]][:, :, 2 // B.group(model)]                 # [b, src, d]
        torch.testing.assert_close(z[:, 7, 2], torch.einsum("bs,bsd->bd", a[:, 2, 7], v),
                                   atol=1e-5, rtol=0)


# --------------------------------------------------------------------- start at a layer
@pytest.mark.parametrize("name", ("toy",) + FAMILY_NAMES)
def test_forward_from_a_layer_equals_the_whole_forward(tiny, name):
    """The residual entering block ``l`` cached from a whole forward, blocks before ``l``
    skipped (none of their hook points fire), a patch at ``hook_z`` of ``l``: the logits equal
    the whole hooked forward's."""
    model, task = tiny(name)
    tokens = task.corrupted.repeat(3, 1)

    def patch(z, hook):
        z = z.clone()
        z[:, 4, 1] = 0.25
        return z

    for layer in range(model.cfg.n_layers):
        resid = f"blocks.{layer}.hook_resid_pre"
        zn = HOOK.format(layer, "z")
        with torch.no_grad(), attach(model, [(zn, patch)]):
            want = model(tokens)
        start = B.cache(model, tokens, [resid])[resid]
        fired = []

        def spy(l):
            return lambda a, hook: fired.append(l)

        spies = [(f"blocks.{l}.hook_resid_pre", spy(l)) for l in range(model.cfg.n_layers)]
        with attach(model, spies):
            got = forward_from(model, tokens, layer, start, [(zn, patch)])
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
        assert fired == list(range(layer, model.cfg.n_layers))   # earlier blocks skipped
    assert "forward" not in model.blocks[0].__dict__                   # restored


def test_layouts_that_cannot_skip_run_whole_forwards(tiny, monkeypatch):
    """A family that does not say its block loop passes only the residual: whole forwards,
    same table."""
    model, task = tiny("gemma3")
    fast = patch_heads(model, task, component="q", by_position=True, positions=[2, 6],
                       progress=False)
    fam = family_of(model)
    monkeypatch.setattr(type(fam), "residual_only_loop", False)
    assert fam.skip_reason() is not None
    with pytest.raises(Refused, match="skipping blocks"):
        with fam.skipping_blocks([0]):
            pass
    slow = patch_heads(model, task, component="q", by_position=True, positions=[2, 6],
                       progress=False)
    pd.testing.assert_frame_equal(fast, slow, atol=1e-6, rtol=0)


# -------------------------------------------------------------------------------- sweeps
def test_sweeps_resume_and_keep_tables_apart(tiny, tmp_path):
    from interp.results import Sweep

    model, task = tiny("qwen2")
    kw = dict(by_position=True, positions=[1, 5, 7], max_batch=8, progress=False)
    direct_k = patch_heads(model, task, component="k", **kw)
    direct_q = patch_heads(model, task, component="q", **kw)
    sweep = Sweep(tmp_path, "heads")
    pd.testing.assert_frame_equal(patch_heads(model, task, component="q", sweep=sweep, **kw),
                                  direct_q)
    swept_k = patch_heads(model, task, component="k", sweep=Sweep(tmp_path, "heads"), **kw)
    pd.testing.assert_frame_equal(swept_k, direct_k)          # no q record reused for k
    z = patch_heads(model, task, progress=False, max_batch=8, sweep=Sweep(tmp_path, "heads"))
    pd.testing.assert_frame_equal(z, patch_heads(model, task, progress=False, max_batch=8))
    again = Sweep(tmp_path, "heads")
    pd.testing.assert_frame_equal(patch_heads(model, task, component="q", sweep=again, **kw),
                                  direct_q)
    table = Sweep(tmp_path, "heads").table()
    q_points = [{k: r[k] for k in ("layer", "start", "stop", "cells")}
                for r in table.to_dict("records")
                if isinstance(r.get("cells"), str) and r["cells"].startswith("q/pos:")]
    assert len(q_points) == 3 * 3          # 3 layers x (4 heads x 3 positions / 4 per forward)
    assert not list(Sweep(tmp_path, "heads").pending(q_points))     # resumed, nothing to do
    pairs = patch_pattern(model, task, _pairs(task)[:2], layers=[2], max_batch=8, progress=False,
                          sweep=Sweep(tmp_path, "heads"))
    pd.testing.assert_frame_equal(pairs, patch_pattern(model, task, _pairs(task)[:2], layers=[2],
                                                       max_batch=8, progress=False))


# ---------------------------------------------------------------------------- arguments
def test_bad_arguments_are_named(tiny):
    model, task = tiny("toy")
    with pytest.raises(InputError, match="'attn_out'"):
        patch_heads(model, task, component="attn_out")
    with pytest.raises(InputError, match="by_position"):
        patch_heads(model, task, by_position="yes")
    with pytest.raises(InputError, match="positions"):
        patch_heads(model, task, by_position=True, positions=[0, 99])
    with pytest.raises(InputError, match="positions"):
        patch_heads(model, task, positions=[1])
    with pytest.raises(InputError, match="layers"):
        patch_heads(model, task, layers=[5])
    with pytest.raises(InputError, match="max_batch"):
        patch_heads(model, task, max_batch=0)
    with pytest.raises(InputError, match="direction"):
        patch_heads(model, task, direction="sideways", component="q")
    with pytest.raises(InputError, match=r"src > dest"):
        patch_pattern(model, task, [(2, 5)])
    for bad in ([], [(0, 99)], [(3, 1), (3, 1)], [("a", 1)], [3]):
        with pytest.raises(InputError, match="pairs"):
            patch_pattern(model, task, bad)
    with pytest.raises(InputError, match="heads"):
        patch_pattern(model, task, [(3, 1)], heads=[7])
    with pytest.raises(InputError, match="renormalise"):
        patch_pattern(model, task, [(3, 1)], renormalise="yes")


# ----------------------------------------------------------------- TransformerLens' own
def test_transformer_lens_patching_functions_agree(tiny):
    """TransformerLens' ``get_act_patch_attn_head_{out,q,k,v}_by_pos`` (``[layer, pos,
    head]``), ``_pattern_by_pos`` (``[layer, head, dest]``) and ``_pattern_dest_src_pos`` run
    on a bridge (the tiny Llama, GQA) give our tables' numbers."""
    from transformer_lens import patching as P

    model, task = tiny("llama")
    model.eval()
    _, clean_cache = model.run_with_cache(task.clean)
    for component, fn in (("z", P.get_act_patch_attn_head_out_by_pos),
                          ("q", P.get_act_patch_attn_head_q_by_pos),
                          ("k", P.get_act_patch_attn_head_k_by_pos),
                          ("v", P.get_act_patch_attn_head_v_by_pos),
                          ("pattern", P.get_act_patch_attn_head_pattern_by_pos)):
        ref = fn(model, task.corrupted, clean_cache, task.metric)
        df = patch_heads(model, task, component=component, by_position=True, progress=False)
        got = torch.tensor([[[0.0] * ref.shape[2]] * ref.shape[1]] * ref.shape[0])
        for r in df.itertuples():
            if component == "pattern":
                got[r.layer, r.head, r.pos] = r.metric
            else:
                got[r.layer, r.pos, r.head] = r.metric
        torch.testing.assert_close(got, ref.float().cpu(), atol=_tol(df), rtol=0)
    df = patch_pattern(model, task, _pairs(task), layers=[1, 2], heads=[0, 3], progress=False)
    index = pd.DataFrame({"layer": df.layer, "head_index": df["head"], "dest_pos": df.dest,
                          "src_pos": df.src}).reset_index(drop=True)
    ref = P.get_act_patch_attn_head_pattern_dest_src_pos(
        model, task.corrupted, clean_cache, task.metric, index_axis_names=None, index_df=index)
    torch.testing.assert_close(torch.tensor(df.metric.values, dtype=torch.float32),
                               ref.float().cpu(), atol=_tol(df), rtol=0)
