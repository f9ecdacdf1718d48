"""A toy 2-layer attention-only model with a real induction circuit, for circuit finding.

Why not :func:`interp.models.toy_induction.train_toy_induction` as is: its data repeat a
segment of FIXED length right after BOS, so a single layer-0 head can predict the second copy
with a purely positional rule ("attend ``seg_len - 1`` positions back") -- the trained model
scores induction ~0.94 in layer 0 and has no previous-token head. Here every row is
``BOS, random prefix (0..max_prefix), segment (min_seg..max_seg), the same segment, random
fill`` with lengths drawn per row, so only the previous-token -> induction (K-composition)
mechanism works. :func:`circuit_toy` trains it once (~1-2 min on 2 cores) and caches it as
``<cache>/toy/<name>`` (``interp.load_model("toy:<name>")``).
"""
from __future__ import annotations

import torch

from interp.models.toy import ToyConfig, build_toy, resolve_toy_path, save_toy, train_toy

BOS = 0


def variable_repeats(batch: int, seq_len: int, vocab: int, min_seg: int = 6, max_seg: int = 16,
                     max_prefix: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(tokens [batch, seq_len], loss_mask [batch, seq_len-1])``: rows with one repeated
    segment at a random place and of random length; the mask keeps every prediction."""
    g = torch.Generator().manual_seed(seed)
    toks = torch.randint(1, vocab, (batch, seq_len), generator=g)
    toks[:, 0] = BOS
    for i in range(batch):
        s = int(torch.randint(min_seg, max_seg + 1, (1,), generator=g))
        p = 1 + int(torch.randint(0, max_prefix + 1, (1,), generator=g))
        if p + 2 * s <= seq_len:
            toks[i, p + s:p + 2 * s] = toks[i, p:p + s]
    return toks, torch.ones(batch, seq_len - 1, dtype=torch.bool)


def circuit_toy(name: str = "circuits-induction-2l", steps: int = 1500, progress: bool = False,
                retrain: bool = False):
    """The cached toy (trained on first use): 2 layers, 4 heads, d_model 64, vocab 64."""
    import interp

    if not retrain:
        try:
            resolve_toy_path(name)
            return interp.load_model(f"toy:{name}")
        except FileNotFoundError:
            pass
    cfg = ToyConfig(n_layers=2, d_model=64, n_heads=4, d_head=16, d_vocab=64, n_ctx=64,
                    attn_only=True, seed=0)
    model = build_toy(cfg)
    hist = train_toy(model, lambda step: variable_repeats(32, 48, cfg.d_vocab, seed=step),
                     steps=steps, lr=2e-3, progress=progress)
    from interp.models.cache import cache_dir

    save_toy(model, cache_dir() / "toy" / name, hist)
    model.eval()
    return model
