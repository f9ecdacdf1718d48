"""System 2 Attention (Weston & Sukhbaatar 2023): data, the rewrite-then-answer pipeline,
and attention on distractors. See :mod:`interp.s2a.pipeline`."""
from interp.s2a.data import S2AExample, Segment, is_correct, load_examples
from interp.s2a.pipeline import (CONDITIONS, S2AResult, answer_prompt, layer_figure,
                                 match_segments, run_s2a, s2a_example)

__all__ = ["CONDITIONS", "S2AExample", "S2AResult", "Segment", "answer_prompt", "is_correct",
           "layer_figure", "load_examples", "match_segments", "run_s2a",
           "s2a_example"]
