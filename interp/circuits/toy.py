"""The trained toy induction model used for circuit finding.

One recipe trains it: :func:`interp.models.toy_induction.train_toy_induction` (BOS + a
segment + the same segment, the length drawn per batch, so only the previous-token ->
induction K-composition mechanism can predict the second copy). :func:`circuit_toy` returns the
cached checkpoint ``<cache>/toy/<name>`` and trains it once if it is missing.
"""
from __future__ import annotations

from interp.models.toy_induction import ToyInductionConfig


def circuit_toy(name: str = ToyInductionConfig.name, progress: bool = False,
                retrain: bool = False):
    """The cached toy induction model (``interp.load_model("toy:<name>")``), trained with the
    default :class:`ToyInductionConfig` (and its 1-layer control) on first use."""
    import interp
    from interp.models.toy import resolve_toy_path
    from interp.models.toy_induction import train_toy_induction

    if not retrain:
        try:
            resolve_toy_path(name)
            return interp.load_model(f"toy:{name}")
        except FileNotFoundError:
            pass
    train_toy_induction(ToyInductionConfig(name=name), progress=progress)
    return interp.load_model(f"toy:{name}")
