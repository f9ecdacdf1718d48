from __future__ import annotations

import pytest
import torch

from interp.hooks import attach, count_hooks


def test_hooks_removed_even_when_forward_raises(toy_model):
    x = torch.randint(0, 50, (2, 8))
    toy_model(x)
    before = count_hooks(toy_model)
    seen = []
    with attach(toy_model, [("blocks.1.attn.hook_pattern", lambda t, hook: seen.append(t.shape))]):
        toy_model(x)
        assert count_hooks(toy_model) == before + 1
    assert seen == [torch.Size([2, 4, 8, 8])]
    assert count_hooks(toy_model) == before

    def boom(t, hook):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        with attach(toy_model, [(lambda n: n.endswith("hook_z"), boom)]):
            toy_model(x)
    assert count_hooks(toy_model) == before


def test_hook_can_replace_activation(toy_model):
    x = torch.randint(0, 50, (1, 6))
    clean = toy_model(x)
    with attach(toy_model, [("blocks.0.attn.hook_z", lambda t, hook: torch.zeros_like(t))]):
        ablated = toy_model(x)
    assert not torch.allclose(clean, ablated)
    assert torch.equal(toy_model(x), clean)


def test_unknown_hook_name(toy_model):
    with pytest.raises(KeyError, match="hook_pattern"):
        with attach(toy_model, [("blocks.0.attn.hook_patern", lambda t, hook: None)]):
            pass


def test_hook_sees_documented_layout_and_edits_apply(toy_model):
    """hook_z is [batch, pos, head, d_head] to the hook, and zeroing one head there equals
    removing that head's slice of the output projection's input."""
    x = torch.randint(0, 50, (2, 7))
    shapes = []

    def zero_head1(z, hook):
        shapes.append(tuple(z.shape))
        z = z.clone()
        z[:, :, 1] = 0
        return z

    with attach(toy_model, [("blocks.0.attn.hook_z", zero_head1)]):
        patched = toy_model(x)
    assert shapes == [(2, 7, 4, 8)]
    # reference: zero the same head through the W_O columns instead
    o = toy_model.blocks[0].attn.o.original_component
    saved = o.weight.data.clone()
    o.weight.data[:, 8:16] = 0
    try:
        ref = toy_model(x)
    finally:
        o.weight.data.copy_(saved)
    assert torch.allclose(patched, ref, atol=1e-5)
