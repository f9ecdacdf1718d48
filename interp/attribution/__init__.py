"""Attribution instruments: where the answer's logit comes from.

- :mod:`~interp.attribution.lens` -- the logit lens (:func:`logit_lens`, :func:`top_tokens`):
  the residual after every block through the model's own final norm and unembedding.
- :mod:`~interp.attribution.dla` -- direct logit attribution
  (:func:`direct_logit_attribution`) and the residual decomposition it projects
  (:func:`residual_decomposition`), exact sums with the norms frozen at the run's scale.
- :mod:`~interp.attribution.view` -- an HTML view of both (logit-lens heatmap, DLA heatmap).

Patching by position and pattern and EAP-IG live with the other circuit tools
(:mod:`interp.circuits`).
"""
from interp.attribution.dla import (Decomposition, answer_ids, direct_logit_attribution,
                                    head_matrix, residual_decomposition)
from interp.attribution.lens import logit_lens, residual_stack, top_tokens

__all__ = ["Decomposition", "answer_ids", "direct_logit_attribution", "head_matrix",
           "logit_lens", "residual_decomposition", "residual_stack", "top_tokens"]
