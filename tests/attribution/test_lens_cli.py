"""``interp lens`` and the attribution figures, checked against HF (independent reference) on
a tiny llama: the printed DLA total is the model's own logit difference as HF computes it,
the lens table's last layer is HF's top token, and the figures carry the table's values."""
from __future__ import annotations

import re

import pytest
import torch

from interp.cli import main
from tests.families.tiny import build_family, load_reference


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    folder = build_family("llama", tmp_path_factory.mktemp("lens-llama"), perturb=True)
    return folder, load_reference("llama", folder)


PROMPT = "abcabcab"


def _hf_logits(folder, hf):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    ids = tok(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        return ids, hf(ids).logits[0].double(), tok


def test_lens_cli_prints_the_models_own_numbers(llama, capsys, tmp_path):
    folder, hf = llama
    ids, logits, tok = _hf_logits(folder, hf)
    html = tmp_path / "lens.html"
    assert main(["lens", "--model", str(folder), "--prompt", PROMPT, "--answer", "70",
                 "--contrast", "71", "--top", "0", "--html", str(html)]) == 0
    out = capsys.readouterr().out
    m = re.search(r"rows sum to (-?[\d.]+); the model's own value (-?[\d.]+)", out)
    want = float(logits[-1, 70] - logits[-1, 71])
    assert m and abs(float(m.group(1)) - want) < 1e-3 and abs(float(m.group(2)) - want) < 1e-3
    lines = out.splitlines()
    last = next(l for l in lines if re.match(r"\s+3\s", l))           # lens layer 3 = output
    top_id = int(logits[-1].argmax())
    rank = int((logits[-1] > logits[-1, 70]).sum())
    assert last.split()[-2] == str(rank)                              # answer_rank column
    assert f"position {ids.shape[1] - 1}" in out
    dla_rows = [l for l in lines if re.match(r"\s*(embed|L\d+H\d+|L\d+\.\w+|bias)\s", l)]
    assert len(dla_rows) == 1 + 3 * 4 + 3 + 1                         # embed, heads, mlps, bias
    page = html.read_text()
    assert "plotly" in page and "Logit lens" in page and 'src="http' not in page
    assert last.split()[1] == repr(tok.decode([top_id]))              # HF's top token


@pytest.mark.parametrize("argv, needle", [
    (["--answer", "ab"], "is 2 tokens"),
    (["--position", "40"], "outside the prompt"),
    (["--answer", "70", "--components", "L9H0"], "unknown component"),
    (["--contrast", "70"], "--contrast needs --answer"),
    (["--answer", "999"], "not a token id"),
], ids=["multi-token", "position", "component", "contrast-alone", "bad-id"])
def test_lens_cli_bad_input_is_one_line(llama, capsys, argv, needle):
    folder, _ = llama
    assert main(["lens", "--model", str(folder), "--prompt", PROMPT, *argv]) == 2
    err = capsys.readouterr()
    assert needle in err.err and err.err.count("\n") == 1, err.err
    assert err.out == ""                                   # nothing printed before the error


def test_figures_carry_the_tables(llama):
    import interp
    from interp.attribution import direct_logit_attribution, top_tokens
    from interp.attribution.view import dla_figures, lens_figure
    from interp.viz.figures import heatmap_values

    folder, hf = llama
    ids, logits, _ = _hf_logits(folder, hf)
    model = interp.load_model(folder)
    top = top_tokens(model, ids, k=1)
    fig = lens_figure(top)
    z = heatmap_values(fig)
    last = z[z.y == 3].z.to_numpy()
    want = torch.softmax(logits, -1).max(-1).values.numpy()
    assert abs(last - want).max() < 1e-5
    assert list(fig.data[0].text[3]) == [model.tokenizer.decode([int(t)])[:8]
                                         for t in logits.argmax(-1)]
    dla = direct_logit_attribution(model, ids, 70, 71)
    heads, bars = dla_figures(dla)
    hv = heatmap_values(heads)
    for r in dla[dla.component.str.match(r"^L\d+H\d+$")].itertuples():
        assert abs(float(hv[(hv.y == r.layer) & (hv.x == r.head)].z.iloc[0]) - r.value) < 1e-9
    assert list(bars.data[0].x) == [c for c in dla.component if not re.match(r"^L\d+H\d+$", c)]
