"""``kind = "retrieval_sweep"``: MQAR recall vs width and state size for every attention
implementation (Zoology-style); see :mod:`interp.retrieval.sweep`. Resumable: finished points
in the output folder (with this run's resume key) are skipped. This kind is the only writer of
the run folder: :func:`interp.retrieval.sweep.retrieval_sweep` returns the tables."""
from __future__ import annotations

from interp.experiments import RunContext, experiment
from interp.retrieval.sweep import EXPERIMENT_KIND, RetrievalSweepConfig


@experiment(EXPERIMENT_KIND, RetrievalSweepConfig)
def run(cfg: RetrievalSweepConfig, ctx: RunContext) -> None:
    """MQAR recall vs width and state size for every attention implementation (resumable)."""
    from interp.retrieval.plots import accuracy_vs_state, accuracy_vs_width
    from interp.retrieval.sweep import retrieval_sweep

    res = retrieval_sweep(cfg, ctx.quick, sweep=ctx.sweep("points"),
                          progress=ctx.show_progress and ctx.is_main,
                          device=ctx.device, dtype=ctx.dtype)
    table = res.table
    ctx.add_table("retrieval", table, caption="one row per trained model (accuracy on the "
                  "held-out MQAR queries, state size per layer summed over mixers)")
    ctx.add_table("bottleneck_vs_error", res.bottleneck, caption="correlation of retrieval "
                  "error with the attention-bottleneck measures, per number of key-value pairs")
    ctx.add_figure("accuracy_vs_state", accuracy_vs_state(table),
                   caption="MQAR accuracy vs recurrent state size")
    ctx.add_figure("accuracy_vs_width", accuracy_vs_width(table),
                   caption="MQAR accuracy vs model width")
    best = table.groupby("impl").accuracy.max().sort_values(ascending=False)
    ctx.add_text("Best accuracy per implementation: " + ", ".join(
        f"{name} {acc:.3f}" for name, acc in best.items()))
