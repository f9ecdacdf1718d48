"""What interp knows about a loaded model (attached as ``model.interp_info``)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelInfo:
    """What interp knows about a loaded model.

    Attributes:
        name: how it was asked for: registry name (``"smollm2-135m"``, ``"toy:<path>"``), hub
            id, folder or GGUF path, or ``"wrapped:<class>"`` for :func:`interp.wrap`.
        kind: ``"pretrained"`` (offline registry), ``"toy"``, ``"hub"``, ``"folder"``,
            ``"gguf"`` or ``"wrapped"``.
        causal: decoder (True) or bidirectional encoder (False).
        has_lm_head: False when logits are meaningless (MiniLM's untrained head).
        n_ctx: longest sequence the model accepts.
        family: the family as the HF config names it (``"llama"``, ``"gemma3_text"``, ...;
            ``"toy"``); :func:`interp.families.family_name`.
        bos_token_id: the tokenizer's beginning-of-sequence id (None when it has none).
    """

    name: str
    kind: str
    causal: bool
    has_lm_head: bool
    n_ctx: int
    family: str = "?"
    bos_token_id: int | None = None
