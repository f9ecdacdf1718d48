"""Progress bars and stage lines: one place that decides how long work shows itself.

Architecture
------------
- :func:`bar` returns a tqdm bar on stderr, chosen for where the output goes:

  - a **terminal**: the ordinary tqdm bar, redrawn in place;
  - **not a terminal** (a log file, a pipe, CI): the bar writes through a :class:`LineStream`,
    which turns every redraw into a line of its own -- at most one line per
    :data:`LINE_INTERVAL` seconds per bar, plus the final state -- so a log holds readable
    lines instead of carriage returns;
  - a **Jupyter kernel**: tqdm's notebook widget when ``ipywidgets`` is installed, else the
    plain text bar (never tqdm's "IProgress not found" warning).

- :func:`write` prints a stage line (``[  12.3s] sinks``). On a terminal it goes through
  ``tqdm.write`` (bars are cleared and redrawn around it); elsewhere through the same
  :class:`LineStream` as the bars, which ends any partial line first. A progress line and a
  stage line never share a line.
- **On or off.** :func:`enabled` is on unless ``INTERP_PROGRESS=0`` is set; :func:`settings`
  switches it for a block (``interp run --no-progress``, ``interp probe --no-progress``, a
  run's ranks other than 0). Library code asks :func:`bar` for a bar and gets a disabled one
  when progress is off, so probes and reports need no ``progress=`` argument threaded through.
- **Short work stays quiet.** ``delay`` (seconds) shows a bar only once the work has run that
  long; probes use :data:`PROBE_DELAY`, so a probe of a toy model prints nothing.

:func:`line_mode` installs a :class:`LineStream` as ``sys.stderr`` for a block when stderr is
not a terminal: ``interp``'s commands run inside it, so bars made by any module (tqdm direct
users included) give one line per update in a log.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import sys
import threading
import time
from typing import Any, Iterable, Iterator, TextIO, TypeVar

T = TypeVar("T")

#: seconds between two lines of the same bar when the output is not a terminal
LINE_INTERVAL = float(os.environ.get("INTERP_PROGRESS_INTERVAL", "3"))
#: probes show their per-layer bar only once they have run this long (seconds)
PROBE_DELAY = 1.0

_ENABLED: contextvars.ContextVar[bool | None] = contextvars.ContextVar("interp_progress",
                                                                     default=None)


def enabled() -> bool:
    """Whether progress bars and stage lines show: the innermost :func:`settings`, else on
    unless the environment sets ``INTERP_PROGRESS=0``."""
    value = _ENABLED.get()
    if value is not None:
        return value
    return os.environ.get("INTERP_PROGRESS", "1").strip().lower() not in ("0", "false", "no",
                                                                           "off")


@contextlib.contextmanager
def settings(enabled: bool) -> Iterator[None]:  # noqa: A002 (the setting's name)
    """Turn progress on or off inside the block (restored after)."""
    token = _ENABLED.set(bool(enabled))
    try:
        yield
    finally:
        _ENABLED.reset(token)


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is an interactive terminal (a :class:`LineStream` never is)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (a notebook, JupyterLab, VS Code)."""
    if "ipykernel" not in sys.modules:
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _has_ipywidgets() -> bool:
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


class LineStream:
    """A text stream for logs: wraps ``stream`` and turns carriage-return redraws (tqdm's way
    of updating a bar in place) into whole lines.

    - Text ending in ``"\\n"`` passes through as it is.
    - A status drawn after ``"\\r"`` becomes one line -- when :data:`LINE_INTERVAL` has passed
      since the last status line, or when the bar ends it with ``"\\n"`` (its final state);
      statuses in between are dropped, blank ones (tqdm clearing a bar) always.
    - Anything written while a status is pending (a stage line, an error) first ends the
      status line, so the two never share a line.
    """

    def __init__(self, stream: TextIO, interval: float | None = None) -> None:
        self.stream = stream
        self.interval = LINE_INTERVAL if interval is None else float(interval)
        self._pending = ""          # text of the current, unfinished line
        self._status = False        # the pending text is a bar status (drawn after "\r")
        self._last = float("-inf")  # when the last status line was written
        self._lock = threading.RLock()

    # -- the stream interface -------------------------------------------------------------
    def write(self, text: str) -> int:
        text = str(text)
        with self._lock:
            pieces = _split_keep(text, "\r\n")
            if pieces[0] and self._status:
                # new text (a stage line, an error) while a bar's status is pending: the
                # status line ends first (tqdm draws a status in one write, "\r" first)
                if self._pending.strip():
                    self._emit(self._pending)
                    self._last = time.monotonic()
                self._pending, self._status = "", False
            for piece in pieces:
                if piece == "\n":
                    self._end_line()
                elif piece == "\r":
                    self._overwritten()
                elif piece:
                    self._pending += piece
            return len(text)

    def flush(self) -> None:
        with self._lock:
            getattr(self.stream, "flush", lambda: None)()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str | None:
        return getattr(self.stream, "encoding", None)

    def close_line(self) -> None:
        """End a pending partial line (a bar's last status included) with a newline."""
        with self._lock:
            if self._pending.strip():
                self._emit(self._pending)
            self._pending, self._status = "", False

    # -- internals -------------------------------------------------------------------------
    def _emit(self, line: str) -> None:
        self.stream.write(line.rstrip() + "\n")
        getattr(self.stream, "flush", lambda: None)()

    def _end_line(self) -> None:
        if self._status:
            if self._pending.strip():          # a bar's final state (tqdm's close)
                self._emit(self._pending)
                self._last = time.monotonic()
        else:
            self.stream.write(self._pending.rstrip(" ") + "\n")
            getattr(self.stream, "flush", lambda: None)()
        self._pending, self._status = "", False

    def _overwritten(self) -> None:
        """A ``"\\r"``: the pending text is about to be drawn over."""
        if self._pending.strip():
            if not self._status:
                self._emit(self._pending)      # plain text never runs into a status
            elif time.monotonic() - self._last >= self.interval:
                self._emit(self._pending)
                self._last = time.monotonic()
        self._pending, self._status = "", True

    def __getattr__(self, name: str) -> Any:       # anything else: the wrapped stream's
        if name == "stream":
            raise AttributeError(name)
        return getattr(self.stream, name)


def _split_keep(text: str, seps: str) -> list[str]:
    out, start = [], 0
    for i, ch in enumerate(text):
        if ch in seps:
            out += [text[start:i], ch]
            start = i + 1
    out.append(text[start:])
    return out


_STREAMS: dict[int, LineStream] = {}


def line_stream(stream: TextIO | None = None) -> TextIO:
    """``stream`` (default ``sys.stderr``) as bars should write to it: itself on a terminal
    or when it already is a :class:`LineStream`, else one shared :class:`LineStream` around
    it (bars and stage lines to one stream share it, so their lines stay in order)."""
    stream = sys.stderr if stream is None else stream
    if isinstance(stream, LineStream) or is_terminal(stream) or in_notebook():
        return stream
    wrapped = _STREAMS.get(id(stream))
    if wrapped is None or wrapped.stream is not stream:
        if len(_STREAMS) > 64:                      # streams come and go (tests, captures)
            _STREAMS.clear()
        wrapped = _STREAMS[id(stream)] = LineStream(stream)
    return wrapped


@contextlib.contextmanager
def line_mode(stream_name: str = "stderr") -> Iterator[None]:
    """Inside the block, ``sys.stderr`` (or ``sys.stdout``) is a :class:`LineStream` when it is
    not a terminal, so every tqdm bar made inside writes one line per update. Restored (and
    a pending line ended) after."""
    before = getattr(sys, stream_name)
    if isinstance(before, LineStream) or is_terminal(before) or in_notebook():
        yield
        return
    wrapped = line_stream(before)
    setattr(sys, stream_name, wrapped)
    try:
        yield
    finally:
        wrapped.close_line()
        setattr(sys, stream_name, before)


def bar(iterable: Iterable[T] | None = None, desc: str | None = None,
        total: int | None = None, *, unit: str = "it", leave: bool | None = True,
        delay: float = 0.0, show: bool | None = None, file: TextIO | None = None):
    """A tqdm bar over ``iterable`` (or a manual one: ``total=`` and ``.update()``), drawn as
    the module docs say; disabled when ``show`` is False or (``show=None``) progress is off
    (:func:`enabled`).

    Args:
        leave: keep the finished bar (None: only when it is the outermost one).
        delay: show the bar only once the work has run this many seconds.
        file: where it draws (default ``sys.stderr``).
    """
    on = enabled() if show is None else bool(show)
    kw = dict(desc=desc, total=total, unit=unit, leave=leave, delay=delay, disable=not on)
    if on and in_notebook():
        if _has_ipywidgets():
            from tqdm.notebook import tqdm as notebook_tqdm

            return notebook_tqdm(iterable, **kw)
        from tqdm.std import tqdm as std_tqdm

        return std_tqdm(iterable, file=file or sys.stderr, **kw)
    from tqdm.std import tqdm as std_tqdm

    out = line_stream(file)
    if not is_terminal(out):
        kw["ascii"] = True                           # logs: no block characters
    return std_tqdm(iterable, file=out, **kw)


def write(message: str, file: TextIO | None = None, *, show: bool | None = None) -> None:
    """One stage line on ``file`` (default stderr), never on the same line as a bar; nothing
    when ``show`` is False or (``show=None``) progress is off."""
    if not (enabled() if show is None else show):
        return
    out = line_stream(file)
    if is_terminal(out):
        from tqdm.std import tqdm as std_tqdm

        std_tqdm.write(message, file=out)
        return
    if isinstance(out, LineStream):
        out.close_line()
    out.write(message + "\n")
    getattr(out, "flush", lambda: None)()


@contextlib.contextmanager
def stage(message: str, delay: float = PROBE_DELAY, *, show: bool | None = None,
          file: TextIO | None = None) -> Iterator[None]:
    """A stage line for a block that may be slow (loading a model): ``"<message> ..."`` once
    the block has run ``delay`` seconds, and ``"<message>: done in 12.3 s"`` when it ends; a
    block that ends sooner prints nothing (so a quick failure stays a one-line error)."""
    on = enabled() if show is None else bool(show)
    if not on:
        yield
        return
    t0 = time.perf_counter()
    shown = threading.Event()

    def announce() -> None:
        write(f"{message} ...", file, show=True)
        shown.set()

    timer = threading.Timer(max(0.0, delay), announce)
    timer.daemon = True
    timer.start()
    ok = False
    try:
        yield
        ok = True
    finally:
        timer.cancel()
        if shown.is_set() and ok:
            write(f"{message}: done in {time.perf_counter() - t0:.1f} s", file, show=True)
