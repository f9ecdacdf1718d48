"""The probe protocol: every RowProbe gives the same result from the whole pattern as one block
and from row blocks of it (split and resume, on hand-cut blocks of a cached pattern, so the
contract is checked apart from softmax_rows); the pattern runner stops after the last probed
layer and leaves no hook behind, also when a reducer raises."""
from __future__ import annotations

import importlib
import pkgutil

import pandas as pd
import pytest
import torch

import interp.probes
from interp.hooks import count_hooks
from interp.probes.distraction import CATEGORIES, DistractionProbe
from interp.probes.induction import InductionProbe
from interp.probes.locality import LocalityProbe, default_layouts
from interp.probes.patterns import HeadPatterns
from interp.probes.protocol import RowProbe, run_pattern, run_probe
from interp.probes.sink import SinkProbe

LAYERS = [0, 1]


def _tokens():
    x = torch.randint(0, 20, (2, 40), generator=torch.Generator().manual_seed(3))
    x[:, 25:35] = x[:, 5:15]                                   # some repeats
    return x


def _probes(model, tokens):
    """One fresh instance of every RowProbe of the package, by class name."""
    labels = [CATEGORIES[k % len(CATEGORIES)] for k in range(tokens.shape[1])]
    return {
        "SinkProbe": lambda: SinkProbe(model, tokens, [0, 1, 7, 39], LAYERS, True, 0),
        "InductionProbe": lambda: InductionProbe(tokens, 10, 15, LAYERS),
        "LocalityProbe": lambda: LocalityProbe(tokens, default_layouts((4, 16)), LAYERS, 8,
                                               True),
        "DistractionProbe": lambda: DistractionProbe(labels, 30, LAYERS, tokens.device),
        "HeadPatterns": lambda: HeadPatterns([(1, 2), (0, 3)], (5, 33)),
    }


def _all_row_probes() -> set[str]:
    for mod in pkgutil.iter_modules(interp.probes.__path__):
        importlib.import_module(f"interp.probes.{mod.name}")
    todo, seen = [RowProbe], set()
    while todo:
        for sub in todo.pop().__subclasses__():
            seen.add(sub.__name__)
            todo.append(sub)
    return seen


def test_every_row_probe_is_checked(toy_model):
    assert _all_row_probes() == set(_probes(toy_model, _tokens()))


def _same(a, b):
    if isinstance(a, pd.DataFrame):
        num = a.select_dtypes("number").columns
        assert list(a.columns) == list(b.columns)
        assert (a.drop(columns=num) == b.drop(columns=num)).all().all()
        assert float((a[num] - b[num]).abs().max().max()) < 1e-6
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _same(a[k], b[k])
    else:
        assert torch.allclose(a.double(), b.double(), atol=1e-6, equal_nan=True)


@pytest.mark.parametrize("rows,window", [(1, None), (7, None), (9, 6)],
                         ids=["rows1", "rows7", "rows9-span6"])
def test_row_blocks_equal_one_block(toy_model, rows, window):
    """Feed each probe the cached pattern whole, then as blocks of ``rows`` query rows over
    the keys they can see (``[0, i1)``, or ``[i0 - window + 1, i1)``: a span that starts late,
    zero outside it since the pattern there is replaced by 0 in both feeds)."""
    x = _tokens()
    n = x.shape[1]
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in LAYERS]
    _, cache = toy_model.run_with_cache(x, names_filter=lambda name: name in names)
    pats = {layer: cache[names[k]].float() for k, layer in enumerate(LAYERS)}
    if window is not None:      # a banded pattern (rows need not sum to 1 for the contract)
        i = torch.arange(n)[:, None]
        j = torch.arange(n)[None, :]
        pats = {layer: p * ((i - j) < window) for layer, p in pats.items()}
    for name, make in _probes(toy_model, x).items():
        whole, blocks = make(), make()
        for layer in LAYERS:
            whole.reduce(layer, 0, 0, pats[layer])
            for i0 in range(0, n, rows):
                i1 = min(n, i0 + rows)
                j0 = 0 if window is None else max(0, i0 - window + 1)
                blocks.reduce(layer, i0, j0, pats[layer][:, :, i0:i1, j0:i1])
        _same(whole.finish(), blocks.finish())


def test_run_pattern_stops_after_last_probed_layer(toy_model):
    calls = []
    hooks = [(f"blocks.{layer}.hook_resid_pre", lambda x, hook: calls.append(hook.name))
             for layer in range(toy_model.cfg.n_layers)]
    seen = []
    run_pattern(toy_model, torch.randint(0, 50, (1, 30)), [0],
                lambda layer, i0, j0, p: seen.append((layer, i0, j0, tuple(p.shape))), hooks)
    assert seen == [(0, 0, 0, (1, toy_model.cfg.n_heads, 30, 30))]
    assert len(calls) == 1 and calls[0].startswith("blocks.0.")    # layer 1 never ran


@pytest.mark.parametrize("method", ["pattern", "blockwise"])
def test_reducer_error_leaves_no_hooks(toy_model, method):
    class Bad(RowProbe):
        layers = [1]

        def hooks(self):
            return [("blocks.0.attn.hook_k", lambda x, hook: None)]

        def reduce(self, layer, i0, j0, probs):
            raise KeyError("reducer failed")

        def finish(self):
            return None

    x = torch.randint(0, 50, (2, 30))
    before = toy_model(x)
    hooks_before = count_hooks(toy_model)
    with pytest.raises(KeyError, match="reducer failed"):
        run_probe(toy_model, x, Bad(), method)
    assert count_hooks(toy_model) == hooks_before
    assert torch.equal(toy_model(x), before)
