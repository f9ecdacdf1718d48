"""The docstring task (interp/circuits/docstring.py; Heimersheim & Janiak 2023).

On SmolLM2-135M's tokenizer (and model): every row parses back, with Python's own ``ast``, into a
function whose parameters are the names the task says, and whose docstring documents the
first ``shown`` of them in order; clean and corrupted differ exactly at the definition's names;
the metric equals a loop over the logits written here with the ids read back from the row's
text; SmolLM2 does the task (clean metric clearly above corrupted). Refusals: a tokenizer with
no one-token names (the tiny byte-level families), bad arguments.

Measured here (CPU, n=16, seed 0): SmolLM2-135M clean 3.90, corrupted -3.03.
"""
from __future__ import annotations

import ast

import pytest
import torch

import interp
from interp.circuits import docstring_task
from interp.circuits.docstring import DOCSTRING_NAMES
from interp.circuits.standard_tasks import task_baseline
from interp.errors import InputError, Refused

N = 16


@pytest.fixture(scope="module")
def smol_doc(smollm2):
    return docstring_task(smollm2, n=N, seed=0)


def _parse(text: str):
    """(def parameter names, documented names) of a row's text, completed into valid Python
    so ``ast`` can read it (independent of how the task built it)."""
    body = text.split("def ", 1)[1]
    code = "def " + body + ' x: y\n    """\n'
    fn = ast.parse(code).body[0]
    params = [a.arg for a in fn.args.args][1:]                 # without self
    doc = ast.get_docstring(fn)
    documented = [line.split(":param ")[1].split(":")[0] for line in doc.splitlines()
                  if line.startswith(":param ") and not line.startswith(":param x")]
    return params, documented


def test_rows_parse_as_python_with_the_due_parameter(smollm2, smol_doc):
    tok, info = smollm2.tokenizer, smol_doc.info
    assert smol_doc.clean.shape == smol_doc.corrupted.shape == (N, smol_doc.clean.shape[1])
    assert info["answer_position"] == smol_doc.clean.shape[1] - 1
    for b in range(N):
        params, documented = _parse(tok.decode(smol_doc.clean[b]))
        assert len(params) == info["n_params"] == 4 and len(set(params)) == 4
        assert documented == params[:info["shown"]]
        due = params[info["shown"]]
        assert tok(" " + due, add_special_tokens=False).input_ids == [info["answer"][b]]
        rest = [p for p in params if p != due]
        assert [tok(" " + p, add_special_tokens=False).input_ids[0] for p in rest] == \
            info["others"][b]
        # corrupted: other names in the definition, the same docstring
        c_params, c_documented = _parse(tok.decode(smol_doc.corrupted[b]))
        assert c_documented == documented and not set(c_params) & set(params)
        diff = torch.nonzero(smol_doc.clean[b] != smol_doc.corrupted[b]).flatten().tolist()
        assert diff == info["param_pos"]
        assert [tok.decode(smol_doc.clean[b, p]).strip() for p in diff] == params
    for word, tid in info["names"].items():
        assert word in DOCSTRING_NAMES
        assert tok(" " + word, add_special_tokens=False).input_ids == [tid]


def test_metric_equals_loop(smol_doc):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(N, smol_doc.clean.shape[1], 49152, generator=g, requires_grad=True)
    got = smol_doc.metric(logits)
    want = 0.0
    for b in range(N):
        row = logits[b, -1].detach()
        want += float(row[smol_doc.info["answer"][b]]
                      - max(row[o] for o in smol_doc.info["others"][b]))
    assert got.item() == pytest.approx(want / N, abs=1e-5)
    got.backward()                                            # differentiable
    assert logits.grad[:, -1].abs().sum() > 0 and logits.grad[:, :-1].abs().sum() == 0


def test_smollm2_does_the_task(smollm2, smol_doc):
    base = task_baseline(smollm2, smol_doc)
    assert base["clean"] > 2.0 and base["corrupted"] < 0.0     # measured 3.90 / -3.03


def test_seeds_and_arguments(smollm2, smol_doc):
    again = docstring_task(smollm2, n=N, seed=0)
    assert torch.equal(again.clean, smol_doc.clean)
    assert not torch.equal(docstring_task(smollm2, n=N, seed=1).clean, smol_doc.clean)
    five = docstring_task(smollm2, n=4, seed=0, n_params=5, shown=3)
    params, documented = _parse(smollm2.tokenizer.decode(five.clean[0]))
    assert len(params) == 5 and documented == params[:3]
    for bad in ({"n": 0}, {"shown": 0}, {"n_params": 2}, {"n_params": 4, "shown": 3}):
        with pytest.raises(InputError):
            docstring_task(smollm2, **bad)


def test_byte_level_tokenizer_refused(family_dir):
    """The tiny families' byte tokenizer has no one-token names."""
    model = interp.load_model(str(family_dir("llama")))
    with pytest.raises(Refused, match="one token"):
        docstring_task(model, n=2)
