"""A sink probe on a sequence split across processes (ring attention swapped into every layer
of smollm2-135m) equals the single-process probe, and so do the logits."""
from __future__ import annotations

import pytest
import torch

from interp.distributed import run_distributed
from tests.distributed.model_workers import sink_and_logits

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


@pytest.mark.parametrize("nprocs, length", [(2, 48), (4, 61)], ids=["2proc-even", "4proc-uneven"])
def test_sharded_sink_probe_equals_single_process(smollm2, nprocs, length):
    from interp.probes.sink import sink_scores

    gen = torch.Generator().manual_seed(nprocs)
    tokens = torch.randint(1000, 20000, (2, length), generator=gen)
    tokens[:, 0] = smollm2.tokenizer.bos_token_id
    results = run_distributed(sink_and_logits, nprocs, tokens, (0, 1), timeout=600,
                              num_threads=1)
    with torch.no_grad():
        ref_logits = smollm2(tokens)
    ref = sink_scores(smollm2, tokens, positions=(0, 1)).sort_values(["layer", "head",
                                                                      "position"])
    for table, _ in results:                 # every rank gets the same, complete table
        got = table.sort_values(["layer", "head", "position"])
        assert len(got) == len(ref) == 30 * 9 * 2
        assert (got.alpha.values - ref.alpha.values).__abs__().max() < 1e-4
    full = results[0][1]
    assert full.shape == ref_logits.shape
    assert ((full - ref_logits).abs().max() / ref_logits.abs().max()) < 1e-5
