"""``kind = "linearised"``: swap linear attention with each feature map into a pretrained
model (all layers and subsets) and measure in-context key-value lookup and perplexity against
the original; see :mod:`interp.retrieval.linearised`. Resumable: finished points in the output
folder are skipped -- only when their resume key (config, ``quick``, prompts, the model's
weights fingerprint, interp version) is this run's; a ``--quick`` folder is refused for a full
run (see :mod:`interp.experiments`). ``--quick``: all layers only, 8 prompts, one 128-token
window.

The points go through ``ctx.sweep("points").pending``, so under ``interp run --nproc N`` they
are split round robin over the ranks and each is reseeded from the run seed and the point
(``performer``'s random features included): the table equals a one-process run's."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from interp.config import DeviceConfig
from interp.experiments import RunContext, experiment


@dataclass(frozen=True)
class LinearisedConfig(DeviceConfig):
    """Attributes:
        model: registered pretrained decoder name.
        feature_maps: linear-attention feature maps; empty = every registered one.
        layer_sets: layer subsets to linearise (``all``, ``first_half``, ``second_half``,
            ``first_third``, ``middle_third``, ``last_third``, ``layers:A-B``,
            ``layers:A,B``).
        n_pairs, n_shots, n_prompts: lookup prompts (table size, answered demonstrations,
            number of prompts); see :class:`interp.tasks.KVLookupConfig`.
        seed: prompt seed.
        text, ppl_tokens, ppl_window: perplexity text, tokens scored, window length.
        form: linear-attention form (``chunked`` or ``parallel``).
        threads: torch CPU threads (0 = leave as is).
        device, dtype: where the model runs and its dtype (:class:`DeviceConfig`).
    """

    model: str = "smollm2-135m"
    feature_maps: tuple[str, ...] = ()
    layer_sets: tuple[str, ...] = ("all", "first_half", "second_half")
    n_pairs: int = 8
    n_shots: int = 6
    n_prompts: int = 64
    seed: int = 0
    text: str = "alice"
    ppl_tokens: int = 1024
    ppl_window: int = 256
    form: str = "chunked"
    threads: int = 1


@experiment("linearised", LinearisedConfig)
def run_linearised(cfg: LinearisedConfig, ctx: RunContext) -> None:
    """Key-value lookup accuracy and perplexity of a linearised pretrained model."""
    import interp
    from interp.retrieval.linearised import ORIGINAL, accuracy_figure, linearised_study
    from interp.tasks import KVLookupConfig

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    quick = ctx.quick
    prompts = KVLookupConfig(n_pairs=cfg.n_pairs, n_shots=cfg.n_shots,
                             batch=min(cfg.n_prompts, 8) if quick else cfg.n_prompts)
    model = interp.load_model(cfg.model, device=ctx.device, dtype=ctx.dtype)
    table = linearised_study(
        model, feature_maps=cfg.feature_maps or None,
        layer_sets=("all",) if quick else cfg.layer_sets, prompts=prompts, seed=cfg.seed,
        text=cfg.text, ppl_tokens=128 if quick else cfg.ppl_tokens,
        ppl_window=128 if quick else cfg.ppl_window, form=cfg.form,
        sweep=ctx.sweep("points", model=model, prompts=prompts),
        progress=ctx.show_progress and ctx.is_main)
    ctx.add_table("linearised", table, caption=(
        "one row per (feature map, layers swapped); the softmax/none row is the original "
        "model; ratios are to the original"))
    ctx.add_figure("kv_accuracy", accuracy_figure(table),
                   caption="top-1 key-value lookup accuracy per feature map and layer set")
    orig = table[(table.feature_map == ORIGINAL[0])].iloc[0]
    full = table[table.layer_set == "all"]
    ctx.add_text("\n".join([
        "## Summary",
        f"- original {cfg.model}: lookup accuracy {orig.kv_accuracy:.3f} "
        f"({prompts.n_pairs} pairs, {prompts.n_shots} demonstrations, {orig.n_prompts} "
        f"prompts), perplexity {orig.perplexity:.1f} on {cfg.text}",
        *(f"- all layers `{r.feature_map}`: accuracy {r.kv_accuracy:.3f} "
          f"({r.accuracy_ratio:.0%} of the original), perplexity {r.perplexity:.3g}"
          for r in full.itertuples()),
    ]), at_top=True)
