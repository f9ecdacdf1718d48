"""interp.data: pinned source archives, licence stripping, cache verification and rebuild.

A fake ``pip`` (a tiny script standing in for ``interp.models.cache.PIP_COMMAND``) copies a
tar.gz built here into the download folder, so these tests need no network; one test reads
the real Alice text when the cache has it (or PyPI can be reached)."""
from __future__ import annotations

import hashlib
import io
import sys
import tarfile
from pathlib import Path

import pytest

from interp.data import texts as T
from interp.models import cache as mcache
from interp.models.cache import CacheError

HEADER = ("The Project Gutenberg EBook of A Test, by Nobody\r\n"
          "This eBook is for the use of anyone anywhere at no cost\r\n"
          "*** START OF THIS PROJECT GUTENBERG EBOOK A TEST ***\r\n")
BODY = "\r\n  Chapter I  \r\n\r\nIt was a dark and stormy night.\r\nThe end.\r\n"
FOOTER = ("*** END OF THIS PROJECT GUTENBERG EBOOK A TEST ***\r\n"
          "Licence: redistribution is subject to the Project Gutenberg License.\r\n")
EXPECTED = "  Chapter I\n\nIt was a dark and stormy night.\nThe end.\n"
MEMBER = "fakebook-1.0/tests/book.txt"


def _make_sdist(folder: Path, raw: bytes, member: str = MEMBER) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "fakebook-1.0.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for name, data in [(member, raw), ("fakebook-1.0/setup.py", b"raise SystemExit\n")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def fake_registry(tmp_path, monkeypatch):
    """A registered text ``fakebook`` backed by a local archive and a fake pip that counts
    its calls."""
    raw = (HEADER + BODY + FOOTER).encode()
    served = _make_sdist(tmp_path / "index", raw)
    calls = tmp_path / "calls.txt"
    script = tmp_path / "fakepip.py"
    script.write_text(
        "import shutil, sys\n"
        f"open({str(calls)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
        "dest = sys.argv[sys.argv.index('-d') + 1]\n"
        f"shutil.copy({str(served)!r}, dest)\n")
    monkeypatch.setattr(mcache, "PIP_COMMAND", [sys.executable, str(script)])
    src = T.SdistText(name="fakebook", description="test", package="fakebook", version="1.0",
                      sdist_sha256=mcache.sha256_file(served), member=MEMBER,
                      member_sha256=hashlib.sha256(raw).hexdigest())
    monkeypatch.setitem(T.TEXTS, "fakebook", src)
    root = tmp_path / "cache"

    class Env:
        pass

    env = Env()
    env.src, env.root, env.served, env.calls, env.raw = src, root, served, calls, raw
    env.n_calls = lambda: len(calls.read_text().splitlines()) if calls.exists() else 0
    return env


def test_load_strips_licence_and_normalises(fake_registry):
    text = T.load_text("fakebook", root=fake_registry.root)
    assert text == EXPECTED
    assert "Gutenberg" not in text and "\r" not in text
    # pip was asked for the source archive only, without dependencies
    args = fake_registry.calls.read_text()
    assert "--no-binary :all:" in args and "--no-deps" in args and "fakebook==1.0" in args


def test_second_load_is_offline(fake_registry):
    T.load_text("fakebook", root=fake_registry.root)
    assert fake_registry.n_calls() == 1
    assert T.load_text("fakebook", root=fake_registry.root) == EXPECTED
    assert fake_registry.n_calls() == 1            # read from the verified cached copy


def test_corrupt_cached_text_is_detected_and_rebuilt(fake_registry, capsys):
    path = T.text_path("fakebook", root=fake_registry.root)
    path.write_text(EXPECTED.replace("dark", "DARK"))          # same size, other bytes
    assert T.load_text("fakebook", root=fake_registry.root) == EXPECTED
    assert "corrupt" in capsys.readouterr().err
    assert fake_registry.n_calls() == 1            # rebuilt from the cached, verified archive


def test_missing_cached_text_is_rebuilt(fake_registry, capsys):
    path = T.text_path("fakebook", root=fake_registry.root)
    path.unlink()
    assert T.load_text("fakebook", root=fake_registry.root) == EXPECTED
    assert "missing" in capsys.readouterr().err


def test_corrupt_cached_archive_is_fetched_again(fake_registry):
    T.load_text("fakebook", root=fake_registry.root)
    archive = next((fake_registry.root / "sdists").iterdir())
    archive.write_bytes(b"garbage")
    (T.text_path("fakebook", root=fake_registry.root)).unlink()
    assert T.load_text("fakebook", root=fake_registry.root) == EXPECTED
    assert fake_registry.n_calls() == 2


def test_wrong_archive_sha256_is_refused(fake_registry, monkeypatch):
    bad = T.SdistText(**{**fake_registry.src.__dict__, "sdist_sha256": "0" * 64})
    monkeypatch.setitem(T.TEXTS, "fakebook", bad)
    with pytest.raises(CacheError, match="refusing") as err:
        T.load_text("fakebook", root=fake_registry.root)
    assert "pip download --no-deps --no-binary :all: fakebook==1.0" in str(err.value)
    assert not (fake_registry.root / "texts" / "fakebook").exists()


def test_wrong_member_sha256_is_refused(fake_registry, monkeypatch):
    bad = T.SdistText(**{**fake_registry.src.__dict__, "member_sha256": "1" * 64})
    monkeypatch.setitem(T.TEXTS, "fakebook", bad)
    with pytest.raises(CacheError, match="expected 1111"):
        T.load_text("fakebook", root=fake_registry.root)


def test_missing_member_is_reported(fake_registry, monkeypatch):
    bad = T.SdistText(**{**fake_registry.src.__dict__, "member": "fakebook-1.0/nope.txt"})
    monkeypatch.setitem(T.TEXTS, "fakebook", bad)
    with pytest.raises(CacheError, match="no member 'fakebook-1.0/nope.txt'"):
        T.load_text("fakebook", root=fake_registry.root)


def test_pip_failure_says_how_to_fill_the_cache(fake_registry, monkeypatch, tmp_path):
    monkeypatch.setattr(mcache, "PIP_COMMAND", [sys.executable, "-c",
                                                "import sys; sys.exit('no network')"])
    with pytest.raises(CacheError, match="failed") as err:
        T.load_text("fakebook", root=tmp_path / "empty")
    assert "no network" in str(err.value) and "copy the archive into" in str(err.value)


def test_unknown_name_suggests():
    with pytest.raises(ValueError, match="Did you mean 'alice'"):
        T.load_text("alise")


def test_strip_licence_leaves_plain_text_alone():
    plain = "Just a text.\n*** not a marker ***\n"
    assert T.strip_licence(plain) == plain
    assert T.strip_licence(HEADER.replace("\r\n", "\n") + "body\n") == "body\n"


def test_stdlib_fallback_is_long_prose():
    text = T.load_text("pydoc-topics")
    assert len(text) > 100_000 and "\r" not in text


def test_real_alice_text(tmp_path):
    try:
        text = T.load_text("alice")
    except CacheError as exc:
        pytest.skip(f"brotli 1.2.1 source archive not available: {exc}")
    assert text.lstrip().startswith("ALICE'S ADVENTURES IN WONDERLAND")
    assert text.rstrip().endswith("THE END")
    assert "\r" not in text and 140_000 < len(text) < 160_000
    cached = T.text_path("alice")
    assert mcache.verify_manifest(cached.parent) is None


def test_stale_format_is_rebuilt(fake_registry, capsys):
    path = T.text_path("fakebook", root=fake_registry.root)
    import json

    man = path.parent / mcache.MANIFEST
    data = json.loads(man.read_text())
    data["format"] = 1
    man.write_text(json.dumps(data))
    assert T.load_text("fakebook", root=fake_registry.root) == EXPECTED
    assert "format 1" in capsys.readouterr().err
    assert json.loads(man.read_text())["format"] == T.TEXT_FORMAT


def test_normalize_drops_dos_eof_mark():
    assert T.normalize_text(b"a \r\nTHE END\r\n\x1a") == "a\nTHE END\n"
