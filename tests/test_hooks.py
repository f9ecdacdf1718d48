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
