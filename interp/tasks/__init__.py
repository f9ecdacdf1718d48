"""Synthetic tasks: seeded, batched token data as torch tensors.

Every batch is drawn on CPU from an explicitly seeded generator (the same seed gives the same
tokens on every machine and device) and then moved to ``device=`` when one is given, e.g. the
model's device in a training loop: ``cfg.build(seed, device=model_device)``.

- :func:`repeated_tokens`, :class:`InductionMixture` -- repeated random segments for
  induction heads (Olsson et al. 2022).
- :func:`mqar`, :class:`MQARConfig` -- multi-query associative recall (Zoology).
- :class:`NeedleConfig` -- one key-value needle in a haystack, queried at the end.
- :class:`CopyConfig`, :class:`PhonebookConfig` -- copying and phone-book lookup
  (Jelassi et al. 2024).
- :class:`KVLookupConfig` -- in-context key-value lookup in text (``"k1: v1, ..., kq:"``) for
  pretrained models (needs their tokenizer).

Task configs are frozen dataclasses (load them strictly with ``interp.config.from_dict``) with
``build(seed)``; next-token tasks return :class:`TaskBatch` ``(inputs [batch, seq],
targets [batch, seq])`` with ``IGNORE_INDEX`` (-100) where nothing is scored. Their
``build`` (and :func:`mqar`, :func:`repeated_tokens`) take ``device=`` (default: CPU).
"""
from interp.tasks._sampling import IGNORE_INDEX, TaskBatch
from interp.tasks.copying import CopyConfig, PhonebookConfig
from interp.tasks.kv_lookup import KVLookupBatch, KVLookupConfig
from interp.tasks.mqar import MQARConfig, check_mqar, mqar
from interp.tasks.needle import NeedleConfig
from interp.tasks.repeated import InductionMixture, MixtureBatch, repeated_tokens

__all__ = [
    "IGNORE_INDEX", "TaskBatch", "repeated_tokens", "InductionMixture", "MixtureBatch",
    "mqar", "MQARConfig", "check_mqar", "NeedleConfig", "CopyConfig", "PhonebookConfig",
    "KVLookupConfig", "KVLookupBatch",
]
