"""IOI and greater-than tasks (interp/circuits/standard_tasks.py).

- On SmolLM2-135M (numbers split into single digits): every kept word is one token; clean and
  corrupted rows differ only at the second subject (IOI) / the ``YY`` digits (greater-than);
  the metric equals a loop over the logits written here with the ids read back from the
  prompt tokens; the model does both tasks (clean metric above corrupted).
- On a tiny random GPT-2 whose byte-level BPE tokenizer is built here with GPT-2's number
  behaviour (``" 1732"`` -> ``" 17"``, ``"32"``: one merge per two-digit string, as GPT-2's
  vocabulary has) and a few whole-word names: the two-digit-year branch (the paper's metric),
  and the per-tokenizer word filter. No real GPT-2 tokenizer is available offline here (no
  cached vocab/merges, no network), so this is GPT-2's tokenization of years, not its vocab.
- Refusals: a tokenizer with no one-token names / nouns, one that writes years neither way,
  a task whose clean run does not beat its corrupted run; bad ``n`` / ``seed``.

Measured here (CPU, seed 0): SmolLM2-135M, n=16 (the tests below): IOI logit diff clean 2.45,
corrupted -0.39; greater-than clean .67, corrupted -.57. n=32: IOI 3.22 / -0.06, greater-than
.64 / -.62; Gemma 3 270M, n=32: IOI 5.37 / -0.02, greater-than .69 / -.39.
"""
from __future__ import annotations

import pytest
import torch

import interp
from interp.circuits import greater_than_task, ioi_task
from interp.circuits.standard_tasks import (GT_NOUNS, IOI_NAMES, IOI_OBJECTS, IOI_PLACES,
                                            require_task_works, task_baseline)
from interp.circuits.tasks import PatchingTask
from interp.errors import InputError, Refused

N = 16


# --------------------------------------------------------------------------- helpers

def _differing(task) -> list[list[int]]:
    return [torch.nonzero(task.clean[i] != task.corrupted[i]).flatten().tolist()
            for i in range(task.batch)]


def _ioi_by_loop(task, logits) -> float:
    """logit(IO) - logit(S) at the last position, ids read from the clean prompt tokens."""
    total = 0.0
    for b in range(task.batch):
        io = int(task.clean[b, task.info["io_pos"][b]])
        s = int(task.clean[b, task.info["s1_pos"][b]])
        total += float(logits[b, -1, io] - logits[b, -1, s])
    return total / task.batch


def _gt_digit_by_loop(tok, task, logits) -> float:
    """P(d > Y1) - P(d < Y1) at the last position: Y1 decoded from the clean row's tokens, the
    digit ids from the tokenizer."""
    digit = [tok(str(d), add_special_tokens=False).input_ids for d in range(10)]
    assert all(len(ids) == 1 for ids in digit)
    total = 0.0
    for b in range(task.batch):
        y1 = int(tok.decode(task.clean[b, task.info["yy_pos"][0]]).strip())
        p = torch.softmax(logits[b, -1].double(), -1)
        total += float(sum(p[digit[d][0]] for d in range(y1 + 1, 10))
                       - sum(p[digit[d][0]] for d in range(0, y1)))
    return total / task.batch


def _gt_years_by_loop(tok, task, logits) -> float:
    """P(year > YY) - P(year <= YY), YY decoded from the clean row's year token."""
    ids = {}
    for k in range(100):
        t = tok(f"{k:02d}", add_special_tokens=False).input_ids
        assert len(t) == 1
        ids[k] = t[0]
    total = 0.0
    for b in range(task.batch):
        yy = int(tok.decode(task.clean[b, task.info["yy_pos"][0]]))
        p = torch.softmax(logits[b, -1].double(), -1)
        total += float(sum(p[ids[k]] for k in range(yy + 1, 100))
                       - sum(p[ids[k]] for k in range(0, yy + 1)))
    return total / task.batch


# --------------------------------------------------------------------------- SmolLM2

@pytest.fixture(scope="module")
def smol_tasks(smollm2):
    return ioi_task(smollm2, n=N, seed=0), greater_than_task(smollm2, n=N, seed=0)


def test_kept_words_are_single_tokens(smollm2, smol_tasks):
    tok = smollm2.tokenizer
    ioi, gt = smol_tasks
    for key, full in (("names", IOI_NAMES), ("places", IOI_PLACES), ("objects", IOI_OBJECTS)):
        kept = ioi.info[key]
        assert kept, key
        for word, tid in kept.items():
            assert tok(" " + word, add_special_tokens=False).input_ids == [tid]
        dropped = [w for w in full if w not in kept]
        for word in dropped:
            assert len(tok(" " + word, add_special_tokens=False).input_ids) > 1
    assert len(ioi.info["names"]) == 81          # SmolLM2: 19 of the 100 names split
    assert set(gt.info["nouns"]) <= set(GT_NOUNS)
    for word, tid in gt.info["nouns"].items():
        assert tok(" " + word, add_special_tokens=False).input_ids == [tid]


def test_ioi_rows(smollm2, smol_tasks):
    ioi, _ = smol_tasks
    tok = smollm2.tokenizer
    info = ioi.info
    assert ioi.clean.shape == ioi.corrupted.shape == (N, ioi.clean.shape[1])
    kept = set(info["names"].values())
    for b, diff in enumerate(_differing(ioi)):
        assert diff == [info["s2_pos"][b]]                   # only the second subject
        io, s, c = info["io"][b], info["s"][b], info["c"][b]
        assert len({io, s, c}) == 3 and {io, s, c} <= kept
        row = ioi.clean[b].tolist()
        assert row[info["io_pos"][b]] == io and row.count(io) == 1
        assert row[info["s1_pos"][b]] == row[info["s2_pos"][b]] == s and row.count(s) == 2
        assert int(ioi.corrupted[b, info["s2_pos"][b]]) == c
        # ABBA: IO named first; BABA: S first
        first = min(info["io_pos"][b], info["s1_pos"][b])
        assert (first == info["io_pos"][b]) == (info["order"][b] == "ABBA")
        text = tok.decode(ioi.clean[b])
        assert text.rstrip().endswith(" to")
    assert info["order"].count("ABBA") == N // 2
    assert info["answer"] == info["io"] and info["contrast"] == info["s"]
    assert info["answer_position"] == ioi.clean.shape[1] - 1


def test_ioi_metric_equals_loop(smol_tasks):
    ioi, _ = smol_tasks
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(N, ioi.clean.shape[1], 49152, generator=g, requires_grad=True)
    got = ioi.metric(logits)
    assert got.item() == pytest.approx(_ioi_by_loop(ioi, logits.detach()), abs=1e-5)
    got.backward()                                            # differentiable
    assert logits.grad[:, -1].abs().sum() > 0 and logits.grad[:, :-1].abs().sum() == 0


def test_greater_than_rows_and_metric(smollm2, smol_tasks):
    _, gt = smol_tasks
    tok = smollm2.tokenizer
    assert gt.info["scheme"] == "digit"
    pos = gt.info["yy_pos"]
    assert len(pos) == 2
    for b, diff in enumerate(_differing(gt)):
        assert diff and set(diff) <= set(pos)                # only the YY digits
        yy = gt.info["yy"][b]
        assert 10 <= yy <= 89
        assert tok.decode(gt.clean[b, pos]) == f"{yy:02d}"
        assert tok.decode(gt.corrupted[b, pos]) == "01"
        assert tok.decode(gt.clean[b]).endswith(" to the year 17")
    g = torch.Generator().manual_seed(2)
    logits = 3 * torch.randn(N, gt.clean.shape[1], 49152, generator=g)
    digits = [tok(str(d), add_special_tokens=False).input_ids[0] for d in range(10)]
    logits[:, -1, digits] += 12                    # most of the mass on the digits
    assert gt.metric(logits).item() == pytest.approx(_gt_digit_by_loop(tok, gt, logits),
                                                     abs=1e-5)


def test_smollm2_does_both_tasks(smollm2, smol_tasks):
    ioi, gt = smol_tasks
    b_ioi = require_task_works(smollm2, ioi)
    b_gt = require_task_works(smollm2, gt)
    # measured (n=16, seed 0): IOI 2.45 / -0.39, greater-than .67 / -.57
    assert b_ioi["clean"] > 1.5 and b_ioi["clean"] > b_ioi["corrupted"] + 1.5
    assert abs(b_ioi["corrupted"]) < 1.0
    assert b_gt["clean"] > 0.3 and b_gt["clean"] > b_gt["corrupted"] + 0.5
    with torch.no_grad():
        direct = ioi.metric(smollm2(ioi.clean)).item()
    assert direct == pytest.approx(b_ioi["clean"], abs=1e-4)
    assert task_baseline(smollm2, gt) == b_gt


def test_refuses_a_task_the_model_does_not_do(smollm2):
    ioi = ioi_task(smollm2, n=2, seed=0)
    same = PatchingTask(ioi.clean, ioi.clean, ioi.metric, name="ioi")
    with pytest.raises(Refused, match="does not do the ioi task"):
        require_task_works(smollm2, same)
    with pytest.raises(InputError):
        require_task_works(smollm2, ioi, margin=-1)


def test_seeds_reproducible(smollm2, smol_tasks):
    ioi, gt = smol_tasks
    again = ioi_task(smollm2, n=N, seed=0)
    assert torch.equal(again.clean, ioi.clean) and torch.equal(again.corrupted, ioi.corrupted)
    assert torch.equal(greater_than_task(smollm2, n=N, seed=0).clean, gt.clean)
    assert not torch.equal(ioi_task(smollm2, n=N, seed=1).clean, ioi.clean)
    assert not torch.equal(greater_than_task(smollm2, n=N, seed=1).clean, gt.clean)
    assert torch.equal(ioi_task(smollm2, n=4, seed=0).clean, ioi.clean[:4])


@pytest.mark.parametrize("n", [0, -3, 2.5, "8", True])
def test_bad_n(smollm2, n):
    for build in (ioi_task, greater_than_task):
        with pytest.raises(InputError, match="n must be"):
            build(smollm2, n=n)
    with pytest.raises(InputError, match="seed"):
        ioi_task(smollm2, n=2, seed=-1)


def test_bad_templates(smollm2):
    with pytest.raises(InputError, match="template"):
        ioi_task(smollm2, n=2, templates=["[A] met [B]."])
    one = ioi_task(smollm2, n=4, templates=["Then, [B] and [A] went to the [PLACE]. [B] gave a "
                                            "[OBJECT] to"])
    assert "went to the" in one.info["example"]


# --------------------------------------------------------------------------- GPT-2 style BPE

_WORDS = ("Mary", "John", "Sarah", "James", "Paul", "Lisa", "store", "school", "drink", "ring",
          "war", "siege")


def _gpt2_style_tokenizer(folder, digit_pairs=range(100), words=_WORDS):
    """A byte-level BPE saved to ``folder``: bytes, then merges " 1" + "7" -> " 17", one token
    per two-digit string in ``digit_pairs``, and one token per ``" " + word``; ``<bos>``
    first."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<bos>": 1, "<eos>": 2, "<unk>": 3}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    merges = []

    def merge(a, b):
        merges.append((a, b))
        vocab.setdefault(a + b, len(vocab))

    merge("Ġ", "1")
    merge("Ġ1", "7")
    for k in digit_pairs:
        merge(*f"{k:02d}")
    for w in words:
        piece = "Ġ"
        for ch in w:
            if (piece, ch) not in merges:
                merge(piece, ch)
            piece += ch
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.post_processor = TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>")
    fast.save_pretrained(folder)
    return fast


def _tiny_gpt2(folder, **kw):
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = _gpt2_style_tokenizer(folder, **kw)
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=64,
                     bos_token_id=1, eos_token_id=2)
    GPT2LMHeadModel(cfg).eval().save_pretrained(folder)
    return interp.load_model(folder)


@pytest.fixture(scope="module")
def gpt2_tiny(tmp_path_factory):
    return _tiny_gpt2(tmp_path_factory.mktemp("gt-gpt2"))


def test_gpt2_style_tokenizer_is_gpt2_like(gpt2_tiny):
    tok = gpt2_tiny.tokenizer
    assert tok.convert_ids_to_tokens(tok(" 1732", add_special_tokens=False).input_ids) == \
        ["Ġ17", "32"]
    assert tok.convert_ids_to_tokens(tok(" Mary", add_special_tokens=False).input_ids) == \
        ["ĠMary"]


def test_greater_than_two_digit_years(gpt2_tiny):
    tok = gpt2_tiny.tokenizer
    gt = greater_than_task(gpt2_tiny, n=12, seed=3)
    assert gt.info["scheme"] == "two-digit"
    assert set(gt.info["nouns"]) == {"war", "siege"}          # the filter follows the tokenizer
    assert len(gt.info["yy_pos"]) == 1
    for b, diff in enumerate(_differing(gt)):
        assert diff == gt.info["yy_pos"]                       # the one YY token
        yy = gt.info["yy"][b]
        assert 2 <= yy <= 98
        assert tok.decode(gt.clean[b, diff]) == f"{yy:02d}"
        assert tok.decode(gt.corrupted[b, diff]) == "01"
    g = torch.Generator().manual_seed(4)
    logits = 4 * torch.randn(12, gt.clean.shape[1], gpt2_tiny.cfg.d_vocab, generator=g)
    logits[:, -1, [tok(f"{k:02d}", add_special_tokens=False).input_ids[0]
                   for k in range(100)]] += 8      # most of the mass on the years
    assert gt.metric(logits).item() == pytest.approx(_gt_years_by_loop(tok, gt, logits),
                                                     abs=1e-5)
    b = task_baseline(gpt2_tiny, gt)
    assert set(b) == {"clean", "corrupted"}


def test_ioi_filter_per_tokenizer(gpt2_tiny):
    ioi = ioi_task(gpt2_tiny, n=6, seed=0)
    # "Sara" too: the merges that make " Sarah" one token pass through " Sara"
    assert set(ioi.info["names"]) == {"Mary", "John", "Sarah", "Sara", "James", "Paul", "Lisa"}
    assert set(ioi.info["places"]) == {"store", "school"}
    assert set(ioi.info["objects"]) == {"drink", "ring"}
    for b, diff in enumerate(_differing(ioi)):
        assert diff == [ioi.info["s2_pos"][b]]
    logits = torch.randn(6, ioi.clean.shape[1], gpt2_tiny.cfg.d_vocab)
    assert ioi.metric(logits).item() == pytest.approx(_ioi_by_loop(ioi, logits), abs=1e-5)


def test_refusals_by_tokenizer(tmp_path):
    # years: two-digit tokens for only some YY -> neither scheme
    some = _tiny_gpt2(tmp_path / "some", digit_pairs=range(50))
    with pytest.raises(Refused, match="neither"):
        greater_than_task(some, n=2)
    # no one-token name / noun (a byte-level tokenizer without merges: years are digits)
    bare = _tiny_gpt2(tmp_path / "bare", words=("Mary", "John"))
    with pytest.raises(Refused, match="one-token names"):
        ioi_task(bare, n=2)
    with pytest.raises(Refused, match="no noun"):
        greater_than_task(bare, n=2)


def test_encoder_refused(minilm):
    with pytest.raises(Refused, match="causal"):
        ioi_task(minilm, n=2)
