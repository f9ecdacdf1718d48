"""Attention views: inline circuitsvis bundle, no CDN, the heads/window asked for, limits."""
from __future__ import annotations

import json
import re

import pytest
import torch

from interp.hooks import attach
from interp.probes.patterns import attention_view
from interp.viz import View, has_cdn_script
from interp.viz.html import circuitsvis_js, json_for_script, page, script_safe


def _props(html: str) -> dict:
    m = re.search(r"CircuitsVis\.render\(\"[^\"]+\", CircuitsVis\.AttentionHeads, (.*)\);", html)
    assert m, "no AttentionHeads render call"
    return json.loads(m.group(1))


def _toy_tokens(n=24):
    return torch.randint(0, 50, (1, n))


def test_saved_view_is_standalone(toy_model, tmp_path):
    view = attention_view(toy_model, _toy_tokens())
    path = view.save(tmp_path / "view.html")
    text = path.read_text()
    assert text.startswith("<!DOCTYPE html>")
    assert circuitsvis_js()[:2000] in text                  # the bundle, inline
    assert text.count("var CircuitsVis=") == 1
    assert '<script src="http' not in text and not has_cdn_script(text)
    assert "unpkg.com" not in text and "sourceMappingURL" not in text
    # a properly closed mount point (upstream writes <div .../>, which HTML leaves open)
    assert re.search(r'<div id="circuits-vis-[0-9a-f]+"[^>]*></div>', text)


def test_repr_html_is_inline_and_offline(toy_model, monkeypatch):
    import urllib.request

    def no_network(*a, **k):
        raise AssertionError("a view must not touch the network")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    html = attention_view(toy_model, _toy_tokens(), layers=[1], heads=[0])._repr_html_()
    assert "var CircuitsVis=" in html and not has_cdn_script(html)


def test_view_shows_chosen_heads_and_window(toy_model):
    toks = _toy_tokens(30)
    view = attention_view(toy_model, toks, heads=[(1, 2), (0, 3)], token_window=(5, 15))
    props = _props(view.body)
    assert props["attentionHeadNames"] == ["L1H2", "L0H3"]
    att = torch.tensor(props["attention"])
    assert att.shape == (2, 10, 10)
    assert props["tokens"] == [str(int(t)) for t in toks[0, 5:15]]
    assert props["maskUpperTri"] is True
    # the values are the model's pattern (rounded to 4 decimals)
    seen = {}
    with attach(toy_model, [("blocks.1.attn.hook_pattern",
                             lambda p, hook: seen.setdefault("p", p.detach()))]):
        toy_model(toks)
    ref = seen["p"][0, 2, 5:15, 5:15]
    assert torch.allclose(att[0], ref, atol=1e-4)


def test_first_n_window_is_the_truncated_prompt(toy_model):
    toks = _toy_tokens(30)
    full = torch.tensor(_props(attention_view(toy_model, toks[:, :12], layers=[0]).body)
                        ["attention"])
    win = torch.tensor(_props(attention_view(toy_model, toks, layers=[0], token_window=12).body)
                       ["attention"])
    assert torch.allclose(full, win, atol=1e-4)      # causal: same patterns
    assert torch.allclose(win.sum(-1), torch.ones(win.shape[:2]), atol=1e-3)


def test_view_limits_and_errors(toy_model):
    with pytest.raises(ValueError, match="token window"):
        attention_view(toy_model, _toy_tokens(40), max_cells=1000)
    with pytest.raises(ValueError, match="does not exist"):
        attention_view(toy_model, _toy_tokens(), heads=[(5, 0)])
    with pytest.raises(ValueError, match="token_window"):
        attention_view(toy_model, _toy_tokens(10), token_window=(4, 40))
    with pytest.raises(ValueError, match="one prompt"):
        attention_view(toy_model, torch.randint(0, 50, (2, 8)))


def test_text_prompt_on_pretrained(smollm2, tmp_path):
    view = attention_view(smollm2, "The cat sat on the mat. The cat sat on the mat.",
                          layers=[18], heads=[6])
    props = _props(view.body)
    assert props["tokens"][0] == smollm2.tokenizer.bos_token
    assert "".join(props["tokens"][1:]) == "The cat sat on the mat. The cat sat on the mat."
    text = view.save(tmp_path / "v.html").read_text()
    assert not has_cdn_script(text) and "var CircuitsVis=" in text


def test_script_escaping():
    evil = {"tokens": ["</script><script>alert(1)</script>", "<!--", "\u2028"]}
    text = json_for_script(evil)
    assert "</" not in text and "<!--" not in text and json.loads(text) == evil
    assert "</script" not in script_safe("a = '</script>'; //# sourceMappingURL=x.map")
    assert "sourceMappingURL" not in script_safe("x\n//# sourceMappingURL=iife.js.map\n")


def test_view_needs_only_known_bundles():
    with pytest.raises(ValueError, match="unknown JS bundle"):
        page("t", "", needs={"d3"})
    assert "var CircuitsVis=" not in View("<p>hi</p>").page()
