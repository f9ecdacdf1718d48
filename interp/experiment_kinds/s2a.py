"""``kind = "s2a"``: System 2 Attention (Weston & Sukhbaatar 2023) on a small chat model.

Three conditions on ``data/s2a/questions.jsonl`` (:mod:`interp.s2a.pipeline`): original
context, S2A rewrite, oracle (distractors and opinions removed by the data's marks).
Writes ``s2a_table`` (condition, accuracy, distractor/relevant/opinion attention, n, ...),
``s2a_examples`` (every output and rewrite), ``s2a_per_layer`` and the figure
``distractor_attention_per_layer`` (one trace per condition).

Under ``interp run --nproc N`` the questions are split over the ranks (``RunContext.map``;
greedy decoding, so every question's outputs and attention are the same on any rank) and
rank 0 writes the same tables as a one-process run.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from interp.config import ConfigError, DeviceConfig, require_at_least
from interp.experiments import RunContext, experiment


@dataclass(frozen=True)
class S2AConfig(DeviceConfig):
    """Settings of the S2A comparison.

    Attributes:
        model: registered model name with a chat template (``smollm2-135m``).
        data: JSONL question file ("" = the shipped ``data/s2a/questions.jsonl``).
        limit: use the first ``limit`` questions (0 = all).
        quick_limit: questions used with ``--quick``.
        answer_tokens: max new tokens of an answer.
        rewrite_tokens: max new tokens of an S2A rewrite.
        generate_with: ``"hf"`` (a second, plain HF copy with its own KV cache) or
            ``"bridge"`` (the hooked model itself with :func:`interp.generate`'s KV cache: no
            second copy in memory, hooks fire); both give HF ``generate``'s tokens.
        threads: torch CPU threads (0 = leave torch's default).
        device, dtype: where both models run and their dtype (:class:`DeviceConfig`).
    """

    model: str = "smollm2-135m"
    data: str = ""
    limit: int = 0
    quick_limit: int = 8
    answer_tokens: int = 24
    rewrite_tokens: int = 64
    generate_with: str = "hf"
    threads: int = 0

    def __post_init__(self):
        if self.generate_with not in ("hf", "bridge"):
            raise ConfigError(f"generate_with must be 'hf' or 'bridge', got {self.generate_with!r}")
        require_at_least(self, ("limit", "quick_limit", "answer_tokens", "rewrite_tokens",
                                "threads"), 0)


def run_comparison(cfg: S2AConfig, limit: int | None = None, progress=None, log=None,
                   map_fn=None, device: torch.device | None = None,
                   dtype: torch.dtype | None = None):
    """Load the model(s) and run :func:`interp.s2a.run_s2a` (``map_fn``: how the per-question
    work is mapped, e.g. ``RunContext.map``); returns the :class:`S2AResult`.

    ``device`` / ``dtype``: resolved values (an experiment run passes its own); default the
    config's ``device`` / ``dtype``, resolved here."""
    import interp
    from interp.models.registry import load_hf
    from interp.s2a import load_examples, run_s2a

    if device is None or dtype is None:
        dev, dt = cfg.resolve_devices()
        device = dev if device is None else device
        dtype = dt if dtype is None else dtype
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    examples = load_examples(cfg.data or None, limit=limit or None)
    model = interp.load_model(cfg.model, device=device, dtype=dtype)
    gen = (load_hf(cfg.model, dtype)[0].to(device) if cfg.generate_with == "hf"
           else model)
    return run_s2a(model, examples, generator=gen, answer_tokens=cfg.answer_tokens,
                   rewrite_tokens=cfg.rewrite_tokens, progress=progress, log=log,
                   map_fn=map_fn)


@experiment("s2a", S2AConfig)
def run_s2a_experiment(cfg: S2AConfig, ctx: RunContext) -> None:
    """System 2 Attention: accuracy and attention on distractors for the original context,
    the model's own rewrite, and an oracle rewrite."""
    from interp.s2a import layer_figure

    limit = cfg.quick_limit if ctx.quick else cfg.limit
    res = run_comparison(cfg, limit, progress=ctx.progress, log=ctx.log,
                         map_fn=lambda fn, items: ctx.map(fn, items, name="s2a", desc="s2a"),
                         device=ctx.device, dtype=ctx.dtype)
    ctx.add_table("s2a_table", res.table,
                  "one row per condition; attention = mean mass from the last prompt token "
                  "(where the answer starts) over layers, heads and questions; survival = "
                  "share of the original text of that label found in the rewrite")
    ctx.add_table("s2a_examples", res.per_example, "every question and condition", max_rows=30)
    ctx.add_table("s2a_per_layer", res.per_layer, "mean mass per layer", max_rows=100)
    ctx.add_figure("distractor_attention_per_layer", layer_figure(res.per_layer, "distractor"),
                   "attention on distractor tokens per layer (oracle has none by construction)")
    t = res.table.set_index("condition")
    lines = ["## Summary"] + [
        f"- **{c}**: accuracy {t.loc[c, 'accuracy']:.2f}, distractor attention "
        f"{t.loc[c, 'distractor_attention']:.3f}, relevant {t.loc[c, 'relevant_attention']:.3f}, "
        f"opinion {t.loc[c, 'opinion_attention']:.3f} (n={t.loc[c, 'n']})" for c in t.index]
    ctx.add_text("\n".join(lines), at_top=True)
