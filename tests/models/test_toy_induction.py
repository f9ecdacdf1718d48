"""The toy induction recipe forms induction heads in 2 layers and not in 1 (slow: trains)."""
from __future__ import annotations

import pytest

from interp.models.toy import load_toy
from interp.models.toy_induction import ToyInductionConfig, eval_tokens, induction_metrics

pytestmark = pytest.mark.slow


def test_two_layers_form_induction_heads_one_layer_cannot(tmp_path):
    from interp.models.toy_induction import train_toy_induction

    cfg = ToyInductionConfig(steps=1000, eval_every=100, checkpoint_every=200)
    hist = train_toy_induction(cfg, out_dir=tmp_path / "toy", progress=False)
    evals = hist.dropna(subset=["induction"])
    main, control = evals[evals.model == "main"], evals[evals.model == "control"]
    final, ctrl = main.iloc[-1], control.iloc[-1]
    assert final.induction > 0.9
    assert final.repeated_loss < 0.25 * final.first_half_loss   # copies are predicted
    assert ctrl.induction < 0.3
    assert ctrl.repeated_loss > 0.8 * ctrl.first_half_loss      # the control cannot copy
    # the phase change: low at first, then a jump between two evaluations
    assert main.induction.iloc[1] < 0.2
    assert main.induction.diff().max() > 0.3
    assert main.icl_score.iloc[-1] < main.icl_score.iloc[1] - 1.0

    # the score curve over saved checkpoints shows the same jump
    held = eval_tokens(cfg)
    early = induction_metrics(load_toy(tmp_path / "toy" / "checkpoints" / "step_000200"), held,
                              cfg.seg_len)
    late = induction_metrics(load_toy(tmp_path / "toy"), held, cfg.seg_len)
    assert early["induction"] < 0.2 < 0.9 < late["induction"]
