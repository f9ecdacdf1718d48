"""GGUF causal LM -> float safetensors checkpoint, one tensor at a time.

``transformers``' own GGUF loader (``from_pretrained(dir, gguf_file=...)``) dequantizes every
tensor of the file into one in-memory state dict before the model takes it, so converting a
1.5B model that way holds more than one float copy at its peak (9.0 GB for a 6.2 GB float32
model). :func:`convert_gguf_streaming` writes the same values with about one tensor in
memory at a time:

    GGUF (memory-mapped; tensor table read by transformers' ``GgufHeader``)
      -> for each tensor: ``gguf.dequantize`` (float32 numpy, the shape HF expects)
         -> the architecture's own transformers ``TensorProcessor`` (e.g. Llama's q/k
            un-permutation) -> the HF parameter name (transformers'
            ``get_gguf_hf_weights_map`` on a model built on the ``meta`` device)
         -> cast to ``dtype`` -> appended to ``model.safetensors``

The safetensors header (name, dtype, shape and byte range of every tensor) is known before
any data is written: names come from the map, shapes from the meta model, so the file is
written in one pass. Each tensor is checked against the shape the meta model expects, and
every parameter the model needs (tied weights aside) must come from the file. The values
are the ones transformers' loader produces (same dequantizer, same processor, same cast), so
a model read back from this folder equals ``from_pretrained(dir, gguf_file=...)`` (tested on
the Qwen2.5-Coder models).

The tokenizer and config are converted by transformers (``AutoTokenizer`` /
``AutoConfig`` with ``gguf_file=``) and saved beside the weights.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Callable, NamedTuple

from interp.errors import CacheError

#: safetensors dtype names of the torch dtypes a copy can be written in
SAFETENSORS_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}


def _dtype_name(dtype) -> str:
    name = str(dtype).removeprefix("torch.")
    if name not in SAFETENSORS_DTYPES:
        raise CacheError(f"a converted copy can be float32, float16 or bfloat16, not {name}")
    return name


def safetensors_header(entries: list[tuple[str, str, tuple[int, ...]]],
                       metadata: dict[str, str] | None = None) -> tuple[bytes, list[int]]:
    """The bytes that start a safetensors file holding ``entries`` in order, and the byte
    size of each tensor's data.

    Args:
        entries: ``(name, dtype name, shape)`` per tensor, dtype name one of
            :data:`SAFETENSORS_DTYPES`' keys.
        metadata: string metadata (``__metadata__``).

    Returns:
        ``(8-byte little-endian header length + JSON header padded with spaces to a multiple
        of 8, [data bytes of each entry])``; the data follow the header in the same order.
    """
    import math

    header: dict = {"__metadata__": dict(metadata or {"format": "pt"})}
    sizes, offset = [], 0
    for name, dtype, shape in entries:
        n = math.prod(shape) * (4 if dtype == "float32" else 2)
        header[name] = {"dtype": SAFETENSORS_DTYPES[dtype], "shape": list(shape),
                        "data_offsets": [offset, offset + n]}
        sizes.append(n)
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw, sizes


#: byte width of GGUF metadata value types with a fixed width (8 string, 9 array: variable)
_KV_WIDTH = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


class GgufTensorInfo(NamedTuple):
    """One tensor of a GGUF file: ``shape`` in torch order (slowest dimension first),
    ``ggml_type`` (``gguf.GGMLQuantizationType`` value), ``start`` (absolute byte offset of
    its data in the file) and ``nbytes``."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    start: int
    nbytes: int


def read_tensor_table(path: Path) -> tuple[str, list[GgufTensorInfo]]:
    """``(general.architecture, tensors in file order)`` of a GGUF (v2/v3) file, reading only
    the header: metadata values are skipped (a tokenizer's string arrays included), so this
    takes well under a second where ``gguf.GGUFReader`` parses them all.

    Raises:
        CacheError: not a GGUF file, or a version this reader does not know.
    """
    import numpy as np
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    with open(path, "rb") as fh:
        blob = fh.read(64 << 20)               # metadata + tensor table: a few MB at most
    if blob[:4] != b"GGUF":
        raise CacheError(f"{path} is not a GGUF file (no GGUF magic bytes)")
    version, n_tensors, n_kv = struct.unpack_from("<IQQ", blob, 4)
    if version not in (2, 3):
        raise CacheError(f"{path}: GGUF version {version} is not supported (2 or 3)")
    pos, arch, alignment = 24, None, 32

    def string(at: int) -> tuple[str, int]:
        (n,) = struct.unpack_from("<Q", blob, at)
        return blob[at + 8:at + 8 + n].decode("utf-8", "replace"), at + 8 + n

    def skip(at: int, vtype: int) -> int:
        if vtype in _KV_WIDTH:
            return at + _KV_WIDTH[vtype]
        if vtype == 8:
            return at + 8 + struct.unpack_from("<Q", blob, at)[0]
        if vtype == 9:
            etype, count = struct.unpack_from("<IQ", blob, at)
            at += 12
            if etype in _KV_WIDTH:
                return at + count * _KV_WIDTH[etype]
            for _ in range(count):
                at = skip(at, etype)
            return at
        raise CacheError(f"{path}: unknown GGUF metadata type {vtype}")

    for _ in range(n_kv):
        key, pos = string(pos)
        (vtype,) = struct.unpack_from("<I", blob, pos)
        pos += 4
        if key == "general.architecture" and vtype == 8:
            arch, _ = string(pos)
        elif key == "general.alignment" and vtype == 4:
            (alignment,) = struct.unpack_from("<I", blob, pos)
        pos = skip(pos, vtype)
    table = []
    for _ in range(n_tensors):
        name, pos = string(pos)
        (ndim,) = struct.unpack_from("<I", blob, pos)
        dims = struct.unpack_from(f"<{ndim}Q", blob, pos + 4)
        ggml_type, offset = struct.unpack_from("<IQ", blob, pos + 4 + 8 * ndim)
        pos += 4 + 8 * ndim + 12
        block, type_bytes = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
        table.append((name, tuple(reversed(dims)), ggml_type, offset,
                      int(np.prod(dims)) // block * type_bytes))
    data_start = (pos + alignment - 1) // alignment * alignment
    return arch, [GgufTensorInfo(n, shape, t, data_start + off, nb)
                  for n, shape, t, off, nb in table]


def _meta_model(config):
    """The causal LM of ``config`` on the meta device (no memory for weights)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def _tied_names(model) -> set[str]:
    """Parameter names that share storage with an earlier parameter (tied embeddings):
    save_pretrained leaves them out and from_pretrained ties them again."""
    seen, tied = set(), set()
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            tied.add(name)
        seen.add(id(p))
    return tied


def convert_gguf_streaming(src: Path, gguf_name: str, out: Path, dtype="float32",
                           progress: Callable[[int, int], None] | None = None) -> None:
    """Write ``out/model.safetensors`` (in ``dtype``), ``config.json`` and the tokenizer
    files for the causal LM in ``src / gguf_name``, dequantizing one tensor at a time.

    Args:
        src: folder holding the GGUF file.
        gguf_name: its file name.
        out: an existing, empty folder.
        dtype: ``"float32"`` (default), ``"bfloat16"`` or ``"float16"`` (or the torch dtype).
        progress: called as ``progress(done, total)`` after each tensor.

    Raises:
        CacheError: the file's architecture has a GGUF processor that renames or reshapes
            tensors (not supported here), a tensor has another shape than the model
            expects, or a parameter the model needs is not in the file.
    """
    import numpy as np
    import torch
    from gguf import GGMLQuantizationType, dequantize
    from gguf.quants import quant_shape_to_byte_shape
    from transformers import AutoConfig
    from transformers.modeling_gguf_pytorch_utils import (
        TENSOR_PROCESSORS,
        LlamaTensorProcessor,
        TensorProcessor,
        get_gguf_hf_weights_map,
    )

    name = _dtype_name(dtype)
    torch_dtype = getattr(torch, name)
    path = Path(src) / gguf_name
    config = AutoConfig.from_pretrained(src, gguf_file=gguf_name)
    arch, table = read_tensor_table(path)
    proc_cls = TENSOR_PROCESSORS.get(arch, TensorProcessor)
    if proc_cls not in (TensorProcessor, LlamaTensorProcessor):
        raise CacheError(f"streaming GGUF conversion does not handle architecture {arch!r} "
                         f"({proc_cls.__name__} may rename or split tensors)")
    processor = proc_cls(config=config.to_dict())
    meta = _meta_model(config)
    key_map = get_gguf_hf_weights_map(meta, processor)
    shapes = {k: tuple(v.shape) for k, v in meta.state_dict().items()}
    wanted = [(t, key_map[t.name]) for t in table if t.name in key_map]
    missing = set(shapes) - {hf for _, hf in wanted} - _tied_names(meta)
    if missing:
        raise CacheError(f"{gguf_name}: the model needs {sorted(missing)[:5]} "
                         f"({len(missing)} tensors) that the file does not hold")
    entries = [(hf, name, shapes[hf]) for _, hf in wanted]
    head, sizes = safetensors_header(entries)
    blob = np.memmap(path, mode="r")
    with open(out / "model.safetensors", "wb") as fh:
        fh.write(head)
        for i, ((info, hf), size) in enumerate(zip(wanted, sizes)):
            qtype = GGMLQuantizationType(info.ggml_type)
            raw = blob[info.start:info.start + info.nbytes].reshape(
                quant_shape_to_byte_shape(info.shape, qtype))      # [..., bytes per row]
            weights = dequantize(raw, qtype)                       # float32, info.shape
            result = processor.process(weights=weights, name=info.name,
                                       tensor_key_mapping=key_map, parsed_parameters={})
            if result.name != info.name or tuple(result.weights.shape) != shapes[hf]:
                raise CacheError(f"{gguf_name}: tensor {info.name} -> {hf} has shape "
                                 f"{tuple(result.weights.shape)}, the model expects "
                                 f"{shapes[hf]}")
            t = torch.from_numpy(np.ascontiguousarray(result.weights, dtype=np.float32))
            t = t.to(torch_dtype)
            data = t.reshape(-1).view(torch.uint8).numpy()        # the bytes, no copy
            if data.nbytes != size:
                raise CacheError(f"{hf}: {data.nbytes} bytes of data, the header says {size}")
            fh.write(memoryview(data))
            del raw, weights, result, t, data
            if progress:
                progress(i + 1, len(wanted))
    del blob
    config.dtype = torch_dtype
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(out)
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(src, gguf_file=gguf_name).save_pretrained(out)
