"""Patching tasks: clean/corrupted prompt pairs with a metric, and which run is patched.

Architecture
------------
- **Task.** A :class:`PatchingTask` holds a ``clean`` and a ``corrupted`` batch of token ids
  (same shape ``[batch, seq]``, row i of one paired with row i of the other) and a metric
  ``logits [batch, seq, vocab] -> scalar`` (higher = more like the clean behaviour; see
  :mod:`interp.circuits.metrics`). Builders: :func:`induction_task` (repeated random tokens;
  the corrupted row has a different first copy, so the second copy cannot be predicted by
  induction) and :func:`kv_retrieval_task` (the prompts of :mod:`interp.tasks.kv_lookup`; the
  corrupted row stores another value for the queried key, or asks for another key).
- **Direction.** ``direction="denoise"`` (default) runs the *corrupted* tokens and patches in
  *clean* activations: a high normalised score means the component suffices to restore the
  clean behaviour. ``"noise"`` runs the clean tokens and patches in corrupted activations;
  the normalised score is still 0 = corrupted, 1 = clean, so a *low* score there means the
  component is necessary. :func:`base_and_source` picks the two token batches.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from interp.circuits.metrics import Metric, logit_diff_metric, logprob_metric, prob_metric
from interp.errors import InputError
from interp.models.loading import ensure_info
from interp.probes.common import check_tokens

Direction = Literal["denoise", "noise"]


@dataclass
class PatchingTask:
    """A batch of clean/corrupted prompt pairs and a metric.

    Attributes:
        clean, corrupted: ``[batch, seq]`` token ids (same shape; row i pairs with row i).
        metric: ``logits [batch, seq, vocab] -> scalar tensor`` (higher = clean behaviour);
            differentiable (attribution patching takes its gradient).
        name: label for tables.
        info: free-form description (what positions, which tokens). Tasks with an answer
            token also set ``info["answer"]`` (``[batch]`` ids the clean run should predict),
            ``info["answer_position"]`` (where, an int) and, where the metric contrasts it
            with another token, ``info["contrast"]`` (``[batch]`` ids): circuit runs then add
            the logit lens and direct logit attribution of the clean run
            (:mod:`interp.attribution`).
    """

    clean: torch.Tensor
    corrupted: torch.Tensor
    metric: Metric
    name: str = "task"
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.clean.shape != self.corrupted.shape:
            raise InputError(f"clean {tuple(self.clean.shape)} and corrupted "
                             f"{tuple(self.corrupted.shape)} token batches must have one shape")

    @property
    def batch(self) -> int:
        return int(self.clean.shape[0])

    def checked(self, model) -> "PatchingTask":
        """The task with its tokens validated for (and moved to the device of) ``model``."""
        return PatchingTask(check_tokens(model, self.clean), check_tokens(model, self.corrupted),
                            self.metric, self.name, self.info)


def induction_task(model, batch: int = 8, seg_len: int = 20, seed: int = 0,
                   metric: Literal["logprob", "prob"] = "logprob") -> PatchingTask:
    """Repeated random tokens ``[BOS] A A``; corrupted ``[BOS] A' A`` with a fresh first copy
    ``A'`` (same second copy), so induction cannot predict the second copy.

    The metric reads the predictions of second-copy tokens 2..seg_len (positions
    ``o + seg_len .. o + 2 seg_len - 2`` predict the next token of the clean copy; ``o`` = 1
    with BOS) -- the first token of a copy is never predictable.

    Returns:
        A task with ``clean``/``corrupted`` ``[batch, o + 2 seg_len]`` and
        ``info["positions"]`` the ``seg_len - 1`` positions the metric reads.
    """
    from interp.probes.induction import bos_id
    from interp.tasks import repeated_tokens

    toy = ensure_info(model).kind == "toy"
    bos = 0 if toy else bos_id(model)          # the toy recipes put BOS = 0 first
    low = 1 if toy else (0 if model.tokenizer is None else min(1000, model.cfg.d_vocab // 2))

    def draw(s):
        return check_tokens(model, repeated_tokens(batch, seg_len, 2, model.cfg.d_vocab,
                                                   bos_token=bos, seed=s, low=low))

    clean = draw(seed)
    o = clean.shape[1] - 2 * seg_len
    fresh = draw(seed + 7919)
    corrupted = clean.clone()
    corrupted[:, o:o + seg_len] = fresh[:, o:o + seg_len]
    positions = torch.arange(o + seg_len, o + 2 * seg_len - 1)
    targets = clean[:, positions + 1].cpu()
    fn = (logprob_metric if metric == "logprob" else prob_metric)(positions, targets)
    return PatchingTask(clean, corrupted, fn, name="induction",
                        info={"seg_len": seg_len, "offset": o, "metric": metric,
                              "positions": positions.tolist(),
                              "answer": targets[:, -1].tolist(),
                              "answer_position": int(positions[-1])})


def kv_retrieval_task(model, batch: int = 8, n_pairs: int = 4, seed: int = 0,
                      n_shots: int | None = None,
                      corrupt: Literal["value", "query"] = "value") -> PatchingTask:
    """In-context key-value lookup prompts of :mod:`interp.tasks.kv_lookup` (header, a table
    ``k1: v1, ..., kn: vn.``, ``n_shots`` answered lookups of other keys, then ``kq:``; single
    -token keys and values checked with the tokenizer).

    Corruption (same length, one token changed per row):

    - ``"value"`` (default): the queried key's stored value ``vq`` is replaced in the table by
      a value ``v'`` that is in no pair of the row, so the corrupted run should answer ``v'``;
    - ``"query"``: the query key is swapped for another stored key ``kj`` (not one of the
      demonstrations when there is such a key), so the corrupted run should answer ``vj``.

    Metric: logit difference ``vq - v'`` (or ``vq - vj``) at the last position (the clean run
    prefers the first, the corrupted run the second).

    Returns:
        A task with ``clean``/``corrupted`` ``[batch, seq]`` (one prompt length for the batch).

    Raises:
        InputError: a model without a tokenizer, an unknown ``corrupt``, too few values or
            pairs for the corruption.
    """
    from interp.tasks._sampling import generator
    from interp.tasks.kv_lookup import KVLookupConfig, single_token_ids

    tok = model.tokenizer
    if tok is None:
        raise InputError("kv_retrieval_task needs a model with a tokenizer")
    if corrupt not in ("value", "query"):
        raise InputError(f"corrupt must be 'value' or 'query', got {corrupt!r}")
    shots = max(0, min(6, n_pairs - 2)) if n_shots is None else n_shots
    cfg = KVLookupConfig(n_pairs=n_pairs, n_shots=shots, batch=batch)
    if corrupt == "value" and len(cfg.values) <= n_pairs:
        raise InputError(f"corrupt='value' needs more than n_pairs={n_pairs} values")
    kv = cfg.build(tok, seed)
    clean = kv.tokens
    b, seq = clean.shape
    rows = torch.arange(b)
    corrupted = clean.clone()
    g = generator(seed + 7919)
    table0 = seq - 2 - 4 * shots - 4 * n_pairs              # position of the first key
    if corrupt == "value":
        pool = single_token_ids(tok, cfg.values, "values")
        wrong = torch.empty(b, dtype=torch.long)
        for i in range(b):
            free = pool[~torch.isin(pool, kv.values[i])]
            wrong[i] = free[torch.randint(len(free), (1,), generator=g)]
        corrupted[rows, table0 + 4 * kv.query + 2] = wrong
    else:
        if n_pairs < 2:
            raise InputError("corrupt='query' needs n_pairs >= 2")
        other = torch.empty(b, dtype=torch.long)
        for i in range(b):
            demo = set(clean[i, seq - 2 - 4 * shots:seq - 2:4].tolist())
            cand = [j for j in range(n_pairs) if j != int(kv.query[i])]
            fresh = [j for j in cand if int(kv.keys[i, j]) not in demo] or cand
            other[i] = fresh[int(torch.randint(len(fresh), (1,), generator=g))]
        corrupted[:, seq - 2] = kv.keys[rows, other]
        wrong = kv.values[rows, other]
    clean_t, corr_t = check_tokens(model, clean), check_tokens(model, corrupted)
    fn = logit_diff_metric([seq - 1], kv.answers[:, None], wrong[:, None])
    return PatchingTask(clean_t, corr_t, fn, name="kv_retrieval",
                        info={"n_pairs": n_pairs, "n_shots": shots, "corrupt": corrupt,
                              "example": tok.decode(clean[0]),
                              "corrupted_example": tok.decode(corrupted[0]),
                              "answer": kv.answers.tolist(), "contrast": wrong.tolist(),
                              "answer_position": seq - 1})


def base_and_source(task: PatchingTask, direction: Direction) -> tuple[torch.Tensor, torch.Tensor]:
    """``(base tokens, source tokens)``, each ``[batch, seq]``: the run that is patched and the
    run the patched activations come from (``"denoise"``: corrupted, clean; ``"noise"``:
    clean, corrupted)."""
    if direction not in ("denoise", "noise"):
        raise InputError(f"direction must be 'denoise' or 'noise', got {direction!r}")
    return (task.corrupted, task.clean) if direction == "denoise" else (task.clean, task.corrupted)
