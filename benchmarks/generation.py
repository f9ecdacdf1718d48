"""Batched KV-cache generation (:func:`interp.generate`) vs the full-forward loop vs HF
``generate``, on one model, measured in one run.

    OMP_NUM_THREADS=1 python benchmarks/generation.py [--model smollm2-135m] [--prompts 8]
        [--new-tokens 128] [--loop-prompts 8] [--clock cpu|wall]

Single-threaded (``torch.set_num_threads(1)``). Times are the process's CPU seconds
(``time.process_time``: with one thread the compute time, which does not grow with other
processes' load on a shared machine; ``--clock wall`` for wall clock). All three methods
generate greedily with no stop token, exactly ``--new-tokens`` tokens per prompt, from the
same left-padded batch of ``--prompts`` prompts of different lengths:

1. ``cached``: ``interp.generate(bridge, prompts, N, stop_ids=())``: one batched forward per
   token through the hooked model, keys/values from the KV cache.
2. ``loop``: ``interp.generate(..., use_cache=False)``: what a bridge did before, a full
   forward of one prompt per new token (O(n^2)). ``--loop-prompts`` (default all) of the
   prompts are run and the time is scaled to all prompts (printed as such).
3. ``hf``: ``generate(do_sample=False)`` of a plain HF instance (eager attention, its own
   cache), the same left-padded batch and attention mask.

Printed: one line per method (seconds, ms per generated token), the ratios ``loop / cached``
(goal >= 10) and ``cached / hf`` (goal <= 1.5), and whether the three token sequences are
equal (``tokens equal: yes`` or the first differing prompt and step). Nothing is asserted.
"""
from __future__ import annotations

import argparse
import time

import torch

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "Once upon a time, in a land far away, there lived a",
    "The mitochondria is",
    "import numpy as np\nimport pandas as pd\n\n",
    "My favourite colour is blue because",
    "Water boils at",
    "The three laws of robotics, as written by Isaac Asimov, are",
    "In 1969, the first humans landed on",
    "SELECT name, age FROM users WHERE",
    "The recipe for pancakes needs flour, eggs,",
    "Photosynthesis converts",
]


def _clock(kind: str):
    return time.process_time if kind == "cpu" else time.perf_counter


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--loop-prompts", type=int, default=None,
                   help="run the full-forward loop on this many prompts and scale (default all)")
    p.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    args = p.parse_args(argv)
    if not 1 <= args.prompts <= len(PROMPTS):
        p.error(f"--prompts must be in 1..{len(PROMPTS)}")
    torch.set_num_threads(1)
    clock = _clock(args.clock)

    import interp
    from interp.models.registry import load_hf

    bridge = interp.load_model(args.model)
    hf, tok = load_hf(args.model)
    prompts = PROMPTS[:args.prompts]
    rows = [tok(t, add_special_tokens=False).input_ids for t in prompts]
    n = args.new_tokens

    interp.generate(bridge, prompts[:2], 2, stop_ids=())               # warm-up
    t0 = clock()
    cached = interp.generate(bridge, rows, n, stop_ids=()).new_ids
    t_cached = clock() - t0

    loop_n = args.loop_prompts or len(rows)
    t0 = clock()
    loop = interp.generate(bridge, rows[:loop_n], n, stop_ids=(), use_cache=False).new_ids
    t_loop = (clock() - t0) * len(rows) / loop_n

    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    width = max(map(len, rows))
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    t0 = clock()
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=mask, max_new_tokens=n, do_sample=False,
                          eos_token_id=None, pad_token_id=pad)
    t_hf = clock() - t0
    ref = out[:, width:].tolist()

    total = n * len(rows)
    print(f"{args.model}, {len(rows)} prompts ({min(map(len, rows))}-{width} tokens) x {n} new "
          f"tokens, 1 thread, {args.clock} seconds")
    for name, t in (("cached (interp.generate)", t_cached),
                    (f"loop (full forwards{', scaled from %d prompts' % loop_n if loop_n < len(rows) else ''})", t_loop),
                    ("hf generate", t_hf)):
        print(f"  {name:<44} {t:8.2f} s  {1000 * t / total:7.2f} ms/token")
    print(f"  loop / cached = {t_loop / t_cached:.1f}x (goal >= 10);  cached / hf = "
          f"{t_cached / t_hf:.2f}x (goal <= 1.5)")
    bad = [(i, next(j for j, (a, b) in enumerate(zip(c, r)) if a != b))
           for i, (c, r) in enumerate(zip(cached, ref)) if c != r]
    bad_loop = [i for i, (c, r) in enumerate(zip(loop, ref)) if c != r]
    print("  tokens equal: " + ("yes (cached == hf" + (", loop == hf)" if not bad_loop else
                                                      f"; loop differs on prompts {bad_loop})")
                                if not bad else f"no: cached vs hf, (prompt, first step) {bad}"))


if __name__ == "__main__":
    main()
