"""Every circuit tool on every family of tests/families/tiny.py: equal to a whole-forward
brute force (tests/circuits/brute.py: hooks on the model's own forward, no weights, no
hand-written piece of a layer) within 1e-4, or refused with an error naming the feature.

- path patching (``path_patch``, every method it offers on the family) = the issue's brute
  force: the receiver input read from a forward with only the sender's ``hook_z`` from the
  source run and every other head / MLP frozen, patched into a fresh base run;
- activation patching (``patch_heads``, ``patch_residual``) = one hooked forward per cell;
- the circuit runner (ACDC's rule; used by ``acdc``, ``eap_circuit``, ``head_circuit``):
  every edge = clean, none = corrupted, every edge but one = the clean run with that one
  receiver input rebuilt with the sender corrupted (a real forward);
- edge attribution (EAP) = ``delta . gradient`` with the sender's difference from a frozen
  forward and the gradient of a perturbation only that receiver reads, in a real forward;
  node attribution = the gradient at ``hook_z`` of a real forward;
- head ablation (zero, mean, resample) = the hooked forward itself, and zero ablation = the
  forward with the head's ``W_O`` columns zeroed in the weights;
- weight-based scores: composition scores (Q, K, V) = Elhage et al.'s definition computed
  from the HF modules' own weights (norms folded as the model applies them); copying scores =
  the eigenvalue score of the full vocab x vocab OV product from the HF weights.

BERT (post-LN encoder) takes the node-level tools (patching heads / residual, node
attribution, ablation) and refuses the edge-level and weight-based ones.
"""
from __future__ import annotations

import pytest
import torch

import interp
from interp.circuits import (acdc, composition_scores, eap_circuit, edge_attribution,
                             node_attribution, path_patch, patch_heads, patch_residual)
from interp.circuits.ablation import ablate_heads, mean_z
from interp.circuits.graph import HeadGraph
from interp.circuits.metrics import logprob_metric
from interp.circuits.runner import CircuitRunner, run_circuit
from interp.circuits.tasks import PatchingTask, induction_task
from interp.weights import head_weights
from tests.circuits import brute as B
from tests.families.tiny import CAUSAL, FAMILY_NAMES, load_reference

TOL = 1e-4
POST_NORM = ("gemma2", "gemma3")          # post-attention norm: the projection is refused
SOFTCAP = ("gemma2",)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """``tiny(name)`` -> (bridge loaded from the folder, task, folder). The checkpoints have
    noisy norm scales and biases (``perturb``), so every fold and bias shows."""
    from tests.families.tiny import build_family

    cache = {}

    def get(name):
        if name not in cache:
            folder = build_family(name, tmp_path_factory.mktemp(f"tools-{name}"), perturb=True)
            model = interp.load_model(folder)
            cache[name] = (model, _task(model, name), folder)
        return cache[name]

    return get


def _task(model, name):
    if name != "bert":
        return induction_task(model, batch=2, seg_len=6, seed=0)
    gen = torch.Generator().manual_seed(3)
    clean = torch.randint(4, 260, (2, 12), generator=gen)
    corrupted = clean.clone()
    corrupted[:, 2:6] = torch.randint(4, 260, (2, 4), generator=gen)
    pos = torch.tensor([7, 9, 11])
    return PatchingTask(clean, corrupted, logprob_metric(pos, clean[:, pos]), name="mlm")


def _head(row) -> int:
    return int(row["head"] if hasattr(row, "index") and not isinstance(row, tuple) else row.head)


def _sender(row):
    return ("embed" if row.kind == "embed" else ("head", int(row.layer), _head(row))
            if row.kind == "head" else ("mlp", int(row.layer)))


def _receiver(row):
    if row.node == "logits":
        return ("logits",)
    if row.input == "in":
        return ("mlp", int(row.layer))
    return (row.input, int(row.layer), _head(row))


# ------------------------------------------------------------------------ path patching
SENDERS = [(0, 1), (1, 2)]
RECEIVERS = [(1, 3), (2, 1)]


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_path_patch_equals_brute_force(tiny, name):
    model, task, _ = tiny(name)
    if name == "bert":
        with pytest.raises(NotImplementedError, match="encoder"):
            path_patch(model, task, SENDERS, RECEIVERS)
        return
    methods = ["auto", "forward"] + ([] if name in POST_NORM else ["projection"])
    tables = {m: path_patch(model, task, SENDERS, RECEIVERS, method=m) for m in methods}
    assert tables["auto"].attrs["method"] == ("forward" if name in POST_NORM else "projection")
    if name in POST_NORM:
        with pytest.raises(NotImplementedError, match="post_attention_layernorm"):
            path_patch(model, task, SENDERS, RECEIVERS, method="projection")
    effects = []
    for r in tables["auto"].itertuples():
        want = B.path_patch(model, task, (r.sender_layer, r.sender_head),
                            (r.receiver_layer, r.receiver_head), r.input)
        for m, df in tables.items():
            got = df[(df.sender_layer == r.sender_layer) & (df.sender_head == r.sender_head)
                     & (df.receiver_layer == r.receiver_layer)
                     & (df.receiver_head == r.receiver_head) & (df.input == r.input)]
            assert abs(float(got.metric.iloc[0]) - want) <= TOL, (m, r)
        effects.append(abs(want - tables["auto"].attrs["corrupted"]))
    assert max(effects) > 1e-3            # the paths carry something


def test_gemma3_path_through_k_equals_brute_force(tiny, monkeypatch):
    """The issue's case on a Gemma-3-like tiny model (q/k norm, sandwich norms, GQA): K-paths
    from layer-0 heads into layer-1 heads equal the brute force; the old hand projection
    (``dz @ W_O`` added to the residual, no post-attention norm), forced here, misses them
    by about the whole effect."""
    import interp.circuits.path as path

    model, task, _ = tiny("gemma3")
    senders, receivers = [(0, h) for h in range(4)], [(1, 1), (1, 2)]
    df = path_patch(model, task, senders, receivers, inputs=("k",))
    assert df.attrs["method"] == "forward"
    for r in df.itertuples():
        want = B.path_patch(model, task, (0, r.sender_head), (1, r.receiver_head), "k")
        assert r.metric == pytest.approx(want, abs=TOL)
    effect = (df.metric - df.attrs["corrupted"]).abs()
    assert effect.max() > 5e-3
    monkeypatch.setattr(path, "projection_exact", lambda model, layers: None)
    old = path_patch(model, task, senders, receivers, inputs=("k",), method="projection")
    assert (old.metric - df.metric).abs().max() > 0.5 * effect.max()


# ------------------------------------------------------------------- activation patching
@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_activation_patching_equals_brute_force(tiny, name):
    model, task, _ = tiny(name)
    heads = patch_heads(model, task, progress=False)
    for r in heads.itertuples():
        assert abs(r.metric - B.patch_head(model, task, r.layer, r.head)) <= TOL
    resid = patch_residual(model, task, layers=[1], progress=False)
    for r in resid.itertuples():
        if r.pos % 3 == 0:
            assert abs(r.metric - B.patch_resid(model, task, 1, r.pos)) <= TOL
    noise = patch_heads(model, task, direction="noise", layers=[2], progress=False)
    for r in noise.itertuples():
        assert abs(r.metric - B.patch_head(model, task, 2, r.head, "noise")) <= TOL


# ------------------------------------------------------------------------ circuit runner
def _edges(g: HeadGraph):
    """A spread of valid edges: embed, a head of each of layers 0/1 and the MLPs into the q, k
    and v of layer 2, layer 1's MLP and the logits."""
    snd, rcv, valid = g.senders(), g.receivers(), g.valid()
    s_names = ["embed", "L0H2", "L1H3", "MLP0", "MLP1"]
    r_names = ["L2H1.q", f"{g.kv_name(2, 0)}.k", f"{g.kv_name(2, 1)}.v", "MLP1", "logits"]
    out = []
    for sn in s_names:
        for rn in r_names:
            si, ri = snd.index[snd.name == sn], rcv.index[rcv.name == rn]
            if len(si) and len(ri) and valid[si[0], ri[0]]:
                out.append((si[0], ri[0]))
    return out


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_circuit_runner_equals_brute_force(tiny, name):
    model, task, _ = tiny(name)
    if name == "bert":
        with pytest.raises(NotImplementedError, match="encoder"):
            CircuitRunner(model, task)
        return
    r = CircuitRunner(model, task)
    assert r.metric(r.valid) == pytest.approx(r.clean_metric, abs=TOL)
    assert r.metric(torch.zeros_like(r.valid)) == pytest.approx(r.corrupted_metric, abs=TOL)
    moved = 0.0
    for si, ri in _edges(r.graph):
        mask = r.valid.clone()
        mask[si, ri] = False
        want = B.edge_removed(model, task, _sender(r.senders.loc[si]),
                              _receiver(r.receivers.loc[ri]))
        assert r.metric(mask) == pytest.approx(want, abs=TOL), (si, ri)
        moved = max(moved, abs(want - r.clean_metric))
    assert moved > 1e-3
    if name == "gpt_neox":          # parallel blocks: a layer's heads do not feed its MLP
        snd, rcv = r.senders.set_index("name"), r.receivers.set_index("name")
        assert not r.valid[snd.index.get_loc("L1H0"), rcv.index.get_loc("MLP1")]
    mean = CircuitRunner(model, task, ablation="mean")
    assert mean.metric(mean.valid) == pytest.approx(mean.clean_metric, abs=TOL)


# ----------------------------------------------------------------------- attribution
@pytest.mark.parametrize("name", ["llama", "gemma3", "gpt_neox", "qwen2"])
def test_runner_batched_sums_equal_per_edge_sums(tiny, name, monkeypatch):
    """Random circuits from very sparse (gathered rows) to dense (rows read in place), both
    ablations: the metric with the batched sender sums equals the metric with per-edge
    sums."""
    from interp.circuits import runner as R

    model, task, _ = tiny(name)
    g = torch.Generator().manual_seed(1)
    for ablation in ("corrupted", "mean"):
        r = CircuitRunner(model, task, ablation=ablation)
        masks = [(torch.rand(r.valid.shape, generator=g) < p) & r.valid
                 for p in (0.01, 0.05, 0.3, 0.9)]
        fast = [r.metric(m) for m in masks]
        with monkeypatch.context() as mp:
            mp.setattr(R._CircuitForward, "summed", R._CircuitForward.summed_per_edge)
            slow = [r.metric(m) for m in masks]
        assert fast == pytest.approx(slow, abs=1e-5)
        assert max(slow) - min(slow) > 1e-3, slow                 # the masks differ in effect


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_attribution_equals_brute_force(tiny, name):
    model, task, _ = tiny(name)
    nodes = node_attribution(model, task)
    want = B.node_attribution(model, task)
    for r in nodes.itertuples():
        assert abs(r.score - want[r.layer, r.head].item()) <= TOL
    if name == "bert":
        with pytest.raises(NotImplementedError, match="encoder"):
            edge_attribution(model, task)
        return
    scores = edge_attribution(model, task)
    g = HeadGraph.of(model)
    snd = [_sender(s) for s in g.senders().itertuples()]
    rcv = [_receiver(r) for r in g.receivers().itertuples()]
    ref = B.edge_attribution(model, task, snd, rcv) * g.valid()
    assert (scores - ref).abs().max() <= TOL
    assert ref.abs().max() > 1e-3


# ------------------------------------------------------------------------- discovery
def _check_discovery(model, task, which):
    runner = CircuitRunner(model, task)
    circuit = (eap_circuit(model, task, top_n=60, runner=runner) if which == "eap"
               else acdc(model, task, threshold=0.05, progress=False, runner=runner))
    assert circuit.metric == pytest.approx(run_circuit(model, task, circuit.mask)["metric"],
                                           abs=TOL)
    assert len(circuit.edges) > 0


@pytest.mark.parametrize("name", CAUSAL)
def test_eap_circuit_runs_on_the_exact_runner(tiny, name):
    """EAP circuits are scored by EAP and evaluated with the runner, both checked above;
    the reported metric is a fresh run of the mask."""
    model, task, _ = tiny(name)
    _check_discovery(model, task, "eap")


@pytest.mark.parametrize("name", [pytest.param(n, marks=()
                                               if n == "gemma3" else pytest.mark.slow)
                                  for n in CAUSAL])
def test_acdc_runs_on_the_exact_runner(tiny, name):
    """ACDC (one runner forward per edge: seconds per family, so only the Gemma-3-like model
    in the default suite)."""
    model, task, _ = tiny(name)
    _check_discovery(model, task, "acdc")


def test_discovery_refuses_encoders(tiny):
    model, task, _ = tiny("bert")
    with pytest.raises(NotImplementedError, match="encoder"):
        eap_circuit(model, task)
    with pytest.raises(NotImplementedError, match="encoder"):
        acdc(model, task, progress=False)


# -------------------------------------------------------------------------- ablation
def _loss(logits, tokens):
    return -logits.float().log_softmax(-1).gather(-1, tokens[..., None]).mean()


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_head_ablation_equals_brute_force(tiny, name):
    model, task, _ = tiny(name)
    tokens, other = task.clean, task.corrupted
    heads = [(0, 1), (2, 3)]
    with torch.no_grad(), B.zeroed_heads(model, heads):
        want = float(_loss(model(tokens), tokens))
    assert ablate_heads(model, tokens, heads, _loss, "zero") == pytest.approx(want, abs=TOL)
    cache = B.cache(model, other, [B.Z.format(l) for l in (0, 2)])
    means = {(l, h): cache[B.Z.format(l)][:, :, h].mean(dim=(0, 1)) for l, h in heads}
    got = ablate_heads(model, tokens, heads, _loss, "mean", reference=other)
    assert got == pytest.approx(B.ablated_loss(model, tokens, heads, _loss, means), abs=TOL)
    resampled = {(l, h): cache[B.Z.format(l)][:, :, h] for l, h in heads}
    got = ablate_heads(model, tokens, heads, _loss, "resample", reference=other)
    assert got == pytest.approx(B.ablated_loss(model, tokens, heads, _loss, resampled), abs=TOL)
    with torch.no_grad():
        clean = float(_loss(model(tokens), tokens))
    assert abs(got - clean) > 1e-5
    rolled = ablate_heads(model, tokens, heads, _loss, "resample")       # rows swapped
    swapped = {k: B.cache(model, tokens.roll(1, 0), [B.Z.format(k[0])])[B.Z.format(k[0])]
               [:, :, k[1]] for k in heads}
    assert rolled == pytest.approx(B.ablated_loss(model, tokens, heads, _loss, swapped), abs=TOL)
    assert set(mean_z(model, other, [0])) == {0}
    with pytest.raises(ValueError, match="mode"):
        ablate_heads(model, tokens, heads, _loss, "shuffle")
    with pytest.raises(ValueError, match="batch >= 2"):
        ablate_heads(model, tokens[:1], heads, _loss, "resample")
    with pytest.raises(ValueError, match="shape"):
        ablate_heads(model, tokens, heads, _loss, "resample", reference=other[:1])


# ------------------------------------------------------------------ weight-based scores
def _hf_heads(ref, name: str) -> dict:
    """Per layer, from the HF modules' own weights (row convention, x @ W): ``q, k, v``
    ``[heads or kv heads, d, dh]``, ``o [heads, dh, d]``, the norms as ``(scale, centers)``:
    ``ln1``, ``q_norm``, ``k_norm``, ``post`` (None where absent), and ``final``, ``E [V, d]``
    (the embedding module's output per token), ``U [d, V]``."""
    cfg = ref.config
    d = cfg.hidden_size
    H = cfg.num_attention_heads
    dh = getattr(cfg, "head_dim", None) or d // H
    kv = getattr(cfg, "num_key_value_heads", None) or H
    gemma = name.startswith("gemma")
    off = 1.0 if gemma else 0.0

    def rms(mod):
        return None if mod is None else (mod.weight.detach().double() + off, False)

    def ln(mod):
        return (mod.weight.detach().double(), True)

    def split(w_t, n):            # [d, n*dh] -> [n, d, dh]
        return w_t.reshape(d, n, dh).permute(1, 0, 2)

    layers = []
    if name == "gpt2":
        for b in ref.transformer.h:
            w = b.attn.c_attn.weight.detach().double()                      # [d, 3d]
            layers.append(dict(q=split(w[:, :d], H), k=split(w[:, d:2 * d], H),
                               v=split(w[:, 2 * d:], H),
                               o=b.attn.c_proj.weight.detach().double().reshape(H, dh, d),
                               ln1=ln(b.ln_1), q_norm=None, k_norm=None, post=None))
        final = ln(ref.transformer.ln_f)
    elif name == "gpt_neox":
        for b in ref.gpt_neox.layers:
            w = b.attention.query_key_value.weight.detach().double()       # [3d, d]
            w = w.reshape(H, 3, dh, d)                                      # per head q|k|v
            layers.append(dict(q=w[:, 0].transpose(1, 2), k=w[:, 1].transpose(1, 2),
                               v=w[:, 2].transpose(1, 2),
                               o=b.attention.dense.weight.detach().double().T.reshape(H, dh, d),
                               ln1=ln(b.input_layernorm), q_norm=None, k_norm=None, post=None))
        final = ln(ref.gpt_neox.final_layer_norm)
    else:
        for b in ref.model.layers:
            a = b.self_attn
            if name == "phi3":
                w = a.qkv_proj.weight.detach().double().T                  # [d, (H+2kv) dh]
                q, k, v = w[:, :H * dh], w[:, H * dh:(H + kv) * dh], w[:, (H + kv) * dh:]
            else:
                q, k, v = (m.weight.detach().double().T for m in (a.q_proj, a.k_proj, a.v_proj))
            layers.append(dict(q=split(q, H), k=split(k, kv), v=split(v, kv),
                               o=a.o_proj.weight.detach().double().T.reshape(H, dh, d),
                               ln1=rms(b.input_layernorm),
                               q_norm=rms(getattr(a, "q_norm", None)),
                               k_norm=rms(getattr(a, "k_norm", None)),
                               post=rms(b.post_attention_layernorm) if gemma else None))
        final = rms(ref.model.norm)
    emb, U = ref.get_input_embeddings(), ref.get_output_embeddings()
    with torch.no_grad():
        E = emb(torch.arange(cfg.vocab_size)).double()
    return dict(layers=layers, final=final, E=E, U=U.weight.detach().double().T, H=H, kv=kv)


def _rows(w, fold):               # P diag(g) W over the d axis (-2)
    g, centers = fold
    w = w * g[:, None]
    return w - w.mean(-2, keepdim=True) if centers else w


def _cols(w, fold):               # W diag(g) over the last axis
    return w if fold is None else w * fold[0]


def _circuits(hf) -> tuple[list, list]:
    """Per (layer, head): ``OV = W_V W_O`` and ``QK = W_Q W_K^T`` (``d x d``), folded."""
    group = hf["H"] // hf["kv"]
    OV, QK = [], []
    for lay in hf["layers"]:
        ov, qk = [], []
        for h in range(hf["H"]):
            wq = _cols(_rows(lay["q"][h], lay["ln1"]), lay["q_norm"])
            wk = _cols(_rows(lay["k"][h // group], lay["ln1"]), lay["k_norm"])
            wv = _rows(lay["v"][h // group], lay["ln1"])
            wo = _cols(lay["o"][h], lay["post"])
            ov.append(wv @ wo)
            qk.append(wq @ wk.T)
        OV.append(ov)
        QK.append(qk)
    return OV, QK


def _composition_reference(OV, QK, mode: str) -> dict:
    """Elhage et al. 2021: ``||W_OV^a M|| / (||W_OV^a|| ||M||)`` with ``M = W_QK^b`` (Q),
    ``W_QK^b^T`` (K) or ``W_OV^b`` (V), for every head ``a`` of an earlier layer."""
    out = {}
    fro = torch.linalg.matrix_norm
    for lb in range(1, len(OV)):
        for j in range(len(OV[lb])):
            m = {"Q": QK[lb][j], "K": QK[lb][j].T, "V": OV[lb][j]}[mode]
            for la in range(lb):
                for i in range(len(OV[la])):
                    a = OV[la][i]
                    out[(la, i, lb, j)] = float(fro(a @ m) / (fro(a) * fro(m)))
    return out


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_composition_scores_equal_definition_from_hf_weights(tiny, name):
    model, _, folder = tiny(name)
    if name == "bert":
        for mode in "QKV":
            with pytest.raises(NotImplementedError, match="encoder"):
                composition_scores(model, mode)
        return
    folds = set(head_weights(model).folds)
    centered = name in ("gpt2", "gpt_neox")
    assert ("ln1 scale and centering" if centered else "ln1 scale") in folds
    assert ("q/k norm scale" in folds) == (name in ("qwen3", "gemma3"))
    assert ("post-attention norm scale" in folds) == (name in POST_NORM)
    assert any(f.startswith("embedding scale") for f in folds) == name.startswith("gemma")
    OV, QK = _circuits(_hf_heads(load_reference(name, folder), name))
    for mode in "QKV":
        if name in SOFTCAP and mode != "V":
            with pytest.raises(NotImplementedError, match="soft-capping"):
                composition_scores(model, mode)
            df = composition_scores(model, mode, ignore=("softcap",))   # the pre-cap form
        else:
            df = composition_scores(model, mode)
        want = _composition_reference(OV, QK, mode)
        assert len(df) == len(want)
        for r in df.itertuples():
            assert r.score == pytest.approx(want[(r.src_layer, r.src_head, r.dst_layer,
                                                  r.dst_head)], abs=TOL), (mode, r)


@pytest.mark.parametrize("name", CAUSAL)
def test_copying_scores_equal_full_vocab_ov_product(tiny, name):
    """copying = sum(eig) / sum(|eig|) of the token -> logit OV circuit
    ``E W_V W_O U`` (``vocab x vocab``) built from the HF weights: the embedding module's own
    output (Gemma's scale included), ``ln1`` folded into W_V, the post-attention norm into
    W_O, the final norm into the unembedding."""
    from interp.probes.induction import copying_scores

    model, _, folder = tiny(name)
    hf = _hf_heads(load_reference(name, folder), name)
    OV, _ = _circuits(hf)
    U = _rows(hf["U"], hf["final"])
    got = copying_scores(model).set_index(["layer", "head"]).copying
    for l, heads in enumerate(OV):
        for h, ov in enumerate(heads):
            eig = torch.linalg.eigvals(hf["E"] @ ov @ U)
            want = float(eig.sum().real / eig.abs().sum())
            assert got[(l, h)] == pytest.approx(want, abs=TOL), (l, h)
