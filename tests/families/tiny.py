"""Tiny randomly initialised models of each architecture family, built from transformers' own
config classes and saved with ``save_pretrained`` into a folder (with a real byte-level
tokenizer), so tests load them through the same folder path a user's checkpoint takes.

``FAMILIES`` maps a family name to ``(config class, model class, config kwargs)``; every
family list in the tests is built from it. Geometry is chosen so that each family's special
features are exercised on short inputs: GQA (4 query / 2 kv heads), sliding windows of 6
tokens (shorter than the test prompts), Gemma 2's score soft-capping, q/k norms (Qwen3,
Gemma 3), partial rotary (GPT-NeoX: 25%), a bidirectional encoder (BERT).
"""
from __future__ import annotations

from pathlib import Path

import torch

VOCAB = 260          # 4 specials + 256 byte symbols
WINDOW = 6

_DEC = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
            bos_token_id=1, eos_token_id=2, pad_token_id=0)
_LAYERS3 = ["sliding_attention", "full_attention", "sliding_attention"]


def _families() -> dict:
    import transformers as T

    return {
        "llama": (T.LlamaConfig, T.LlamaForCausalLM, dict(_DEC)),
        "mistral": (T.MistralConfig, T.MistralForCausalLM, dict(_DEC, sliding_window=WINDOW)),
        "qwen2": (T.Qwen2Config, T.Qwen2ForCausalLM,
                  dict(_DEC, use_sliding_window=True, sliding_window=WINDOW,
                       layer_types=_LAYERS3)),
        "qwen3": (T.Qwen3Config, T.Qwen3ForCausalLM, dict(_DEC, head_dim=16)),
        "gemma2": (T.Gemma2Config, T.Gemma2ForCausalLM,
                   dict(_DEC, head_dim=16, sliding_window=WINDOW, layer_types=_LAYERS3,
                        query_pre_attn_scalar=24, attn_logit_softcapping=1.0,
                        final_logit_softcapping=30.0)),
        "gemma3": (T.Gemma3TextConfig, T.Gemma3ForCausalLM,
                   dict(_DEC, head_dim=16, sliding_window=WINDOW, layer_types=_LAYERS3,
                        query_pre_attn_scalar=24)),
        "gpt2": (T.GPT2Config, T.GPT2LMHeadModel,
                 dict(vocab_size=VOCAB, n_embd=64, n_layer=3, n_head=4, n_positions=128,
                      bos_token_id=1, eos_token_id=2)),
        "gpt_neox": (T.GPTNeoXConfig, T.GPTNeoXForCausalLM,
                     dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96,
                          num_hidden_layers=3, num_attention_heads=4,
                          max_position_embeddings=128, rotary_pct=0.25,
                          use_parallel_residual=True, bos_token_id=1, eos_token_id=2)),
        "phi3": (T.Phi3Config, T.Phi3ForCausalLM, dict(_DEC)),
        "bert": (T.BertConfig, T.BertForMaskedLM,
                 dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96,
                      num_hidden_layers=3, num_attention_heads=4, max_position_embeddings=128,
                      pad_token_id=0)),
    }


FAMILY_NAMES = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "gpt2", "gpt_neox",
                "phi3", "bert")
CAUSAL = tuple(f for f in FAMILY_NAMES if f != "bert")
#: families with sliding-window layers in the tiny configs (window WINDOW)
SLIDING = ("mistral", "qwen2", "gemma2", "gemma3")


def make_tokenizer(folder: str | Path):
    """A byte-level tokenizer (no merges: one token per byte) with ``<bos>`` prepended, saved
    to ``folder``. ids: 0 pad, 1 bos, 2 eos, 3 unk, 4.. bytes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<bos>": 1, "<eos>": 2, "<unk>": 3}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.post_processor = TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>")
    fast.save_pretrained(folder)
    return fast


def build_family(name: str, folder: str | Path, seed: int = 0, perturb: bool = False) -> Path:
    """Save a tiny random model of family ``name`` (weights + config + tokenizer) into
    ``folder``; returns the folder.

    ``perturb``: also add noise to every 1-d parameter (std 0.2 to norm scales, 0.02 to
    biases), which transformers initialises to exactly 1 (Gemma: 0) and 0, so that tests of
    what a tool folds in from the norms (and how it treats biases) can tell a fold from none."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    config_cls, model_cls, kwargs = _families()[name]
    torch.manual_seed(seed)
    cfg = config_cls(**kwargs)
    model = model_cls(cfg).eval()
    with torch.no_grad():       # larger random weights: sharper, more varied patterns
        for p in model.parameters():
            if p.ndim == 2:
                p.mul_(2.0)
        if perturb:
            gen = torch.Generator().manual_seed(seed + 1)
            for pname, p in model.named_parameters():
                if p.ndim == 1:
                    std = 0.02 if pname.endswith("bias") else 0.2
                    p.add_(std * torch.randn(p.shape, generator=gen).to(p.dtype))
    folder = Path(folder)
    model.save_pretrained(folder)
    make_tokenizer(folder)
    return folder


def load_reference(name: str, folder: str | Path):
    """The plain HF model (eager attention) from ``folder``: the independent reference."""
    model_cls = _families()[name][1]
    return model_cls.from_pretrained(folder, attn_implementation="eager").eval()
