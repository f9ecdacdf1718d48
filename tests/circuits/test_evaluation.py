"""Evaluation of circuit-discovery methods (interp.circuits.evaluation): ROC AUC against a
brute-force pairwise count, faithfulness curves against the runner's own metric of masks
built here, the refinement of the smallest faithful circuit on hand-made curves, top-k
agreement, bad input, and the ground truth of the trained toy induction model."""
from __future__ import annotations

import itertools

import pandas as pd
import pytest
import torch

from interp.circuits.activation import patch_heads
from interp.circuits.discovery import acdc
from interp.circuits.evaluation import (RANKING_METHODS, EdgeRanking, compare_methods,
                                        edge_rankings, faithfulness_curve, ground_truth_auc,
                                        log_counts, method_agreement, smallest_faithful,
                                        toy_induction_heads, toy_induction_truth)
from interp.circuits.runner import CircuitRunner
from interp.circuits.tasks import induction_task
from interp.errors import InputError
from interp.hooks import attach
from tests.circuits import brute as B


# ------------------------------------------------------------------------------- ROC AUC
def _pairwise_auc(scores, truth) -> float:
    """Share of (true, other) pairs with the true edge scored higher, ties half."""
    pos = [s for s, t in zip(scores, truth) if t]
    neg = [s for s, t in zip(scores, truth) if not t]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(6))
def test_auc_equals_the_pairwise_count_with_ties(seed):
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randint(-4, 5, (7, 9), generator=gen).double()     # many ties, both signs
    truth = torch.rand(7, 9, generator=gen) < 0.3
    valid = torch.rand(7, 9, generator=gen) < 0.8
    truth &= valid
    s, t = scores[valid].tolist(), truth[valid].tolist()
    assert ground_truth_auc(scores, truth, valid) == pytest.approx(
        _pairwise_auc([abs(x) for x in s], t), abs=1e-12)
    assert ground_truth_auc(scores, truth, valid, absolute=False) == pytest.approx(
        _pairwise_auc(s, t), abs=1e-12)
    ranking = EdgeRanking("hand", scores, valid)
    assert ground_truth_auc(ranking, truth) == ground_truth_auc(scores, truth, valid)


def test_auc_ends():
    truth = torch.tensor([True, True, False, False, False])
    assert ground_truth_auc(torch.tensor([5., 4, 3, 2, 1]), truth) == 1.0
    assert ground_truth_auc(torch.tensor([1., 2, 3, 4, 5]), truth) == 0.0
    assert ground_truth_auc(torch.ones(5), truth) == 0.5
    assert ground_truth_auc(torch.tensor([-5., 4, 3, 2, 1]), truth) == 1.0    # by |score|


# ------------------------------------------------------------------- faithfulness curves
def _top_mask_by_hand(scores, valid, n):
    """The ``n`` valid edges of largest |score| (ties: the earlier edge in row-major order),
    built without the module."""
    edges = [(i, j) for i in range(valid.shape[0]) for j in range(valid.shape[1]) if valid[i, j]]
    edges.sort(key=lambda e: -abs(float(scores[e])))        # sort is stable
    mask = torch.zeros_like(valid)
    for e in edges[:n]:
        mask[e] = True
    return mask


@pytest.fixture(scope="module")
def toy_runner(toy_model):
    task = induction_task(toy_model, batch=4, seg_len=6, seed=1)
    return CircuitRunner(toy_model, task)


def test_curve_points_are_the_runners_metric(toy_runner):
    r = toy_runner
    gen = torch.Generator().manual_seed(0)
    scores = torch.randint(-3, 4, r.valid.shape, generator=gen).double() * r.valid  # ties
    n_edges = int(r.valid.sum())
    curve = faithfulness_curve(r, scores)
    assert curve.n_edges.tolist() == log_counts(n_edges)
    assert curve.n_edges.iloc[0] == 0 and curve.n_edges.iloc[-1] == n_edges
    for row in curve.itertuples():
        m = r.metric(_top_mask_by_hand(scores, r.valid, row.n_edges))
        assert row.metric == m
        assert row.normalised == pytest.approx(r.normalised(m), abs=1e-12)
    # denoising convention (ablation="corrupted"): no edge = the corrupted run, every edge =
    # the clean run
    assert curve.normalised.iloc[0] == pytest.approx(0.0, abs=1e-5)
    assert curve.normalised.iloc[-1] == pytest.approx(1.0, abs=1e-4)
    # given counts, in any order, come back sorted and deduplicated
    assert faithfulness_curve(r, scores, counts=[5, 2, 5]).n_edges.tolist() == [2, 5]


def test_log_counts():
    assert log_counts(81, 12) == [0, 1, 2, 3, 5, 7, 11, 16, 24, 36, 54, 81]
    assert log_counts(1) == [0, 1]
    c = log_counts(72_000, 16)
    assert c[1] == 1 and c[-1] == 72_000 and c == sorted(set(c))


# -------------------------------------------------------------------- smallest faithful
class _FakeRunner:
    """A runner whose "circuit metric" is a hand-made function of the number of edges kept
    (the masks are top-n prefixes of the scores' order: count them)."""

    def __init__(self, values):
        self.values = values
        self.valid = torch.ones(len(values) - 1, dtype=torch.bool)
        self.calls = []

    def metric(self, mask):
        n = int(mask.sum())
        self.calls.append(n)
        return self.values[n]

    def normalised(self, v):
        return v


def test_smallest_faithful_on_a_hand_made_curve():
    curve = pd.DataFrame({"n_edges": [0, 1, 2, 4, 8, 16],
                          "normalised": [0.0, 0.1, 0.5, 0.85, 0.9, 1.0]})
    assert smallest_faithful(curve) == 4
    assert smallest_faithful(curve, 0.5) == 2
    assert smallest_faithful(curve, 0.95) == 16
    assert smallest_faithful(curve, 1.01) is None
    two = pd.concat([curve.assign(method="a"),
                     curve.assign(method="b", normalised=curve.normalised / 2)])
    assert smallest_faithful(two, method="b", level=0.45) == 8
    with pytest.raises(InputError, match="several methods"):
        smallest_faithful(two)


def test_smallest_faithful_refines_between_points():
    # f(n) for n = 0..16, with a dip back below the level at 11 after reaching it at 6
    f = [0, .1, .5, .6, .7, .75, .82, .79, .83, .84, .85, .7, .86, .9, .95, .97, 1.0]
    fake = _FakeRunner(f)
    scores = torch.arange(16, 0, -1).double()                  # order = 0, 1, ..., 15
    points = [0, 1, 2, 4, 8, 16]
    curve = pd.DataFrame({"n_edges": points, "normalised": [f[n] for n in points]})
    assert smallest_faithful(curve, 0.8, runner=fake, scores=scores, refine=None) == 8
    # bisection on (4, 8]: 6 reaches, 5 does not
    assert smallest_faithful(curve, 0.8, runner=fake, scores=scores) == 6
    assert set(fake.calls) == {5, 6}
    # a level the curve crosses twice: bisection finds a crossing (f(n-1) < level <= f(n)),
    # the scan the smallest n
    curve2 = pd.DataFrame({"n_edges": [0, 8, 12, 16], "normalised": [0, .83, .86, 1.0]})
    fake.calls.clear()
    got = smallest_faithful(curve2, 0.8, runner=fake, scores=scores)
    assert f[got] >= 0.8 > f[got - 1]
    assert smallest_faithful(curve2, 0.8, runner=fake, scores=scores, refine="scan") == 6


def test_smallest_faithful_bisects_to_the_scan_on_the_toy(toy_runner):
    r = toy_runner
    gen = torch.Generator().manual_seed(3)
    scores = torch.randn(r.valid.shape, generator=gen).double() * r.valid
    curve = faithfulness_curve(r, scores)
    every = faithfulness_curve(r, scores, counts=range(int(r.valid.sum()) + 1))
    level = 0.5
    assert every.normalised.iloc[0] < level <= every.normalised.max()
    scan = smallest_faithful(curve, level, runner=r, scores=scores, refine="scan")
    assert scan == smallest_faithful(every, level)
    got = smallest_faithful(curve, level, runner=r, scores=scores)
    f = dict(zip(every.n_edges, every.normalised))
    assert f[got] >= level > f[got - 1]


# --------------------------------------------------------------------------- agreement
def test_method_agreement_on_hand_made_rankings():
    a = torch.tensor([5., 4, 3, 2, 1, 0])
    b = torch.tensor([-5., 0, 0, 4, 3, 0])                 # by |score|: 0, 3, 4, then ties
    c = torch.tensor([0., 0, 0, 0, 0, 1])
    df = method_agreement({"a": a, "b": b, "c": c}, [1, 3])
    got = {(r.method_a, r.method_b, r.k): (r.shared, r.overlap) for r in df.itertuples()}
    assert got[("a", "b", 1)] == (1, 1.0)
    assert got[("a", "b", 3)] == (1, pytest.approx(1 / 3))             # {0,1,2} & {0,3,4}
    assert got[("a", "c", 3)] == (2, pytest.approx(2 / 3))             # {0,1,2} & {5,0,1}
    assert got[("b", "c", 1)] == (0, 0.0)
    assert len(df) == 6 and list(df.columns) == ["method_a", "method_b", "k", "shared",
                                                 "overlap"]


# ------------------------------------------------------------------------ the methods
def test_edge_rankings_on_the_random_toy(toy_model, toy_runner):
    r = toy_runner
    task = r.task
    rk = edge_rankings(toy_model, task, runner=r, acdc_threshold=0.05)
    assert list(rk) == list(RANKING_METHODS)
    spread = r.clean_metric - r.corrupted_metric
    for m in rk.values():
        assert m.scores.shape == r.valid.shape and m.seconds >= 0
        assert (m.scores[~r.valid] == 0).all()
    # patching: one score per sender, the head's patch_heads effect; the embedding's is the
    # clean run
    ph = patch_heads(toy_model, task, progress=False)
    p = rk["patching"].scores
    snd = r.senders.name.tolist()
    for row in ph.itertuples():
        i = snd.index(f"L{row.layer}H{row.head}")
        assert torch.allclose(p[i][r.valid[i]], torch.tensor(row.normalised).double())
    assert torch.allclose(p[0], torch.ones(p.shape[1]).double())
    # knockout: the clean run with one edge's receiver input rebuilt with the sender
    # corrupted (tests/circuits/brute.py), against the full circuit
    ko = rk["knockout"].scores
    for i, j in r.valid.nonzero().tolist()[::9]:
        s, rc = r.senders.iloc[i], r.receivers.iloc[j]
        sender = "embed" if s.kind == "embed" else ("head", int(s.layer), int(s["head"]))
        receiver = ("logits",) if rc.node == "logits" else (rc.input, int(rc.layer),
                                                            int(rc["head"]))
        want = (r.clean_metric - B.edge_removed(toy_model, task, sender, receiver)) / spread
        assert float(ko[i, j]) == pytest.approx(want, abs=1e-4), (i, j)
    # acdc: its circuit's edges score what it measured, the others 0
    c = rk["acdc"].info["circuit"]
    again = acdc(toy_model, task, threshold=0.05, progress=False, runner=r)
    assert torch.equal(c.mask, again.mask)
    assert torch.equal(rk["acdc"].scores != 0, c.mask)
    curve = faithfulness_curve(r, rk["acdc"], counts=[int(c.mask.sum())])
    assert curve.metric.iloc[0] == pytest.approx(c.metric, abs=1e-6)
    # eap: edge_attribution on the normalised scale
    from interp.circuits.attribution import edge_attribution

    assert torch.allclose(rk["eap"].scores, edge_attribution(toy_model, task) / spread)


def test_mean_ablation_patching_is_the_nodes_mean_in_the_clean_run(toy_model):
    task = induction_task(toy_model, batch=4, seg_len=6, seed=1)
    ref = induction_task(toy_model, batch=8, seg_len=6, seed=5).clean
    r = CircuitRunner(toy_model, task, "mean", ref)
    rk = edge_rankings(toy_model, task, ["patching"], ablation="mean", reference=ref, runner=r)
    z = B.cache(toy_model, ref, ["blocks.1.attn.hook_z"])["blocks.1.attn.hook_z"].mean(0)

    def hook(act, hook):
        act = act.clone()
        act[:, :, 2] = z[:, 2]
        return act

    with torch.no_grad(), attach(toy_model, [("blocks.1.attn.hook_z", hook)]):
        ablated = float(task.metric(toy_model(task.clean)))
    want = (r.clean_metric - ablated) / (r.clean_metric - r.corrupted_metric)
    i = r.senders.name.tolist().index("L1H2")
    assert float(rk["patching"].scores[i, -1]) == pytest.approx(want, abs=1e-5)
    # mean ablation: every edge reproduces the clean run, none gives the all-means run
    curve = faithfulness_curve(r, rk["patching"], counts=[0, int(r.valid.sum())])
    assert curve.normalised.iloc[-1] == pytest.approx(1.0, abs=1e-4)
    assert curve.metric.iloc[0] == pytest.approx(r.empty_metric, abs=1e-6)


def test_patching_scores_mlps_and_the_embedding(family_dir):
    """A family with MLPs (tiny llama, GQA): an MLP sender scores patching its clean
    ``hook_mlp_out`` into the corrupted run (a hooked forward here)."""
    import interp

    model = interp.load_model(family_dir("llama"))
    task = induction_task(model, batch=2, seg_len=5, seed=0)
    r = CircuitRunner(model, task)
    rk = edge_rankings(model, task, ["patching", "eap"], runner=r)
    name = "blocks.0.hook_mlp_out"
    clean = B.cache(model, task.clean, [name])[name]
    with torch.no_grad(), attach(model, [(name, lambda act, hook: clean)]):
        want = r.normalised(float(task.metric(model(task.corrupted))))
    i = r.senders.name.tolist().index("MLP0")
    row = rk["patching"].scores[i]
    assert torch.allclose(row[r.valid[i]], torch.tensor(want).double(), atol=1e-5)
    assert float(rk["patching"].scores[0, -1]) == pytest.approx(1.0, abs=1e-4)
    assert ground_truth_auc(rk["eap"], r.valid & (rk["eap"].scores.abs() > 0)) >= 0.5


# ------------------------------------------------------------------------------ bad input
def test_bad_input_is_input_error(toy_model, toy_runner):
    r = toy_runner
    good = torch.ones(r.valid.shape).double()
    truth = torch.zeros(5, dtype=torch.bool)
    truth[0] = True
    cases = [
        (lambda: ground_truth_auc(torch.ones(5), torch.ones(5)), "bool"),
        (lambda: ground_truth_auc(torch.ones(4), truth), "do not match"),
        (lambda: ground_truth_auc(torch.ones(5), torch.zeros(5, dtype=torch.bool)),
         "0 true"),
        (lambda: ground_truth_auc(torch.tensor([1., float("nan"), 0, 0, 0]), truth), "NaN"),
        (lambda: ground_truth_auc(torch.ones(5), truth, torch.tensor([False] + [True] * 4)),
         "not edges of the graph"),
        (lambda: faithfulness_curve(r, torch.ones(3, 3)), "do not match"),
        (lambda: faithfulness_curve(r, good, counts=[0, 10_000]), r"\[0, "),
        (lambda: faithfulness_curve(r, good, counts=[1.5]), r"\[0, "),
        (lambda: faithfulness_curve(r, "scores"), "EdgeRanking or a score tensor"),
        (lambda: smallest_faithful(pd.DataFrame({"n": [1]})), "n_edges, normalised"),
        (lambda: smallest_faithful(pd.DataFrame({"n_edges": [1], "normalised": [1.0]}),
                                   runner=r), "both"),
        (lambda: smallest_faithful(pd.DataFrame({"n_edges": [1], "normalised": [1.0]}),
                                   refine="binary"), "refine"),
        (lambda: method_agreement({"a": good}, 3), "at least two"),
        (lambda: method_agreement({"a": good, "b": torch.ones(4)}, 3), "same edges"),
        (lambda: method_agreement({"a": good, "b": good}, 0), "k must be"),
        (lambda: method_agreement({"a": good, "b": good}, 10_000), r"\[0, "),
        (lambda: edge_rankings(toy_model, r.task, ["eap", "magic"], runner=r), "methods"),
        (lambda: edge_rankings(toy_model, r.task, ["eap", "eap"], runner=r), "distinct"),
        (lambda: edge_rankings(toy_model, r.task, ["eap-ig"], steps=0, runner=r), "steps"),
        (lambda: edge_rankings(toy_model, r.task, ["acdc"], acdc_threshold=-1, runner=r),
         "acdc_threshold"),
        (lambda: edge_rankings(toy_model, r.task, ["eap"], ablation="mean", runner=r),
         "same ablation"),
        (lambda: edge_rankings(toy_model, induction_task(toy_model, batch=4, seg_len=6,
                                                         seed=2), ["eap"], runner=r),
         "another model or task"),
        (lambda: log_counts(0), "n_edges"),
        (lambda: toy_induction_heads(toy_model), "previous-token head|induction head"),
    ]
    for fn, match in cases:
        with pytest.raises(InputError, match=match):
            fn()


# ------------------------------------------------------------ the trained toy's circuit
@pytest.fixture(scope="module")
def trained_toy(toy_induction_dir):
    import interp

    return interp.load_model(f"toy:{toy_induction_dir.name}")


def test_toy_truth_is_the_recipes_circuit(trained_toy):
    """The heads the probe finds are what the recipe intends: one previous-token head in
    layer 0, which is the strongest K-composition source of every induction head in layer 1
    (weights only, :func:`~interp.circuits.composition.composition_scores`)."""
    from interp.circuits.composition import composition_scores

    heads = toy_induction_heads(trained_toy)
    assert len(heads["previous_token"]) == 1 and len(heads["induction"]) >= 2
    prev = heads["previous_token"][0]
    comp = composition_scores(trained_toy, "K")
    for h in heads["induction"]:
        to_h = comp[(comp.dst_layer == 1) & (comp.dst_head == h)]
        assert int(to_h.nlargest(1, "score").iloc[0].src_head) == prev
    truth = toy_induction_truth(trained_toy)
    names = {(s, r) for s, r in zip(*[x.tolist() for x in truth.nonzero(as_tuple=True)])}
    n_ind = len(heads["induction"])
    assert len(names) == 3 * n_ind + 1                 # k, logits, embed->v each + embed->prev.v
    assert int(toy_induction_truth(trained_toy, token_edges=False).sum()) == 2 * n_ind


def test_every_edge_method_ranks_the_toy_circuit(trained_toy):
    """ROC AUC of each method's ranking against the known circuit (induction task, batch 8,
    seg_len 12). Measured (seeds 0-3): eap-ig 0.975-0.980, knockout 0.973-0.977, acdc
    0.939-0.943, eap 0.86-0.96 (0.93 on seed 0; 0.90-0.94 with batch 32: EAP's gradient at
    the corrupted run misreads the saturated heads); per-head patching 0.71: a node method
    gives the previous-token head's 13 out-edges one score (4 of them in the circuit) and
    the embedding's 25 edges another (5 in it), so it cannot reach 0.9 against an
    edge-level truth. The curves reach 80% at 20 (eap-ig), 22 (knockout), 26 (acdc), 44
    (eap) and 53 (patching) of the 81 edges."""
    torch.set_num_threads(1)
    task = induction_task(trained_toy, batch=8, seg_len=12)
    r = CircuitRunner(trained_toy, task)
    rk = edge_rankings(trained_toy, task, runner=r)
    truth = toy_induction_truth(trained_toy)
    summary, curves = compare_methods(r, rk, truth)
    auc = dict(zip(summary.method, summary.auc))
    for m in ("eap-ig", "knockout", "acdc"):
        assert auc[m] >= 0.9, (m, auc)
    assert auc["eap"] >= 0.85, auc
    assert 0.6 <= auc["patching"] < 0.9, auc
    assert auc["eap-ig"] > auc["eap"]
    n = dict(zip(summary.method, summary.n_faithful))
    assert n["eap-ig"] < n["eap"] and n["knockout"] < n["eap"], n
    full = curves[curves.n_edges == int(r.valid.sum())]
    assert (full.normalised.sub(1).abs() < 1e-4).all()
    agree = method_agreement(rk, int(truth.sum()))
    pair = agree[(agree.method_a == "eap-ig") & (agree.method_b == "knockout")]
    assert float(pair.overlap.iloc[0]) > 0.6
