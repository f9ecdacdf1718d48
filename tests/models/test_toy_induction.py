"""The toy induction recipe forms induction heads in 2 layers and not in 1 (slow: trains once
per cache, shared with the circuit tests through the ``toy_induction_dir`` fixture)."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from interp.models.toy import load_toy
from interp.recipes.toy_induction import (ToyInductionConfig, eval_tokens, induction_batch,
                                         induction_metrics)

pytestmark = pytest.mark.slow


def test_batches_vary_the_segment_length():
    cfg = ToyInductionConfig()
    lengths = {induction_batch(cfg, step).shape[1] for step in range(40)}
    assert len(lengths) > 5                       # no single length to learn by position
    toks = induction_batch(cfg, 3)
    s = (toks.shape[1] - 1) // 2
    assert torch.equal(toks[:, 1:1 + s], toks[:, 1 + s:]) and (toks[:, 0] == 0).all()


def test_two_layers_form_induction_heads_one_layer_cannot(toy_induction_dir):
    cfg = ToyInductionConfig()
    main = pd.read_csv(toy_induction_dir / "history.csv").dropna(subset=["induction"])
    control = pd.read_csv(toy_induction_dir.parent / f"{cfg.name}-control" / "history.csv")
    control = control.dropna(subset=["induction"])
    final, ctrl = main.iloc[-1], control.iloc[-1]
    assert final.induction > 0.9
    assert final.repeated_loss < 0.1 * final.first_half_loss    # copies are predicted
    assert ctrl.induction < 0.3
    assert ctrl.repeated_loss > 0.5 * ctrl.first_half_loss      # the control cannot copy
    # the phase change: low at first, then a jump between two evaluations
    assert main.induction.iloc[1] < 0.2
    assert main.induction.diff().max() > 0.3
    assert main.icl_score.iloc[-1] < main.icl_score.iloc[1] - 1.0

    # the score curve over saved checkpoints shows the same jump, and the saved final
    # model reproduces the logged final metrics
    held = eval_tokens(cfg)
    early = induction_metrics(load_toy(toy_induction_dir / "checkpoints" / "step_000100"),
                              held, cfg.seg_len)
    late = induction_metrics(load_toy(toy_induction_dir), held, cfg.seg_len)
    assert early["induction"] < 0.2 < 0.9 < late["induction"]
    assert late["induction"] == pytest.approx(final.induction, abs=1e-4)


def test_induction_head_is_fed_by_previous_token_head(toy_induction_dir):
    """K-composition: the induction head's strongest source is the previous-token head."""
    from interp.circuits import composition_scores
    from interp.probes.induction import pattern_scores

    cfg = ToyInductionConfig()
    model = load_toy(toy_induction_dir)
    scores = pattern_scores(model, eval_tokens(cfg), seg_len=cfg.seg_len, offset=1)
    ind = scores.nlargest(1, "induction").iloc[0]
    prev = scores[scores.layer == 0].nlargest(1, "previous_token").iloc[0]
    assert ind.layer == 1 and prev.previous_token > 0.5
    comp = composition_scores(model, "K")
    to_ind = comp[(comp.dst_layer == 1) & (comp.dst_head == ind["head"])]
    best = to_ind.nlargest(1, "score").iloc[0]
    assert best.src_head == prev["head"]
