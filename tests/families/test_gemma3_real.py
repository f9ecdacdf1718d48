"""The real second family, Gemma 3 270M (offline registry): what the tiny configs assert, on
the pretrained model at a length where its 512-token sliding windows bite (701 tokens).
Before per-layer descriptions the softmax swap differed from the model by 0.97 of the logit
scale (q/k norm skipped) and failed at 701 tokens; path patching missed the L4H1 -> L5H1
K-composition (post-attention norm)."""
from __future__ import annotations

import pytest
import torch

import interp
from interp.data.texts import load_text

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gemma():
    model = interp.load_model("gemma3-270m")
    tok = model.tokenizer
    ids = tok(load_text("alice")[2000:12000], add_special_tokens=False).input_ids[:700]
    return model, torch.tensor([[tok.bos_token_id, *ids]])


def test_softmax_swap_is_exact_past_the_window(gemma):
    model, ids = gemma
    with torch.no_grad():
        base = model(ids)
        with interp.swap_attention(model, "softmax"):
            swapped = model(ids)
        with interp.swap_attention(model, "softmax", ignore=("sliding_window",)):
            windowless = model(ids)
        after = model(ids)
    scale = base.abs().max()
    assert (swapped - base).abs().max() <= 1e-5 * scale
    assert (windowless - base).abs().max() > 1e-2 * scale     # the windows matter here
    assert torch.equal(after, base)                           # restored bit for bit


def test_linear_swap_refused_on_sliding_layers_allowed_on_global(gemma):
    model, ids = gemma
    specs = interp.describe_layers(model)
    sliding = [s.layer for s in specs if s.sliding_window is not None]
    full = [s.layer for s in specs if s.sliding_window is None]
    assert len(sliding) == 15 and full == [5, 11, 17]
    with pytest.raises(NotImplementedError, match="sliding_attention"):
        with interp.swap_attention(model, "linear", feature_map="elu"):
            pass
    with torch.no_grad():
        before = model(ids[:, :64])
        with interp.swap_attention(model, "linear", layers=full, feature_map="elu"):
            after = model(ids[:, :64])
    assert (after - before).abs().max() > 1e-2 * before.abs().max()


def test_path_patch_sees_the_k_composition_path(gemma):
    """Sender L4H1 (a previous-token head) -> receiver L5H1 (the top induction head) via k:
    `auto` reads the receiver input from whole forwards (the post-attention norm makes the
    hand projection inexact, and it is refused)."""
    from interp.circuits.path import path_patch
    from interp.circuits.tasks import induction_task

    model, _ = gemma
    task = induction_task(model, batch=4, seg_len=10, seed=0)
    df = path_patch(model, task, [(4, 1), (2, 3)], [(5, 1)], inputs=("k",))
    assert df.attrs["method"] == "forward"
    effect = df.set_index("sender_layer")["normalised"]
    assert effect[4] > 0.02 and effect[4] > 10 * abs(effect[2])
    with pytest.raises(NotImplementedError, match="post_attention_layernorm"):
        path_patch(model, task, [(4, 1)], [(5, 1)], inputs=("k",), method="projection")
