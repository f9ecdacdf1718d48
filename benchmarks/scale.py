"""How interp scales from SmolLM2-135M to Qwen2.5-Coder-1.5B (issue #27): one table, one row
per (model, dtype).

Columns:
  params           parameters of the HF model (tied embeddings counted once)
  first_load_s     interp.load_model in a fresh interpreter and an empty cache whose wheels
                   folder links the real cache's wheels (assembly, hash check, conversion; no
                   download); bfloat16 rows: the cast of the cached float32 copy
  cached_load_s    the same load again (the verified copy; imports timed apart and excluded)
  load_rss_gb      peak RSS of that process after the cached load and one 1k-token forward
                   (the weights are memory-mapped: RSS counts them once they are read)
  first_rss_gb     peak RSS of the first-load process
  weights_gb       bytes of the parameters in this dtype
  fwd_1k_s         one forward over [1, 1024] tokens (no grad; best of 2)
  induction_x      induction_scores (8 x 2 x 50 repeated random tokens, + copying scores)
  sink8k_x         sink_scores at 8192 tokens (blockwise), positions 0 and 1
  patch_x          patch_heads (every head, hook_z, all positions) on induction_task(2, 10)
  eap_x            edge_attribution (EAP) on the same task
  *_x = the instrument's seconds / the seconds of one plain forward over the same tokens
  (for the sink probe: fwd_1k_s x 8, the forward extrapolated linearly: an eager 8k forward
  would hold each layer's full pattern).

Each row runs in its own subprocesses and is written to ``--out`` (JSON, one object per row,
replaced atomically after each row); a rerun skips rows already there (``--redo`` not).

    python benchmarks/scale.py                          # all four models, float32 + bfloat16
    python benchmarks/scale.py --models qwen2.5-coder-0.5b --dtypes float32 --skip sink8k
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

MODELS = ("smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")
INSTRUMENTS = ("induction", "sink8k", "patch", "eap")

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import torch, interp, transformers, transformer_lens.model_bridge
from interp.probes.induction import induction_scores
from interp.probes.sink import sink_scores
from interp.circuits.activation import patch_heads
from interp.circuits.attribution import edge_attribution
from interp.circuits.tasks import induction_task
name, dtype, what = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
out = {"import_s": time.perf_counter() - t0}
t = time.perf_counter()
model = interp.load_model(name, dtype=dtype)
out["load_s"] = time.perf_counter() - t
hf = model.original_model
out["params"] = sum(p.numel() for p in hf.parameters())
out["weights_gb"] = sum(p.numel() * p.element_size() for p in hf.parameters()) / 1e9
def timed(fn, *a, **k):
    t = time.perf_counter(); r = fn(*a, **k); return r, time.perf_counter() - t
def fwd(tokens):
    with torch.no_grad():
        return min(timed(model, tokens)[1] for _ in range(2))
if "forward" in what:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(100, 5000, (1, 1024), generator=g)
    out["fwd_1k_s"] = fwd(ids)
out["load_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
if "induction" in what:
    from interp.probes.induction import repeated_random_tokens
    toks = repeated_random_tokens(model, batch=8, seg_len=50, n_repeats=2, seed=0)
    df, s = timed(induction_scores, model, toks, seg_len=50)
    out["induction_x"] = s / fwd(toks)
    top = df.nlargest(3, "induction")
    out["top_induction"] = [f"L{int(r.layer)}H{int(r.head)} {r.induction:.3f}"
                            for r in top.itertuples()]
if "sink8k" in what:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(100, 5000, (1, 8192), generator=g)
    ids[0, 0] = model.tokenizer.bos_token_id or ids[0, 0]
    df, s = timed(sink_scores, model, ids, positions=[0, 1])
    out["sink8k_x"] = s / (8 * out["fwd_1k_s"])
    top = df[df.position == 0].nlargest(3, "alpha")
    out["top_sink"] = [f"L{int(r.layer)}H{int(r.head)} {r.alpha:.3f}" for r in top.itertuples()]
    out["sink_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
if "patch" in what or "eap" in what:
    task = induction_task(model, batch=2, seg_len=10)
    base = fwd(task.clean)
    if "patch" in what:
        out["patch_x"] = timed(patch_heads, model, task, progress=False)[1] / base
    if "eap" in what:
        out["eap_x"] = timed(edge_attribution, model, task)[1] / base
out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
print("RESULT " + json.dumps(out))
"""


def child(name: str, dtype: str, what: str, env: dict | None = None) -> dict:
    """Run :data:`CHILD` in a fresh interpreter; its result dict."""
    proc = subprocess.run([sys.executable, "-c", CHILD, name, dtype, what],
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
                          capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"{name} {dtype} ({what}) failed:\n{proc.stderr[-3000:]}")


def first_load(name: str, dtype: str) -> dict:
    """Load time and peak RSS with an empty cache whose wheels come from the real cache (no
    download). For a half dtype the float32 copy is built first, untimed, and the row times
    the cast from it."""
    from interp.models.cache import cache_dir

    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        (Path(tmp) / "wheels").symlink_to(cache_dir() / "wheels")
        env = {"INTERP_CACHE": tmp}
        if dtype != "float32":
            child(name, "float32", "", env)
        return child(name, dtype, "", env)


def save(rows: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows, indent=1))
    os.replace(tmp, path)


COLUMNS = ("params", "first_load_s", "cached_load_s", "first_rss_gb", "load_rss_gb",
           "weights_gb", "fwd_1k_s", "induction_x", "sink8k_x", "patch_x", "eap_x")


def table(rows: dict) -> str:
    head = f"{'model':20s} {'dtype':9s} " + " ".join(f"{c:>13s}" for c in COLUMNS)
    lines = [head]
    for key, r in rows.items():
        name, dtype = key.split("|")
        cells = []
        for c in COLUMNS:
            v = r.get(c)
            cells.append(f"{'-':>13s}" if v is None else f"{v:13,d}" if isinstance(v, int)
                         else f"{v:13.2f}")
        lines.append(f"{name:20s} {dtype:9s} " + " ".join(cells))
    for key, r in rows.items():
        if "top_induction" in r or "top_sink" in r:
            lines.append(f"{key}: induction {r.get('top_induction')}, sink (alpha at "
                         f"position 0, 8k) {r.get('top_sink')}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="*", default=list(MODELS))
    p.add_argument("--dtypes", nargs="*", default=["float32", "bfloat16"])
    p.add_argument("--skip", nargs="*", default=[], choices=[*INSTRUMENTS, "first"])
    p.add_argument("--out", type=Path, default=Path("results/scale/rows.json"))
    p.add_argument("--redo", action="store_true", help="rerun rows already in --out")
    args = p.parse_args()
    rows = json.loads(args.out.read_text()) if args.out.is_file() and not args.redo else {}
    for name in args.models:
        for dtype in args.dtypes:
            key = f"{name}|{dtype}"
            if key in rows:
                continue
            row = {}
            if "first" not in args.skip:
                first = first_load(name, dtype)
                row.update(first_load_s=first["load_s"], first_rss_gb=first["peak_rss_gb"])
            what = ",".join(["forward", *(i for i in INSTRUMENTS if i not in args.skip)])
            res = child(name, dtype, what)
            res["cached_load_s"] = res.pop("load_s")
            row.update(res)
            rows[key] = row
            save(rows, args.out)
            print(table({key: row}).splitlines()[1], flush=True)
    print(table(rows))


if __name__ == "__main__":
    main()
