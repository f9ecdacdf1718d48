"""Attribution patching vs activation patching on one induction task, measured in one run.
Single-threaded (``torch.set_num_threads(1)``; run with ``OMP_NUM_THREADS=1``). Times are wall
clock of one call each (after one warm-up EAP call); nothing is asserted.

Printed lines, one figure each:

1. ``<model> (<n> heads, batch, seg_len, 1 thread): ...`` (the original line): time of EAP
   node attribution (``node_attribution``: clean forward + corrupted forward + one backward)
   and of per-head activation patching over all layers (``patch_heads``, denoise, ``hook_z``),
   their ratio, and how well the EAP scores rank the real per-head patching effects
   (``patch_heads`` metric minus the corrupted metric): Spearman rho and Pearson r.
2. ``EAP-IG (<ig_on>, <S> steps): ...`` one line per run of ``node_attribution(method=
   "eap-ig")`` (``ig_on="inputs"`` at each of ``--ig-steps``; ``ig_on="activations"`` at
   ``--ig-activations-steps``): its time (attribution cache included, as for EAP), its
   Spearman rho / Pearson r against the same patching effects, and EAP's rho beside it.
3. ``by position <c> (...)``: one line per component ``c`` in z, q, k, v on a smaller task
   (``--pos-batch``, ``--pos-seg-len``) and a few layers (``--pos-layers``, default the
   ``--pos-n-layers`` layers holding the heads with the largest patching effect in line 1):
   time of ``patch_heads(component=c, by_position=True, layers=...)`` (batched, starting each
   patched forward at the patched layer), time of TransformerLens'
   ``transformer_lens.patching.get_act_patch_attn_head_{out,q,k,v}_by_pos`` on the same cells
   (one whole hooked forward per (layer, pos, head) cell, restricted to those layers with
   ``index_df``; its clean ``run_with_cache`` included), their ratio, and the max absolute
   difference of the two tables' metric values aligned by (layer, pos, head) with the range
   of the values. If TL's function fails on the bridge, the line says so and the comparison
   is a plain loop of single hooked forwards (``model.run_with_hooks``) instead.
4. ``start at layer (...)``: time of per-head ``patch_heads`` (``hook_z``, task of line 1) on
   the first ``--depth-layers`` layers and on the last as many, and first / last (a patched
   forward skips the blocks before the patched layer, so late layers should be cheaper;
   ``skip_reason`` says whether the model's family allows it).

Usage: python benchmarks/attribution_patching.py [model] [batch] [seg_len] [options]
(default: smollm2-135m 4 10; ``circuit-toy`` for the trained toy); options: ``--ig-steps 5,20
--ig-activations-steps 5 (0 skips) --pos-batch 2 --pos-seg-len 6 --pos-n-layers 1
--pos-layers L1,L2 --depth-layers 3``. ``python benchmarks/attribution_patching.py -h``."""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TQDM_DISABLE", "1")      # TL's patching loop draws a progress bar

import numpy as np  # noqa: E402
import torch  # noqa: E402

import interp  # noqa: E402
from interp.circuits.activation import patch_heads  # noqa: E402
from interp.circuits.attribution import node_attribution, spearman  # noqa: E402
from interp.circuits.model import skip_reason  # noqa: E402
from interp.circuits.tasks import induction_task  # noqa: E402

TL_NAMES = {"z": "get_act_patch_attn_head_out_by_pos", "q": "get_act_patch_attn_head_q_by_pos",
            "k": "get_act_patch_attn_head_k_by_pos", "v": "get_act_patch_attn_head_v_by_pos"}


def _timed(fn, *args, **kw):
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t0


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _loop_by_pos(model, task, component: str, cells) -> list[float]:
    """One ``run_with_hooks`` forward of the corrupted tokens per (layer, pos, head) cell,
    copying that cell of the clean run's ``hook_{component}`` (the fallback reference)."""
    names = sorted({f"blocks.{l}.attn.hook_{component}" for l, _, _ in cells})
    _, cache = model.run_with_cache(task.clean, names_filter=lambda n: n in names)
    out = []
    with torch.no_grad():
        for layer, pos, head in cells:
            name = f"blocks.{layer}.attn.hook_{component}"

            def hook(act, hook, pos=pos, head=head, src=cache[name]):
                act = act.clone()
                act[:, pos, head] = src[:, pos, head]
                return act

            out.append(float(task.metric(model.run_with_hooks(task.corrupted,
                                                              fwd_hooks=[(name, hook)]))))
    return out


def _tl_by_pos(model, task, component: str, cells) -> tuple[list[float], str]:
    """TransformerLens' by-position patching of ``cells`` ((layer, pos, head) rows, flattened
    output in that order); on failure the plain loop, with the reason."""
    import pandas as pd

    name = TL_NAMES[component]
    try:
        from transformer_lens import patching as P

        fn = getattr(P, name)
        _, clean_cache = model.run_with_cache(task.clean)
        index = pd.DataFrame(cells, columns=["layer", "pos", "head"])
        ref = fn(model, task.corrupted, clean_cache, task.metric, index_axis_names=None,
                 index_df=index)
        return [float(x) for x in ref.flatten().cpu()], f"TransformerLens {name}"
    except Exception as err:                    # noqa: BLE001 - reported, then the fallback
        why = f"{type(err).__name__}: {str(err).splitlines()[0][:120]}" if str(err) else \
            type(err).__name__
        return (_loop_by_pos(model, task, component, cells),
                f"plain run_with_hooks loop (TL {name} failed on this model: {why})")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", default="smollm2-135m")
    ap.add_argument("batch", nargs="?", type=int, default=4)
    ap.add_argument("seg_len", nargs="?", type=int, default=10)
    ap.add_argument("--ig-steps", default="5,20", help="EAP-IG (ig_on=inputs) step counts")
    ap.add_argument("--ig-activations-steps", type=int, default=5,
                    help="EAP-IG (ig_on=activations) steps; 0 skips")
    ap.add_argument("--pos-batch", type=int, default=2)
    ap.add_argument("--pos-seg-len", type=int, default=6)
    ap.add_argument("--pos-n-layers", type=int, default=1,
                    help="by-position layers: this many, those of the largest head effects")
    ap.add_argument("--pos-layers", default=None, help="explicit by-position layers, e.g. 3,7")
    ap.add_argument("--depth-layers", type=int, default=3)
    a = ap.parse_args(argv)

    torch.set_num_threads(1)
    name, batch, seg_len = a.model, a.batch, a.seg_len
    if name == "circuit-toy":
        from interp.recipes.toy_induction import circuit_toy

        model = circuit_toy()
    else:
        model = interp.load_model(name)
    model.eval()
    L = model.cfg.n_layers
    task = induction_task(model, batch=batch, seg_len=seg_len)
    node_attribution(model, task)                       # warm-up (first-forward hook wiring)
    na, t_attr = _timed(node_attribution, model, task)
    ph, t_patch = _timed(patch_heads, model, task, progress=False)
    effect = ph.metric - ph.attrs["corrupted"]
    rho_eap = spearman(na.score, effect)
    print(f"{name} ({len(na)} heads, batch {batch}, seg_len {seg_len}, 1 thread): "
          f"attribution {t_attr:.2f}s, per-head patching {t_patch:.2f}s, "
          f"ratio {t_patch / t_attr:.1f}x; attribution vs patching Spearman "
          f"{rho_eap:.3f}, Pearson {np.corrcoef(na.score, effect)[0, 1]:.3f}")

    # --- EAP-IG
    runs = [("inputs", s) for s in _ints(a.ig_steps)]
    if a.ig_activations_steps > 0:
        runs.append(("activations", a.ig_activations_steps))
    for ig_on, steps in runs:
        ig, t = _timed(node_attribution, model, task, method="eap-ig", steps=steps, ig_on=ig_on)
        print(f"EAP-IG ({ig_on}, {steps} steps): {t:.2f}s ({t / t_attr:.1f}x EAP); vs patching "
              f"Spearman {spearman(ig.score, effect):.3f}, Pearson "
              f"{np.corrcoef(ig.score, effect)[0, 1]:.3f} (EAP Spearman {rho_eap:.3f})")

    # --- patching by position: patch_heads vs TransformerLens on the same cells
    if a.pos_layers is not None:
        layers = _ints(a.pos_layers)
    else:
        top = ph.assign(e=effect.abs()).groupby("layer").e.max().sort_values(ascending=False)
        layers = sorted(int(l) for l in top.index[:max(1, a.pos_n_layers)])
    ptask = induction_task(model, batch=a.pos_batch, seg_len=a.pos_seg_len)
    seq = ptask.clean.shape[1]
    for comp in ("z", "q", "k", "v"):
        df, t_ours = _timed(patch_heads, model, ptask, component=comp, by_position=True,
                            layers=layers, progress=False)
        cells = [(int(r.layer), int(r.pos), int(r.head)) for r in df.itertuples()]
        (ref, how), t_ref = _timed(_tl_by_pos, model, ptask, comp, cells)
        diff = float(np.max(np.abs(df.metric.to_numpy() - np.asarray(ref))))
        print(f"by position {comp} (layers {layers}, batch {a.pos_batch}, seq {seq}, "
              f"{len(cells)} cells): patch_heads {t_ours:.2f}s, {how} {t_ref:.2f}s, ratio "
              f"{t_ref / t_ours:.1f}x; max |diff| {diff:.2e} (values in "
              f"[{df.metric.min():.3f}, {df.metric.max():.3f}])")

    # --- start-at-layer speedup
    k = max(1, min(a.depth_layers, L // 2))
    first, last = list(range(k)), list(range(L - k, L))
    _, t_first = _timed(patch_heads, model, task, layers=first, progress=False)
    _, t_last = _timed(patch_heads, model, task, layers=last, progress=False)
    why = skip_reason(model)
    print(f"start at layer (per-head z, batch {batch}, seg_len {seg_len}, {k} of {L} layers; "
          f"{'skipping blocks' if why is None else 'whole forwards: ' + why}): first layers "
          f"{first} {t_first:.2f}s, last layers {last} {t_last:.2f}s, ratio "
          f"{t_first / t_last:.2f}x")


if __name__ == "__main__":
    main()
