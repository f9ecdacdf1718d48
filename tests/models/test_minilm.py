"""minilm-l6 through the bridge equals HF BertModel (the encoder alone, no LM head)."""
from __future__ import annotations

import torch

from interp.models.pretrained import load_bert_encoder
from interp.models.registry import model_path


def test_encoder_hidden_states_and_patterns_match_bertmodel(minilm):
    ref_model = load_bert_encoder(model_path("minilm-l6")).eval()
    tok = minilm.tokenizer
    batch = tok(["Attention sinks live on the first token.", "Short one."],
                return_tensors="pt", padding=True)
    with torch.no_grad():
        ref = ref_model(**batch, output_hidden_states=True, output_attentions=True)
    for row in range(2):
        n = int(batch.attention_mask[row].sum())
        ids = batch.input_ids[row:row + 1, :n]        # unpadded: the bridge sees no mask
        with torch.no_grad():
            _, got = minilm.run_with_cache(ids)
        for layer in range(6):
            hs = got[f"blocks.{layer}.hook_resid_post"]
            assert (hs - ref.hidden_states[layer + 1][row:row + 1, :n]).abs().max() < 1e-4
            pat = got[f"blocks.{layer}.attn.hook_pattern"]
            ref_pat = ref.attentions[layer][row:row + 1, :, :n, :n]
            # the padded reference row renormalises over the same n keys (pads get 0)
            assert pat.shape == (1, 12, n, n)
            assert (pat - ref_pat).abs().max() < 1e-5


def test_minilm_facts(minilm):
    cfg = minilm.cfg
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads) == (6, 384, 12)
    assert not minilm.interp_info.causal
    assert not minilm.interp_info.has_lm_head   # the checkpoint ships no MLM head
    ids = minilm.tokenizer("hello world").input_ids
    assert minilm.tokenizer.convert_ids_to_tokens(ids)[0] == "[CLS]"
    assert minilm.tokenizer.convert_ids_to_tokens(ids)[-1] == "[SEP]"
