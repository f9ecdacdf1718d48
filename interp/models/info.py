"""What interp knows about a loaded model (attached as ``model.interp_info``)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelInfo:
    """What interp knows about a loaded model.

    Attributes:
        name: registry name (``"smollm2-135m"``, ``"toy:<path>"``).
        kind: ``"pretrained"`` or ``"toy"``.
        causal: decoder (True) or bidirectional encoder (False).
        has_lm_head: False when logits are meaningless (MiniLM's untrained head).
        n_ctx: longest sequence the model accepts.
    """

    name: str
    kind: str
    causal: bool
    has_lm_head: bool
    n_ctx: int
