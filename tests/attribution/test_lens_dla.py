"""The logit lens and direct logit attribution against independent references
(tests/attribution/hf_reference.py: the plain HF model with hooks on its own modules) on every
causal tiny family (checkpoints with noisy norm scales and biases, so every fold shows),
SmolLM2-135M and Gemma 3 270M (slow), plus the toy; BERT is refused by name.

- logit lens at layer l < L = HF ``hidden_states[l]`` -> HF final norm -> LM head (-> soft-cap)
  within 1e-5 of the logit scale; the lens at layer L equals the model's logits;
- DLA rows sum to HF's ``logit[answer] - logit[contrast]`` (1e-4 of the scale), per example and
  as the batch mean; each head's row equals the head's write through the frozen norm(s)
  dotted with the unembedding difference, computed from HF's modules;
- ``top_tokens`` (blockwise over positions) equals ``topk`` of the whole lens;
- bad input (an answer of several tokens, a position or layer outside the model) is an
  InputError naming it.
"""
from __future__ import annotations

import pytest
import torch

import interp
from interp.attribution import (direct_logit_attribution, head_matrix, logit_lens,
                                residual_decomposition, top_tokens)
from interp.errors import InputError, Refused
from tests.attribution import hf_reference as R
from tests.families.tiny import CAUSAL, VOCAB, build_family, load_reference

LENS_TOL = 1e-5
DLA_TOL = 1e-4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """``tiny(name)`` -> (bridge, HF reference) of a perturbed tiny checkpoint."""
    cache = {}

    def get(name):
        if name not in cache:
            folder = build_family(name, tmp_path_factory.mktemp(f"attr-{name}"), perturb=True)
            cache[name] = (interp.load_model(folder), load_reference(name, folder))
        return cache[name]

    return get


def _ids(seed: int = 0, batch: int = 2, seq: int = 9) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(4, VOCAB, (batch, seq), generator=gen)


def check_lens(model, hf, ids):
    got = R.run(hf, ids)
    lens = logit_lens(model, ids).double()
    L = model.cfg.n_layers
    assert lens.shape == (L + 1, *ids.shape, model.cfg.d_vocab)
    scale = float(got["logits"].abs().max())
    assert float((lens[L] - got["logits"]).abs().max()) < LENS_TOL * scale
    for l in range(L):
        want = R.lens(hf, got["hidden"][l])
        err = float((lens[l] - want).abs().max())
        at = max(scale, float(want.abs().max()))        # this layer's own logit scale
        assert err < LENS_TOL * at, f"layer {l}: lens differs from HF by {err:.3g} ({at:.3g})"
    # the lens really differs between layers (a lens reading one layer's norm everywhere,
    # TransformerLens #1076, or the final residual at every layer would not)
    assert float((lens[0] - lens[L]).abs().max()) > 1e-3 * scale


def check_dla(model, hf, ids, answer, contrast, position):
    got = R.run(hf, ids)
    b = ids.shape[0]
    lg = got["logits"][:, position]
    diff = lg[torch.arange(b), answer] - (0 if contrast is None else lg[torch.arange(b), contrast])
    scale = float(lg.abs().max())
    df = direct_logit_attribution(model, ids, answer.tolist(),
                                  None if contrast is None else contrast.tolist(), position)
    assert abs(df.value.sum() - float(diff.mean())) < DLA_TOL * scale
    per = direct_logit_attribution(model, ids, answer.tolist(),
                                   None if contrast is None else contrast.tolist(), position,
                                   per_example=True)
    sums = per.groupby("example").value.sum()
    assert torch.allclose(torch.tensor(sums.values), diff, atol=DLA_TOL * scale)
    want = R.head_dla(hf, got, position, answer, contrast)
    heads = head_matrix(df, model.cfg.n_layers, model.cfg.n_heads).double()
    err = float((heads - want).abs().max())
    assert err < DLA_TOL * scale, f"head DLA differs from the HF reference by {err:.3g}"
    assert float(want.abs().max()) > 1e-3 * scale              # heads do write something
    return df


@pytest.mark.parametrize("name", CAUSAL)
def test_logit_lens_equals_hf(tiny, name):
    model, hf = tiny(name)
    check_lens(model, hf, _ids())


@pytest.mark.parametrize("name", CAUSAL)
def test_dla_equals_hf(tiny, name):
    model, hf = tiny(name)
    ids = _ids(1)
    df = check_dla(model, hf, ids, torch.tensor([7, 40]), torch.tensor([100, 9]), -1)
    L = model.cfg.n_layers
    comps = set(df.component)
    assert "embed" in comps and "bias" in comps
    assert {f"L{l}H{h}" for l in range(L) for h in range(model.cfg.n_heads)} <= comps
    assert {f"L{l}.mlp" for l in range(L)} <= comps
    check_dla(model, hf, ids, torch.tensor([11, 12]), None, 3)     # no contrast, mid prompt


@torch.no_grad()
def test_dla_freezes_a_strong_final_softcap(tmp_path):
    """Gemma 2 with a final soft-cap of 1.5 (the tiny config's 30 barely bends its logits):
    the cap moves the logit difference well beyond the tolerance, and the rows still add up."""
    import json

    folder = build_family("gemma2", tmp_path, perturb=True)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["final_logit_softcapping"] = 1.5
    (folder / "config.json").write_text(json.dumps(cfg))
    model, hf = interp.load_model(folder), load_reference("gemma2", folder)
    ids = _ids(5)
    answer, contrast = torch.tensor([7, 40]), torch.tensor([100, 9])
    check_dla(model, hf, ids, answer, contrast, -1)
    got = R.run(hf, ids)
    normed = R.final_norm(hf)(got["final_in"][:, -1].float()).double()
    u = normed @ hf.get_output_embeddings().weight.double().T
    uncapped = (u[[0, 1], answer] - u[[0, 1], contrast]).mean()
    capped = (got["logits"][[0, 1], -1, answer] - got["logits"][[0, 1], -1, contrast]).mean()
    assert abs(float(uncapped - capped)) > 100 * DLA_TOL * float(got["logits"].abs().max())


def test_residual_decomposition_adds_up_to_hf(tiny):
    model, hf = tiny("gemma2")
    ids = _ids(2)
    got = R.run(hf, ids)
    dec = residual_decomposition(model, ids, position=-2)
    final_in = got["final_in"][:, -2]
    assert dec.vectors.shape == (len(dec.frame), 2, model.cfg.d_model)
    assert torch.allclose(dec.vectors.sum(0), final_in, atol=1e-5 * float(final_in.abs().max()))
    with torch.no_grad():
        normed = R.final_norm(hf)(final_in.float()).double()
    assert torch.allclose(dec.normed.sum(0), normed, atol=1e-5 * float(normed.abs().max()))


@pytest.mark.parametrize("name", ["llama", "gemma2"])
def test_top_tokens_blockwise_equals_the_whole_lens(tiny, name):
    model, _ = tiny(name)
    ids = _ids(3, batch=1, seq=7)
    lens = logit_lens(model, ids)
    df = top_tokens(model, ids, k=3, block_positions=2)
    assert len(df) == (model.cfg.n_layers + 1) * 7 * 3
    for (layer, pos), g in df.groupby(["layer", "position"]):
        val, idx = lens[layer, 0, pos].topk(3)
        g = g.sort_values("rank")
        assert g.token_id.tolist() == idx.tolist()
        assert torch.allclose(torch.tensor(g.logit.values, dtype=torch.float32), val, atol=1e-5)
        p = torch.softmax(lens[layer, 0, pos].double(), -1)[idx]
        assert torch.allclose(torch.tensor(g.prob.values), p, atol=1e-6)
    few = top_tokens(model, ids, k=2, layers=[0, 2], positions=[-1])
    assert set(few.layer) == {0, 2} and set(few.position) == {6}


def test_encoder_is_refused(tmp_path):
    model = interp.load_model(build_family("bert", tmp_path))
    ids = _ids()
    for fn in (lambda: logit_lens(model, ids), lambda: top_tokens(model, ids),
               lambda: direct_logit_attribution(model, ids, 5),
               lambda: residual_decomposition(model, ids)):
        with pytest.raises(Refused, match="masked-LM encoder"):
            fn()


def test_bad_input_is_named(tiny):
    model, _ = tiny("llama")
    ids = _ids()
    with pytest.raises(InputError, match="outside the prompt"):
        direct_logit_attribution(model, ids, 5, position=9)
    with pytest.raises(InputError, match="not a token id"):
        direct_logit_attribution(model, ids, VOCAB + 3)
    with pytest.raises(InputError, match="2 entries for a batch of 3"):
        direct_logit_attribution(model, _ids(batch=3), [1, 2])
    with pytest.raises(InputError, match="is not in 0..3"):
        logit_lens(model, ids, layers=[4])
    with pytest.raises(InputError, match="k must be a positive int"):
        top_tokens(model, ids, k=0)


# -- the toy: no HF model; the lens at layer 0 is the embedding read through the weights ----

def test_toy_lens_and_dla(toy_model):
    model = toy_model
    ids = _ids(4, seq=8) % model.cfg.d_vocab
    logits = model(ids).double()
    lens = logit_lens(model, ids).double()
    scale = float(logits.abs().max())
    assert float((lens[-1] - logits).abs().max()) < LENS_TOL * scale
    emb = model.embed.original_component.weight.detach().double()[ids]
    emb = emb + model.pos_embed.original_component.weight.detach().double()[:ids.shape[1]]
    ln = model.ln_final.original_component
    want0 = model.unembed.original_component(ln(emb.float())).double()
    assert float((lens[0] - want0).abs().max()) < LENS_TOL * scale
    df = direct_logit_attribution(model, ids, [3, 4], [5, 6])
    want = (logits[[0, 1], -1, [3, 4]] - logits[[0, 1], -1, [5, 6]]).mean()
    assert abs(df.value.sum() - float(want)) < DLA_TOL * scale


# -- pretrained models ----------------------------------------------------------------------

def _pretrained_checks(model, hf):
    text = "When Mary and John went to the store, John gave a drink to"
    ids = model.tokenizer(text, return_tensors="pt").input_ids
    check_lens(model, hf, ids)
    mary, john = (model.tokenizer.encode(w, add_special_tokens=False) for w in (" Mary", " John"))
    assert len(mary) == len(john) == 1
    df = check_dla(model, hf, ids, torch.tensor(mary), torch.tensor(john), -1)
    return df


def test_smollm2_lens_and_dla(smollm2, smollm2_hf):
    df = _pretrained_checks(smollm2, smollm2_hf[0])
    assert df.attrs["logit_diff"][0] > 0          # SmolLM2 prefers the indirect object


@pytest.mark.slow
def test_gemma3_lens_and_dla():
    from interp.models.registry import load_hf

    model = interp.load_model("gemma3-270m")
    hf, _ = load_hf("gemma3-270m")
    _pretrained_checks(model, hf)
