"""Toy models: build from config, train, save, reload identically."""
from __future__ import annotations

import json

import pytest
import torch

import interp
from interp.config import ConfigError
from interp.models.toy import ToyConfig, build_toy, load_toy, lm_loss, save_toy, train_toy


def test_toy_has_pretrained_hook_names(toy_model):
    names = set(toy_model.hook_dict)
    for layer in range(2):
        for h in ("hook_q", "hook_k", "hook_v", "hook_pattern", "hook_z", "hook_attn_scores"):
            assert f"blocks.{layer}.attn.{h}" in names


@pytest.mark.parametrize("cfg", [
    ToyConfig(n_layers=1, d_model=32, n_heads=2, d_head=16, d_vocab=20, n_ctx=32),
    ToyConfig(n_layers=2, d_model=32, n_heads=4, d_head=8, d_vocab=20, n_ctx=32,
              attn_only=False, positional="rotary", normalization="RMS"),
], ids=["attn-only-1L", "mlp-rotary-rms-2L"])
def test_train_save_reload(cfg, tmp_path):
    model = build_toy(cfg)
    gen = torch.Generator().manual_seed(0)
    # a learnable task: each sequence counts up mod vocab from a random start
    def batch(step):
        start = torch.randint(0, cfg.d_vocab, (16, 1), generator=gen)
        return (start + torch.arange(24)) % cfg.d_vocab

    history = train_toy(model, batch, steps=60, lr=3e-3, warmup=5, progress=False)
    assert history.loss.iloc[-1] < 0.5 * history.loss.iloc[0]
    save_toy(model, tmp_path / "ckpt", history)
    again = interp.load_model(f"toy:{tmp_path / 'ckpt'}")
    x = batch(0)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
    assert again.interp_info.kind == "toy"


def test_checkpoints_are_written(tmp_path):
    model = build_toy(ToyConfig(n_layers=1, d_model=16, n_heads=2, d_head=8, d_vocab=10, n_ctx=16))
    train_toy(model, lambda s: torch.randint(0, 10, (4, 8)), steps=20, checkpoint_dir=tmp_path,
              checkpoint_every=10, progress=False)
    assert (tmp_path / "step_000010" / "model.safetensors").is_file()
    assert (tmp_path / "final" / "history.csv").is_file()


def test_lm_loss_matches_cross_entropy():
    logits = torch.randn(2, 5, 7)
    tokens = torch.randint(0, 7, (2, 5))
    ref = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 7), tokens[:, 1:].reshape(-1))
    assert torch.allclose(lm_loss(logits, tokens), ref, atol=1e-6)


def test_bad_configs_and_paths(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text(json.dumps({"n_layer": 2}))
    with pytest.raises(ConfigError, match="unknown field"):
        load_toy(tmp_path / "bad")
    with pytest.raises(FileNotFoundError, match="interp train"):
        interp.load_model(f"toy:{tmp_path / 'nothing'}")
    with pytest.raises(ValueError, match="n_heads"):
        ToyConfig(n_heads=0)
