"""Key-value lookup prompts: answers match the table, keys are unique, rows are equal length."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from interp.tasks import KVLookupConfig


class WordTokenizer:
    """A stand-in HF tokenizer: one token per whitespace-led word or punctuation mark; words
    listed in ``split`` become two tokens."""

    bos_token_id = 0

    def __init__(self, split=()):
        self.vocab: dict[str, int] = {}
        self.split = set(split)

    def _id(self, piece: str) -> int:
        return self.vocab.setdefault(piece, len(self.vocab) + 1)

    def __call__(self, text, add_special_tokens=False):
        import re

        ids = []
        for piece in re.findall(r" ?[A-Za-z]+|[^A-Za-z ]", text):
            if piece.strip() in self.split:
                ids += [self._id(piece[:2]), self._id(piece[2:])]
            else:
                ids.append(self._id(piece))
        return SimpleNamespace(input_ids=ids)


def _check(batch, cfg: KVLookupConfig, colon: int) -> None:
    b = cfg.batch
    tokens, answers, keys, values, query = batch
    assert tokens.shape[0] == b and tokens.dtype == torch.long
    assert answers.shape == (b,) and keys.shape == values.shape == (b, cfg.n_pairs)
    rows = torch.arange(b)
    assert torch.equal(answers, values[rows, query])                  # answer = stored value
    assert torch.equal(tokens[:, -2], keys[rows, query])              # the query is a stored key
    assert (tokens[:, -1] == colon).all()
    for r in range(b):
        assert len(set(keys[r].tolist())) == cfg.n_pairs             # unique keys
        assert len(set(values[r].tolist())) == cfg.n_pairs
        assert set(keys[r].tolist()).isdisjoint(values[r].tolist())
        seq = tokens[r].tolist()
        # the table is in the prompt: each key followed by ":" and its own value
        for k, v in zip(keys[r].tolist(), values[r].tolist()):
            i = seq.index(k)
            assert seq[i + 1] == colon and seq[i + 2] == v
        # every earlier occurrence of the queried key is followed by its value
        qk = keys[r, query[r]].item()
        pos = [i for i, t in enumerate(seq[:-2]) if t == qk]
        assert len(pos) == 1 and seq[pos[0] + 2] == answers[r].item()


@pytest.mark.parametrize("n_pairs,n_shots", [(1, 0), (4, 3), (8, 6), (12, 0)],
                         ids=lambda x: str(x))
def test_kv_lookup_fake_tokenizer(n_pairs, n_shots):
    tok = WordTokenizer()
    cfg = KVLookupConfig(n_pairs=n_pairs, n_shots=n_shots, batch=32)
    batch = cfg.build(tok, seed=3)
    _check(batch, cfg, colon=tok(":").input_ids[0])
    header = len(tok(cfg.header).input_ids)
    assert batch.tokens.shape[1] == 1 + header + cfg.seq_len
    assert (batch.tokens[:, 0] == tok.bos_token_id).all()
    again = cfg.build(tok, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(batch, again))      # seeded
    other = cfg.build(tok, seed=4)
    assert not torch.equal(batch.tokens, other.tokens)


def test_kv_lookup_queries_cover_all_positions():
    batch = KVLookupConfig(n_pairs=4, n_shots=2, batch=200).build(WordTokenizer(), seed=0)
    assert set(batch.query.tolist()) == {0, 1, 2, 3}


def test_kv_lookup_errors():
    with pytest.raises(ValueError, match=r"\['bread'\] are not single tokens"):
        KVLookupConfig(n_pairs=2, n_shots=0).build(WordTokenizer(split={"bread"}), seed=0)
    with pytest.raises(ValueError, match="n_shots"):
        KVLookupConfig(n_pairs=3, n_shots=3)
    with pytest.raises(ValueError, match="at least"):
        KVLookupConfig(n_pairs=5, n_shots=0, values=("A", "B"))
    with pytest.raises(ValueError, match="distinct"):
        KVLookupConfig(n_pairs=2, n_shots=0, values=("A", "A")).build(WordTokenizer(), 0)


def test_kv_lookup_config_strict():
    from interp.config import ConfigError, from_dict

    cfg = from_dict(KVLookupConfig, {"n_pairs": 4, "n_shots": 2, "values": ["x", "y", "z", "w"]})
    assert cfg.values == ("x", "y", "z", "w")
    with pytest.raises(ConfigError, match="n_pair"):
        from_dict(KVLookupConfig, {"n_pair": 4})


def test_kv_lookup_smollm2_tokenizer(smollm2):
    """The default word lists are single tokens for SmolLM2, and the prompt reads as text."""
    tok = smollm2.tokenizer
    cfg = KVLookupConfig(n_pairs=8, n_shots=6, batch=16)
    batch = cfg.build(tok, seed=0)
    _check(batch, cfg, colon=tok(":", add_special_tokens=False).input_ids[0])
    text = tok.decode(batch.tokens[0, 1:])
    assert text.startswith("Codes:\n ") and text.endswith(":")
    assert tok.decode(batch.answers[:1]).startswith(" ")
    assert text.count(",") == cfg.n_pairs - 1 + cfg.n_shots
