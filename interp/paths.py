"""Checks of the files a command reads and writes, done before any model loads, and one
wording for file errors.

Every message names the path the user gave (never a temporary file) and a short reason
(never a raw ``[Errno 13]`` tuple)::

    cannot read text file notes.txt: not found (no such file or folder)
    cannot write results to /proc/t.csv: permission denied

:class:`PathError` is an :class:`~interp.errors.InputError` (a ``ValueError``), so the CLI
prints it as one line with exit status 2 like any other bad input; :class:`MissingPath` (a
file or checkpoint folder the user named does not exist) is also a ``FileNotFoundError``, so
library callers that catch that keep working. The CLI catches no builtin ``OSError``: every
path it reads or writes goes through these checks first.
"""
from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from interp.errors import InputError

__all__ = ["PathError", "MissingPath", "check_input_file", "check_output_path", "check_output_dir",
           "file_error", "read_text_file"]


class PathError(InputError):
    """A path the user gave cannot be read or written; the message says which and why."""


class MissingPath(PathError, FileNotFoundError):
    """A file or folder the user named does not exist (also a ``FileNotFoundError``; the
    message names the path and what to do)."""


_REASONS = {
    errno.ENOENT: "not found (no such file or folder)",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EISDIR: "is a directory",
    errno.ENOTDIR: "a parent of it is a file, not a folder",
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.ENAMETOOLONG: "name too long",
    errno.EEXIST: "already exists",
}


def _reason(exc: BaseException) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return (f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                f"save it as UTF-8")
    if isinstance(exc, OSError):
        if exc.errno in _REASONS:
            return _REASONS[exc.errno]
        if exc.strerror:
            return exc.strerror[0].lower() + exc.strerror[1:]
    return str(exc) or type(exc).__name__


def file_error(path: str | os.PathLike, exc: BaseException | str, what: str = "file",
               write: bool = False) -> str:
    """The one wording of a file error: ``cannot read <what> <path>: <reason>`` or
    ``cannot write <what> to <path>: <reason>``. ``exc`` is the exception (its errno picks
    the reason; its own file name, maybe a temporary one, is not shown) or a reason."""
    reason = exc if isinstance(exc, str) else _reason(exc)
    if write:
        return f"cannot write {what} to {path}: {reason}"
    return f"cannot read {what} {path}: {reason}"


def check_input_file(path: str | os.PathLike, what: str = "file", text: bool = True) -> Path:
    """``path`` exists, is a file and can be read (and, with ``text``, is UTF-8). Returns it
    as a :class:`~pathlib.Path`; raises :class:`PathError` otherwise (:class:`MissingPath`
    when it does not exist)."""
    p = Path(path)
    try:
        if p.is_dir():
            raise PathError(file_error(path, "is a directory, not a file", what))
        with open(p, "rb") as fh:
            if text:
                # decode incrementally: a multi-byte character split across chunks is fine
                import codecs

                dec = codecs.getincrementaldecoder("utf-8")()
                offset = 0
                while chunk := fh.read(1 << 20):
                    try:
                        dec.decode(chunk)
                    except UnicodeDecodeError as exc:
                        exc.start += offset
                        raise
                    offset += len(chunk)
                dec.decode(b"", final=True)
    except PathError:
        raise
    except (OSError, UnicodeDecodeError) as exc:
        error = MissingPath if isinstance(exc, FileNotFoundError) else PathError
        raise error(file_error(path, exc, what)) from None
    return p


def read_text_file(path: str | os.PathLike, what: str = "file") -> str:
    """The text of a UTF-8 file (a BOM dropped), with :func:`file_error` wording on failure."""
    p = check_input_file(path, what, text=False)
    try:
        return p.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise PathError(file_error(path, exc, what)) from None


def _nearest_existing(p: Path) -> Path:
    q = p.absolute()
    while not q.exists() and q != q.parent:
        # a parent that exists as a file (or a dangling link) ends the walk too
        if os.path.lexists(q):
            break
        q = q.parent
    return q


def _probe_writable(folder: Path, path, what: str) -> None:
    """Create and remove a temporary file in ``folder`` (the only reliable test: ``os.access``
    says yes to root even on ``/proc``)."""
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".interp-check.", suffix=".tmp")
    except OSError as exc:
        # the folder exists, so "not found" here means it takes no new files (/proc)
        why = "permission denied" if exc.errno == errno.ENOENT else exc
        raise PathError(file_error(path, why, what, write=True)) from None
    os.close(fd)
    try:
        os.unlink(tmp)
    except OSError:
        pass


def _check_folder_chain(p: Path, path, what: str) -> Path:
    """The nearest existing ancestor of ``p`` must be a folder we can create files in (the
    missing folders below it are created at write time)."""
    base = _nearest_existing(p)
    if not base.is_dir():
        raise PathError(file_error(path, f"{base} is a file, not a folder", what, write=True))
    _probe_writable(base, path, what)
    return base


def check_output_path(path: str | os.PathLike, what: str = "output") -> Path:
    """``path`` can be written as a file: it is not a folder, and its folder exists (or can be
    created) and accepts new files. Nothing is created. Raises :class:`PathError`."""
    p = Path(path)
    if str(path) == "" or p.name in ("", ".", ".."):
        raise PathError(file_error(path, "not a file name", what, write=True))
    if p.is_dir():
        raise PathError(file_error(path, "is a directory", what, write=True))
    _check_folder_chain(p.parent, path, what)
    return p


def check_output_dir(path: str | os.PathLike, what: str = "output") -> Path:
    """``path`` is (or can be created as) a folder that accepts new files. Raises
    :class:`PathError`."""
    p = Path(path)
    if str(path) == "":
        raise PathError(file_error(path, "not a folder name", what, write=True))
    if p.exists() and not p.is_dir():
        raise PathError(file_error(path, "is a file, not a folder", what, write=True))
    _check_folder_chain(p, path, what)
    return p
