"""Cost of the induction probe against a forward that only records patterns, and against
TransformerLens' ``detect_head`` called once per pattern type.

Targets (issue #4): the probe over all heads costs <= 1.2x a forward pass that only records
patterns (the probe reduces each layer's pattern inside its hook instead of keeping it), and
is far faster than calling ``detect_head`` per pattern (which caches the whole model per call
and loops over heads in Python).

    python benchmarks/induction_probe.py [--model smollm2-135m] [--batch 8] [--seg-len 50]
"""
from __future__ import annotations

import argparse
import time

import torch


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    import interp
    from interp.hooks import attach
    from interp.probes.induction import pattern_scores, repeated_random_tokens

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seg-len", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    model = interp.load_model(args.model)
    tokens = repeated_random_tokens(model, batch=args.batch, seg_len=args.seg_len)

    @torch.no_grad()
    def record_patterns():
        kept = []
        with attach(model, [(lambda n: n.endswith("hook_pattern"),
                             lambda t, hook: kept.append(t.detach().clone()))]):
            model(tokens)
        return kept

    def probe():
        return pattern_scores(model, tokens, seg_len=args.seg_len)

    def detect():
        from transformer_lens.head_detector import detect_head

        text = model.tokenizer.decode(tokens[0, 1:])
        for name in ("previous_token_head", "duplicate_token_head", "induction_head"):
            detect_head(model, text, name)

    probe()                                                  # warm-up
    t_record = best_of(record_patterns, args.repeats)
    t_probe = best_of(probe, args.repeats)
    t_detect = best_of(detect, 1) * args.batch               # detect_head takes one prompt
    print(f"model {args.model}, batch {args.batch}, seq {tokens.shape[1]}, "
          f"threads {torch.get_num_threads()}")
    print(f"forward recording patterns      {t_record:8.3f} s   1.00x")
    print(f"induction probe (all 4 scores)  {t_probe:8.3f} s   {t_probe / t_record:.2f}x "
          f"(target <= 1.2x)")
    print(f"detect_head x3 patterns         {t_detect:8.3f} s   {t_detect / t_record:.2f}x "
          f"(one prompt per call, times the batch)")


if __name__ == "__main__":
    main()
