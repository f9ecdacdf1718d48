"""EAP-IG (interp.circuits.integrated) against integrated gradients computed independently.

The references here use whole-model forwards with hooks only (tests/circuits/brute.py for
sender differences; a zero perturbation added where one receiver reads the residual stream,
every other consumer of that norm detached, for receiver gradients) and an interpolation
hook written here: copy ``k`` of a batched forward has ``blocks.0.hook_resid_pre`` (or one
node's activation) set to ``base + alpha_k (clean - base)``. The IG integral is Simpson's rule
on 401 points of ``alpha`` over those exact autograd gradients.
"""
from __future__ import annotations

import pytest
import torch

import interp
from interp.circuits.attribution import attribution_cache, edge_attribution, node_attribution
from interp.circuits.discovery import eap_circuit
from interp.circuits.graph import HeadGraph
from interp.circuits.integrated import input_attribution
from interp.circuits.metrics import baseline
from interp.circuits.tasks import PatchingTask, induction_task
from interp.errors import InputError
from interp.hooks import attach
from tests.circuits import brute as B
from tests.families.tiny import FAMILY_NAMES

FINE = 400                                     # Simpson intervals of the reference integral
TOL = 1e-4


# ------------------------------------------------------------------ independent references
def _sender(row):
    return ("embed" if row.kind == "embed" else ("head", int(row.layer), int(row.head))
            if row.kind == "head" else ("mlp", int(row.layer)))


def _receiver(row):
    if row.node == "logits":
        return ("logits",)
    if row.input == "in":
        return ("mlp", int(row.layer))
    return (row.input, int(row.layer), int(row.head))


def _set(point: str, values: torch.Tensor):
    """Hook: ``point`` replaced by ``values`` (``[rows, ...]``)."""
    return point, lambda act, hook: values.to(act.dtype)


def _path(base: torch.Tensor, clean: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """``[A * b, ...]``: copy k is ``base + alphas[k] (clean - base)``."""
    a = alphas.view(-1, *[1] * clean.dim()).to(clean.dtype)
    return (base + a * (clean - base)).flatten(0, 1)


def _summed(metric, logits, b):
    return sum(metric(logits[i:i + b]) for i in range(0, logits.shape[0], b))


def receiver_grads(model, tokens, receiver, metric, hooks, A) -> torch.Tensor:
    """``[A, b, pos, d_model]``: d metric / d e for a zero perturbation ``e`` of the residual
    stream as only ``receiver`` reads it, in a forward of ``A`` copies of ``tokens`` with
    ``hooks`` (the interpolation) attached first."""
    point, b = B.resid_point(receiver), tokens.shape[0]
    box = {}

    def add(act, hook):
        box["e"] = torch.zeros_like(act, requires_grad=True)
        return act + box["e"]

    extra = [(point, add)]
    if receiver[0] in ("q", "k", "v"):
        for x in ("q", "k", "v"):
            def keep_one(act, hook, x=x):
                out = act.detach().clone()
                if x == receiver[0]:
                    out[:, :, receiver[2]] = act[:, :, receiver[2]]
                return out

            extra.append((f"blocks.{receiver[1]}.attn.hook_{x}", keep_one))
    with torch.enable_grad(), attach(model, list(hooks) + extra):
        m = _summed(metric, model(tokens.repeat(A, 1)), b)
        (g,) = torch.autograd.grad(m, box["e"])
    return g.unflatten(0, (A, b))


def z_grads(model, tokens, metric, hooks, A) -> list[torch.Tensor]:
    """Per layer ``[A, b, pos, head, d_head]``: the gradient at ``hook_z`` (zero
    perturbations) of the same batched forward."""
    L, b, es = model.cfg.n_layers, tokens.shape[0], {}

    def add(l):
        def fn(z, hook):
            es[l] = torch.zeros_like(z, requires_grad=True)
            return z + es[l]

        return fn

    with torch.enable_grad(), attach(model, list(hooks) + [(B.Z.format(l), add(l))
                                                           for l in range(L)]):
        m = _summed(metric, model(tokens.repeat(A, 1)), b)
        grads = torch.autograd.grad(m, [es[l] for l in range(L)])
    return [g.unflatten(0, (A, b)) for g in grads]


def simpson(values: torch.Tensor) -> torch.Tensor:
    """Simpson's rule over ``alpha`` in [0, 1] of ``values [FINE + 1, ...]``."""
    w = torch.ones(FINE + 1, dtype=torch.float64)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    w = w / (3 * FINE)
    return (values.double() * w.view(-1, *[1] * (values.dim() - 1))).sum(0)


def sender_deltas(model, task, senders, receivers) -> dict:
    """``{(i, j): [b, pos, d_model]}``: sender i's clean-minus-corrupted difference where
    receiver j reads the residual stream, in the corrupted run (tests/circuits/brute.py)."""
    names = B.node_names(model)
    clean, corr = B.cache(model, task.clean, names), B.cache(model, task.corrupted, names)
    points = sorted({B.resid_point(r) for r in receivers})
    base_at = B.cache(model, task.corrupted, points)
    out = {}
    for i, s in enumerate(senders):
        reads = B.frozen_reads(model, task.corrupted, s, corr, clean, points)
        for j, r in enumerate(receivers):
            out[(i, j)] = (reads[B.resid_point(r)] - base_at[B.resid_point(r)]).double()
    return out


def graph_nodes(model):
    g = HeadGraph.of(model)
    return (g, [_sender(s) for s in g.senders().itertuples()],
            [_receiver(r) for r in g.receivers().itertuples()])


def edge_scores(model, task, grads_of, g, senders, receivers) -> torch.Tensor:
    """``[S, R]``: sender difference . ``grads_of(i, j)`` (``[b, pos, d]``) on valid edges."""
    deltas = sender_deltas(model, task, senders, receivers)
    valid = g.valid()
    out = torch.zeros(len(senders), len(receivers), dtype=torch.float64)
    for (i, j), d in deltas.items():
        if valid[i, j]:
            out[i, j] = float((d * grads_of(i, j).double()).sum())
    return out


def ig_reference(model, task):
    """The IG integral of every edge and head along the input-embedding path (Simpson,
    ``FINE`` intervals): ``(edges [S, R], nodes [L, H])``."""
    emb = {t: B.cache(model, tok, [B.EMBED])[B.EMBED] for t, tok in
           (("clean", task.clean), ("corr", task.corrupted))}
    alphas = torch.linspace(0, 1, FINE + 1, dtype=torch.float64)
    hooks = [_set(B.EMBED, _path(emb["corr"], emb["clean"], alphas))]
    A = len(alphas)
    g, senders, receivers = graph_nodes(model)
    integral = [simpson(receiver_grads(model, task.corrupted, r, task.metric, hooks, A))
                for r in receivers]
    edges = edge_scores(model, task, lambda i, j: integral[j], g, senders, receivers)
    zc = B.cache(model, task.clean, [B.Z.format(l) for l in range(model.cfg.n_layers)])
    zx = B.cache(model, task.corrupted, [B.Z.format(l) for l in range(model.cfg.n_layers)])
    nodes = torch.stack([((zc[B.Z.format(l)] - zx[B.Z.format(l)]).double() * simpson(gz))
                         .sum(dim=(0, 1, 3)) for l, gz in
                         enumerate(z_grads(model, task.corrupted, task.metric, hooks, A))])
    return edges, nodes


def _node_tensor(df) -> torch.Tensor:
    return torch.tensor(df.pivot(index="layer", columns="head", values="score").to_numpy())


# ------------------------------------------------------------------ convergence / completeness
def _convergence(model, task):
    ref_e, ref_n = ig_reference(model, task)
    assert ref_e.abs().max() > 1e-2
    c = attribution_cache(model, task)

    def err(method, steps=5):
        e = edge_attribution(model, task, c, method=method, steps=steps)
        n = _node_tensor(node_attribution(model, task, c, method=method, steps=steps))
        return (float((e - ref_e).abs().max() / ref_e.abs().max()),
                float((n - ref_n).abs().max() / ref_n.abs().max()))

    errs = {s: err("eap-ig", s) for s in (5, 20, 50)}
    errs["eap"] = err("eap")
    return errs


def _check_convergence(errs, at50: float):
    for k in (0, 1):                    # edges, nodes
        assert errs[50][k] < at50, errs
        assert errs[50][k] < errs[20][k] < errs[5][k], errs
        assert errs[50][k] < 0.3 * errs[5][k], errs     # O(1 / steps): ~0.1 expected
        assert errs[5][k] < errs["eap"][k], errs


def test_eap_ig_converges_to_the_ig_integral(toy_model):
    """Random toy: EAP-IG's edge and head scores approach the IG integral (Simpson, 401
    points, of exact autograd gradients on an independently written interpolated forward)
    as steps grow: error at 50 steps < 2% of the largest score, falling like 1 / steps, and
    even 5 steps beat EAP's single gradient."""
    task = induction_task(toy_model, batch=4, seg_len=6, seed=1)
    _check_convergence(_convergence(toy_model, task), 0.02)


@pytest.fixture(scope="module")
def trained_toy():
    from interp.recipes.toy_induction import circuit_toy

    torch.set_num_threads(1)
    return circuit_toy()


@pytest.mark.slow
def test_eap_ig_converges_on_the_trained_toy(trained_toy):
    """The same on the trained induction toy, whose metric is far from linear between the
    corrupted and the clean run (EAP's gradient at the corrupted run misses most of it)."""
    task = induction_task(trained_toy, batch=4, seg_len=8, seed=2)
    _check_convergence(_convergence(trained_toy, task), 0.02)


def _completeness(model, task, steps=50):
    """Relative error of the input-path sums: ``input_attribution`` summed and the embed
    row of the edge scores summed (the embedding difference . mean gradient at
    ``blocks.0.hook_resid_pre``, delivered over every receiver) against clean - corrupted."""
    ref = baseline(model, task)
    diff = ref["clean"] - ref["corrupted"]
    c = attribution_cache(model, task)
    total = float(input_attribution(model, task, steps, cache=c).sum())
    row = float(edge_attribution(model, task, c, method="eap-ig", steps=steps)[0].sum())
    return diff, abs(total - diff) / abs(diff), abs(row - diff) / abs(diff)


@pytest.mark.slow
def test_completeness_on_the_trained_toy(trained_toy):
    """IG completeness at 50 steps on the input path (within 1%), and per layer with
    ``ig_on="activations"``: a layer's head scores add up to patching all its heads' clean
    ``hook_z`` into the corrupted run (a hooked forward here), within 2% of clean - corrupted."""
    task = induction_task(trained_toy, batch=8, seg_len=12)
    diff, e_total, e_row = _completeness(trained_toy, task)
    assert diff > 1.0
    assert e_total < 0.01 and e_row < 0.01, (e_total, e_row)
    _check_layers(trained_toy, task, diff, 0.02)


def _check_layers(model, task, diff, tol):
    na = node_attribution(model, task, method="eap-ig", steps=50, ig_on="activations")
    edges = edge_attribution(model, task, method="eap-ig", steps=50, ig_on="activations")
    snd = HeadGraph.of(model).senders()
    corrupted = baseline(model, task)["corrupted"]
    for l in range(model.cfg.n_layers):
        z = B.cache(model, task.clean, [B.Z.format(l)])[B.Z.format(l)]
        with torch.no_grad(), attach(model, [_set(B.Z.format(l), z)]):
            want = float(task.metric(model(task.corrupted))) - corrupted
        got = float(na[na.layer == l].score.sum())
        rows = torch.as_tensor(snd.index[(snd.kind == "head") & (snd.layer == l)].to_list())
        assert abs(got - want) < tol * abs(diff), (l, got, want)
        assert abs(float(edges[rows].sum()) - want) < tol * abs(diff), (l, want)


def test_completeness_on_random_models(toy_model, tiny):
    """The same sums on the random toy and on the Gemma-2-like tiny model (post-attention
    norms, soft-capping): within 1% at 50 steps; the per-layer sums on the toy."""
    task = induction_task(toy_model, batch=4, seg_len=6, seed=1)
    diff, e_total, e_row = _completeness(toy_model, task)
    assert e_total < 0.01 and e_row < 0.01, (diff, e_total, e_row)
    _check_layers(toy_model, task, diff, 0.02)
    model, task = tiny("gemma2")
    diff, e_total, e_row = _completeness(model, task)
    assert e_total < 0.01 and e_row < 0.01, (diff, e_total, e_row)


# ---------------------------------------------------------------------------- method="eap"
def test_eap_is_the_default_and_unchanged(toy_model):
    """``method="eap"`` is exactly the default (same tensors, same table); EAP-IG differs."""
    task = induction_task(toy_model, batch=4, seg_len=6, seed=1)
    e0, e1 = edge_attribution(toy_model, task), edge_attribution(toy_model, task, method="eap")
    assert torch.equal(e0, e1)
    n0 = node_attribution(toy_model, task)
    n1 = node_attribution(toy_model, task, method="eap", steps=7, ig_on="activations")
    assert n0.equals(n1)
    ig = edge_attribution(toy_model, task, method="eap-ig", steps=3)
    assert (ig - e0).abs().max() > 1e-3
    eap_ref = B.edge_attribution(toy_model, task, *graph_nodes(toy_model)[1:])
    assert (e0 - eap_ref * HeadGraph.of(toy_model).valid()).abs().max() <= TOL


def test_mean_ablation_one_step_is_eap_at_the_clean_run(toy_model):
    """With ablation="mean" EAP takes its gradient at the clean run, which is also where the
    single point of steps=1 lies for both paths (the embedding, or each node, at its clean
    value in the clean run): the scores agree; with more steps they move away."""
    task = induction_task(toy_model, batch=4, seg_len=6, seed=1)
    ref = induction_task(toy_model, batch=8, seg_len=6, seed=9).clean
    kw = dict(ablation="mean", reference=ref)
    eap = edge_attribution(toy_model, task, **kw)
    eap_n = _node_tensor(node_attribution(toy_model, task, **kw))
    assert eap.abs().max() > 1e-3
    for ig_on in ("inputs", "activations"):
        one = edge_attribution(toy_model, task, method="eap-ig", steps=1, ig_on=ig_on, **kw)
        assert (one - eap).abs().max() <= 1e-5 * eap.abs().max()
        one_n = _node_tensor(node_attribution(toy_model, task, method="eap-ig", steps=1,
                                              ig_on=ig_on, **kw))
        assert (one_n - eap_n).abs().max() <= 1e-5 * eap_n.abs().max()
        more = edge_attribution(toy_model, task, method="eap-ig", steps=4, ig_on=ig_on, **kw)
        assert (more - eap).abs().max() > 1e-3 * eap.abs().max()


def test_max_batch_splits_forwards_not_results(toy_model):
    """The default (one point per forward: rows = the task's batch, as a hook on the model
    sees), 2 of 5 points per forward and all 5 in one forward give the same edge, head and
    input scores."""
    from interp.hooks import attach

    task = induction_task(toy_model, batch=4, seg_len=6, seed=1)
    rows = []

    def seen(act, hook):
        rows.append(act.shape[0])

    for ig_on in ("inputs", "activations"):
        kw = dict(method="eap-ig", steps=5, ig_on=ig_on)
        rows.clear()
        with attach(toy_model, [("blocks.0.hook_resid_pre", seen)]):
            one = edge_attribution(toy_model, task, **kw)
        assert rows and set(rows[-5:]) == {4}                  # the IG runs: one point each
        for mb in (8, 20):
            split = edge_attribution(toy_model, task, max_batch=mb, **kw)
            assert (one - split).abs().max() <= 1e-5 * one.abs().max()
        one = _node_tensor(node_attribution(toy_model, task, **kw))
        split = _node_tensor(node_attribution(toy_model, task, max_batch=20, **kw))
        assert (one - split).abs().max() <= 1e-5 * one.abs().max()
    one = input_attribution(toy_model, task, 5)
    split = input_attribution(toy_model, task, 5, max_batch=8)
    assert (one - split).abs().max() <= 1e-5 * one.abs().max()


# --------------------------------------------------------------------------- every family
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """``tiny(name)`` -> (bridge of the tiny random model of that family, induction task)."""
    from tests.families.tiny import build_family

    cache = {}

    def get(name):
        if name not in cache:
            folder = build_family(name, tmp_path_factory.mktemp(f"ig-{name}"), perturb=True)
            model = interp.load_model(folder)
            if name == "bert":
                gen = torch.Generator().manual_seed(3)
                clean = torch.randint(4, 260, (2, 12), generator=gen)
                corrupted = clean.clone()
                corrupted[:, 2:6] = torch.randint(4, 260, (2, 4), generator=gen)
                from interp.circuits.metrics import logprob_metric

                pos = torch.tensor([7, 9, 11])
                task = PatchingTask(clean, corrupted, logprob_metric(pos, clean[:, pos]))
            else:
                task = induction_task(model, batch=2, seg_len=6, seed=0)
            cache[name] = (model, task)
        return cache[name]

    return get


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_eap_ig_runs_or_refuses_on_every_family(tiny, name):
    """Node scores everywhere (finite, one per head, and not EAP's); edge scores where the
    graph applies (finite, 0 off the graph), refused by name on the encoder."""
    model, task = tiny(name)
    eap = node_attribution(model, task).score
    for ig_on in ("inputs", "activations"):
        na = node_attribution(model, task, method="eap-ig", steps=2, ig_on=ig_on)
        assert len(na) == model.cfg.n_layers * model.cfg.n_heads
        assert na.score.notna().all() and (na.score - eap).abs().max() > 1e-6
    if name == "bert":
        for ig_on in ("inputs", "activations"):
            with pytest.raises(NotImplementedError, match="encoder"):
                edge_attribution(model, task, method="eap-ig", ig_on=ig_on)
        return
    valid = HeadGraph.of(model).valid()
    for ig_on in ("inputs", "activations"):
        e = edge_attribution(model, task, method="eap-ig", steps=2, ig_on=ig_on)
        assert e.shape == valid.shape and torch.isfinite(e).all()
        assert not e[~valid].any() and e.abs().max() > 1e-4


@pytest.mark.parametrize("name", ["llama", "gemma2", "gpt_neox"])
def test_one_step_is_eap_at_the_clean_end(tiny, name):
    """steps=1 puts its only point at alpha = 1. Inputs: the gradient of the clean run, so
    edges = sender difference . receiver gradient of the clean run and heads = z difference
    . hook_z gradient of the clean run. Activations: node N's edges take the gradient of
    the corrupted run with N's activation clean. All from independent hooked forwards."""
    model, task = tiny(name)
    g, senders, receivers = graph_nodes(model)
    clean_g = [receiver_grads(model, task.clean, r, task.metric, [], 1)[0] for r in receivers]
    want = edge_scores(model, task, lambda i, j: clean_g[j], g, senders, receivers)
    got = edge_attribution(model, task, method="eap-ig", steps=1)
    assert (got - want).abs().max() <= TOL and want.abs().max() > 1e-3
    names = [B.Z.format(l) for l in range(model.cfg.n_layers)]
    zc, zx = B.cache(model, task.clean, names), B.cache(model, task.corrupted, names)
    gz = z_grads(model, task.clean, task.metric, [], 1)
    nodes = torch.stack([((zc[n] - zx[n]).double() * gz[l][0].double()).sum(dim=(0, 1, 3))
                         for l, n in enumerate(names)])
    na = _node_tensor(node_attribution(model, task, method="eap-ig", steps=1))
    assert (na - nodes).abs().max() <= TOL
    # activations: one point per node, at that node's clean value in the corrupted run
    clean_acts = B.cache(model, task.clean, B.node_names(model))
    grads = {}

    def at_node(i, j):
        s = senders[i]
        hook = B.EMBED if s == "embed" else (B.Z.format(s[1]) if s[0] == "head"
                                             else B.MLP.format(s[1]))
        if (hook, j) not in grads:
            grads[(hook, j)] = receiver_grads(model, task.corrupted, receivers[j], task.metric,
                                              [_set(hook, clean_acts[hook])], 1)[0]
        return grads[(hook, j)]

    want = edge_scores(model, task, at_node, g, senders, receivers)
    got = edge_attribution(model, task, method="eap-ig", steps=1, ig_on="activations")
    assert (got - want).abs().max() <= TOL


def test_discovery_passes_the_method_through(toy_model):
    """eap_circuit(method="eap-ig") keeps the edges of the EAP-IG scores (the same circuit as
    handing it those scores), not EAP's; head_circuit's node scores are EAP-IG's."""
    from interp.circuits.discovery import head_circuit

    task = induction_task(toy_model, batch=4, seg_len=6, seed=1)
    ig = edge_attribution(toy_model, task, method="eap-ig", steps=3)
    eap = edge_attribution(toy_model, task)
    got = eap_circuit(toy_model, task, top_n=8, method="eap-ig", steps=3)
    want = eap_circuit(toy_model, task, top_n=8, scores=ig)
    assert torch.equal(got.mask, want.mask) and got.edges.equals(want.edges)
    default = eap_circuit(toy_model, task, top_n=8)
    assert default.edges.equals(eap_circuit(toy_model, task, top_n=8, scores=eap).edges)
    g = HeadGraph.of(toy_model)
    assert got.edges.equals(g.edges_frame(ig.float(), got.mask))     # reports EAP-IG's scores
    key = ["sender", "receiver", "input"]
    both = got.edges.merge(g.edges_frame(eap.float(), got.mask), on=key, suffixes=("", "_eap"))
    assert len(both) == len(got.edges) and (both.score - both.score_eap).abs().max() > 1e-4
    hc = head_circuit(toy_model, task, ablation="corrupted", candidates=8, threshold=0.0,
                      progress=False, method="eap-ig", steps=3, ig_on="activations")
    na = node_attribution(toy_model, task, method="eap-ig", steps=3, ig_on="activations")
    scores = dict(zip([f"L{l}H{h}" for l, h in zip(na.layer, na["head"])], na.score))
    heads = hc.nodes[hc.nodes.kind == "head"]
    assert len(heads) > 0
    for r in heads.itertuples():
        assert r.score == pytest.approx(scores[r.node], abs=1e-6)


# ---------------------------------------------------------------------------- bad arguments
def test_bad_method_or_steps_is_input_error(toy_model):
    task = induction_task(toy_model, batch=2, seg_len=6, seed=1)
    bad = [dict(method="eap_ig"), dict(method="ig"), dict(method="eap-ig", steps=0),
           dict(method="eap-ig", steps=-3), dict(method="eap-ig", steps=2.5),
           dict(method="eap-ig", steps=True), dict(method="eap-ig", ig_on="outputs"),
           dict(method="eap-ig", max_batch=0), dict(steps="5")]
    for kw in bad:
        for fn in (edge_attribution, node_attribution):
            with pytest.raises(InputError):
                fn(toy_model, task, **kw)
    with pytest.raises(InputError, match="attribution method"):
        eap_circuit(toy_model, task, method="acdc")
    with pytest.raises(InputError, match="steps"):
        input_attribution(toy_model, task, steps=0)


def test_circuits_config_takes_the_attribution_method():
    """Old configs keep EAP; the new fields are checked when the config is read."""
    from interp.config import from_dict
    from interp.errors import ConfigError
    from interp.experiment_kinds.circuits import CircuitsConfig

    old = from_dict(CircuitsConfig, {"model": "circuit-toy", "method": "eap"})
    assert (old.attribution_method, old.ig_steps, old.ig_on) == ("eap", 5, "inputs")
    new = from_dict(CircuitsConfig, {"method": "eap", "attribution_method": "eap-ig",
                                     "ig_steps": 20, "ig_on": "activations"})
    assert (new.attribution_method, new.ig_steps, new.ig_on) == ("eap-ig", 20, "activations")
    for bad in ({"attribution_method": "ig"}, {"ig_steps": 0}, {"ig_on": "outputs"}):
        with pytest.raises(ConfigError):
            from_dict(CircuitsConfig, bad)


def test_attribution_computes_no_parameter_gradient(toy_model):
    """EAP and EAP-IG (both paths) differentiate the metric with respect to activations only:
    no parameter's gradient is ever computed (a hook on every parameter would fire), so the
    backward never holds a model-sized ``.grad`` (7 GB on a 1.5B model in float32)."""
    task = induction_task(toy_model, batch=2, seg_len=5)
    fired = []
    handles = [p.register_hook(lambda g, n=n: fired.append(n))
               for n, p in toy_model.named_parameters() if p.requires_grad]
    assert handles
    try:
        edge_attribution(toy_model, task)
        node_attribution(toy_model, task, method="eap-ig", steps=2)
        node_attribution(toy_model, task, method="eap-ig", steps=2, ig_on="activations")
    finally:
        for h in handles:
            h.remove()
    assert fired == []
    assert all(p.grad is None for p in toy_model.parameters())


def test_model_checks_use_the_half_precision_tolerance():
    """The rebuilt-vs-forward check (``close_or_refuse``) allows 3e-2 of the scale in bf16 /
    fp16 (their rounding) and 1e-3 in float32: a bf16 difference of 1% passes, a float32 one
    is refused (the tolerance was once read after the float32 copies, refusing every bf16
    model's EAP)."""
    from interp.circuits.model import close_or_refuse
    from interp.errors import Refused

    want = torch.linspace(-1, 1, 64)
    got = want * 1.01
    for dtype in (torch.bfloat16, torch.float16):
        close_or_refuse(got.to(dtype), want.to(dtype), "test", "x")
    with pytest.raises(Refused, match="differs"):
        close_or_refuse(got, want, "test", "x")
    with pytest.raises(Refused, match="differs"):
        close_or_refuse((want * 1.1).bfloat16(), want.bfloat16(), "test", "x")
