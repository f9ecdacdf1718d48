"""Toy checkpoints store their recipe (#16): a cached toy trained with another recipe is
retrained or refused (naming the differing field); the recipe sits above probes/circuits."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from interp.models.toy import (ToyConfig, ToyRecipeMismatch, build_toy, check_recipe, load_toy,
                               read_recipe, save_toy)
from interp.recipes import toy_induction as recipe_mod
from interp.recipes.toy_induction import ToyInductionConfig, ensure_toy_induction, recipe

TINY = dict(d_model=16, n_heads=2, d_head=8, d_vocab=16, min_seg=4, max_seg=6, seg_len=5,
            batch=4, steps=2, eval_every=1, checkpoint_every=100)


def test_save_and_load_keep_the_recipe(tmp_path):
    model = build_toy(ToyConfig(n_layers=1, d_model=8, n_heads=2, d_head=4, d_vocab=16, n_ctx=8))
    want = recipe(ToyInductionConfig(steps=100))
    save_toy(model, tmp_path, recipe=want)
    stored = read_recipe(tmp_path)
    assert stored["recipe"] == want and len(stored["hash"]) == 64
    assert load_toy(tmp_path).toy_recipe == want
    assert check_recipe(tmp_path, want) == []
    assert check_recipe(tmp_path, recipe(ToyInductionConfig(steps=1500))) == [
        "config.steps: 100 -> 1500"]
    save_toy(model, tmp_path)                   # saved without a recipe: the old one goes
    assert read_recipe(tmp_path) is None
    assert check_recipe(tmp_path, want)[0].startswith("recipe.json: (absent) -> ")


@pytest.fixture
def trainings(monkeypatch):
    calls = []
    real = recipe_mod.train_toy_induction

    def counted(cfg, *args, **kwargs):
        calls.append(cfg)
        return real(cfg, *args, **kwargs)

    monkeypatch.setattr(recipe_mod, "train_toy_induction", counted)
    return calls


def test_changed_recipe_is_detected(tmp_path, trainings, monkeypatch):
    monkeypatch.setenv("INTERP_CACHE", str(tmp_path))
    cfg = ToyInductionConfig(name="tiny", **TINY)
    out = ensure_toy_induction(cfg)
    assert out == tmp_path / "toy" / "tiny" and len(trainings) == 1
    assert read_recipe(out)["recipe"]["model"] == "main"
    assert read_recipe(tmp_path / "toy" / "tiny-control")["recipe"]["model"] == "control"
    ensure_toy_induction(cfg)
    assert len(trainings) == 1                              # same recipe: reused
    import interp

    assert interp.load_model("toy:tiny").toy_recipe == recipe(cfg)   # name still loads

    other = ToyInductionConfig(name="tiny", **{**TINY, "lr": 1e-3})
    with pytest.raises(ToyRecipeMismatch, match=r"tiny was trained with another recipe "
                                                r"\(config\.lr: 0\.002 -> 0\.001\)"):
        ensure_toy_induction(other, on_mismatch="refuse")
    assert len(trainings) == 1
    ensure_toy_induction(other)                             # default: retrain
    assert len(trainings) == 2 and check_recipe(out, recipe(other)) == []

    (out / "recipe.json").unlink()                          # a checkpoint from before recipes
    with pytest.raises(ToyRecipeMismatch, match=r"recipe\.json: \(absent\)"):
        ensure_toy_induction(other, on_mismatch="refuse")
    ensure_toy_induction(other)
    assert len(trainings) == 3


def test_models_layer_does_not_import_analysis():
    code = ("import sys, interp.models, interp.models.toy, interp.models.registry\n"
            "bad = [m for m in sys.modules if m.startswith(('interp.probes', "
            "'interp.circuits', 'interp.recipes'))]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)
