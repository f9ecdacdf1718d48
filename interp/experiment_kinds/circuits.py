"""``kind = "circuits"``: activation patching, attribution patching and circuit discovery on
one model and one task (``induction`` or ``kv_retrieval``); see :mod:`interp.circuits`.

Stages: baseline metrics; head patching (layer x head heatmap, resumable via a sweep);
residual patching (layer x position heatmap, resumable); node attribution and its
correlation with head patching; EAP edge scores; discovery (``acdc`` for small graphs, else
EAP top-n) with the circuit's recovered metric and a graph figure.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from interp.experiments import RunContext, experiment


@dataclass(frozen=True)
class CircuitsConfig:
    """Attributes:
        model: registered model name, ``toy:<name>``, or ``circuit-toy`` (trains
            :func:`interp.circuits.toy.circuit_toy` once and caches it).
        task: ``induction`` or ``kv_retrieval``.
        batch, seg_len, n_pairs, seed: task size.
        method: ``acdc`` or ``eap``; threshold (ACDC) / top_n (EAP).
        residual_patching: also run layer x position patching.
        threads: torch CPU threads (0 = default).
    """

    model: str = "circuit-toy"
    task: str = "induction"
    batch: int = 8
    seg_len: int = 12
    n_pairs: int = 4
    seed: int = 0
    method: str = "acdc"
    threshold: float = 0.02
    top_n: int = 50
    residual_patching: bool = True
    threads: int = 1


@experiment("circuits", CircuitsConfig)
def run_circuits(cfg: CircuitsConfig, ctx: RunContext) -> None:
    """Patching, attribution and discovery for one model and task."""
    import interp
    from interp.circuits.attribution import edge_attribution, node_attribution
    from interp.circuits.discovery import acdc, circuit_figure, eap_circuit, position_heatmap
    from interp.circuits.patching import (baseline, induction_task, kv_retrieval_task,
                                          patch_heads, patch_residual)
    from interp.viz import head_heatmap

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.model == "circuit-toy":
        from interp.circuits.toy import circuit_toy

        model = circuit_toy()
    else:
        model = interp.load_model(cfg.model)
    batch = max(2, cfg.batch // 4) if ctx.quick else cfg.batch
    if cfg.task == "induction":
        task = induction_task(model, batch=batch, seg_len=cfg.seg_len, seed=cfg.seed)
    elif cfg.task == "kv_retrieval":
        task = kv_retrieval_task(model, batch=batch, n_pairs=cfg.n_pairs, seed=cfg.seed)
    else:
        raise ValueError(f"task must be 'induction' or 'kv_retrieval', got {cfg.task!r}")
    ref = baseline(model, task)
    ctx.log(f"clean {ref['clean']:.3f} corrupted {ref['corrupted']:.3f}")
    heads = patch_heads(model, task, sweep=ctx.sweep("heads"), progress=ctx.show_progress)
    ctx.add_table("head_patching", heads)
    ctx.add_figure("head_patching", head_heatmap(heads, "normalised",
                                                 title="head patching (clean -> corrupted)"))
    if cfg.residual_patching:
        res = patch_residual(model, task, sweep=ctx.sweep("resid"), progress=ctx.show_progress)
        ctx.add_table("residual_patching", res)
        ctx.add_figure("residual_patching", position_heatmap(res))
    na = node_attribution(model, task)
    corr = float(np.corrcoef(na.score, heads.metric - ref["corrupted"])[0, 1])
    ctx.add_table("node_attribution", na.assign(patching=heads.metric - ref["corrupted"]))
    scores = edge_attribution(model, task)
    if cfg.method == "acdc":
        circuit = acdc(model, task, threshold=cfg.threshold, progress=ctx.show_progress)
    else:
        circuit = eap_circuit(model, task, top_n=cfg.top_n, scores=scores)
    ctx.add_table("circuit_edges", circuit.edges)
    ctx.add_table("circuit_nodes", circuit.nodes)
    ctx.add_figure("circuit", circuit_figure(circuit, f"{cfg.task} circuit"))
    s = circuit.summary()
    ctx.add_text("\n".join([
        "## Summary",
        f"- clean metric {ref['clean']:.3f}, corrupted {ref['corrupted']:.3f}",
        f"- attribution vs head patching: Pearson r = {corr:.3f}",
        f"- circuit ({cfg.method}): {s['n_edges']} edges, heads {', '.join(circuit.heads)}; "
        f"recovers {s['normalised']:.3f} of the clean metric alone",
    ]), at_top=True)
