"""The standard circuit tasks of the literature as :class:`~interp.circuits.tasks.PatchingTask`:
indirect object identification (IOI, Wang et al. 2022) and greater-than (Hanna et al. 2023).

Architecture
------------
- **Word lists per tokenizer.** The names, places, objects (IOI) and nouns (greater-than) live
  in this module (no downloads). A word is kept for a model only where ``" " + word`` is one
  token of *its* tokenizer (:func:`single_token_words`), so each tokenizer gets its own lists;
  the task's ``info`` records what was kept.
- **Text first, then checked tokens.** Each row is written as text and tokenized with the
  model's own convention (BOS where the model prepends one; :func:`interp.probes.common.encode`).
  A row is kept only if clean and corrupted tokenize to the batch's one length and differ
  exactly where the corruption is (IOI: the second subject; greater-than: the ``YY`` tokens);
  otherwise it is redrawn. Batches are rectangular without padding.
- **Metric.** A differentiable function of ``logits [batch, seq, vocab]`` read at the last
  position (see :mod:`interp.circuits.metrics`); higher = clean behaviour.
- **Does the model do it?** :func:`task_baseline` gives the clean and corrupted metric (it is
  :func:`interp.circuits.metrics.baseline`); :func:`require_task_works` raises
  :class:`~interp.errors.Refused` when the clean metric is not above the corrupted one, so a
  circuit search does not explain noise. The builders do not run the model; call the check.

Measured here (CPU, n=32, seed 0; clean / corrupted): SmolLM2-135M IOI logit diff 3.22 / -0.06,
greater-than (digit level) .64 / -.62; Gemma 3 270M IOI 5.37 / -0.02, greater-than .69 / -.39.
One-token words kept: SmolLM2 81 of 100 names, 8/8 places, 8/8 objects, 74 of 76 nouns; Gemma 3
all of them. Six of the fifteen templates share the most common length for both tokenizers.
"""
from __future__ import annotations

from typing import Sequence

import torch

from interp.circuits.metrics import Metric, _rows, baseline, logit_diff_metric
from interp.circuits.tasks import PatchingTask
from interp.errors import InputError, Refused
from interp.models.loading import ensure_info
from interp.probes.common import check_tokens, encode
from interp.tasks._sampling import check_int, generator

#: IOI templates of Wang et al. (2022; the paper's dataset code, ``BABA_TEMPLATES``), cut
#: before the final indirect object: ``[B]`` is the subject S (named twice), ``[A]`` the
#: indirect object IO. This is the BABA order; ABBA swaps the first ``[B]`` and ``[A]``.
IOI_TEMPLATES: tuple[str, ...] = (
    "Then, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to",
    "Then, [B] and [A] had a lot of fun at the [PLACE]. [B] gave a [OBJECT] to",
    "Then, [B] and [A] were working at the [PLACE]. [B] decided to give a [OBJECT] to",
    "Then, [B] and [A] were thinking about going to the [PLACE]. [B] wanted to give a "
    "[OBJECT] to",
    "Then, [B] and [A] had a long argument, and afterwards [B] said to",
    "After [B] and [A] went to the [PLACE], [B] gave a [OBJECT] to",
    "When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give it to",
    "When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give the [OBJECT] to",
    "While [B] and [A] were working at the [PLACE], [B] gave a [OBJECT] to",
    "While [B] and [A] were commuting to the [PLACE], [B] gave a [OBJECT] to",
    "After the lunch, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to",
    "Afterwards, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to",
    "Then, [B] and [A] had a long argument. Afterwards [B] said to",
    "The [PLACE] [B] and [A] went to had a [OBJECT]. [B] gave it to",
    "Friends [B] and [A] found a [OBJECT] at the [PLACE]. [B] gave it to",
)

#: First names of the IOI dataset code (common US first names), filtered per tokenizer.
IOI_NAMES: tuple[str, ...] = (
    "Michael", "Christopher", "Jessica", "Matthew", "Ashley", "Jennifer", "Joshua", "Amanda",
    "Daniel", "David", "James", "Robert", "John", "Joseph", "Andrew", "Ryan", "Brandon",
    "Jason", "Justin", "Sarah", "William", "Jonathan", "Stephanie", "Brian", "Nicole",
    "Nicholas", "Anthony", "Heather", "Eric", "Elizabeth", "Adam", "Megan", "Melissa", "Kevin",
    "Steven", "Thomas", "Timothy", "Christina", "Kyle", "Rachel", "Laura", "Lauren", "Amber",
    "Brittany", "Danielle", "Richard", "Kimberly", "Jeffrey", "Amy", "Crystal", "Michelle",
    "Tiffany", "Jeremy", "Benjamin", "Mark", "Emily", "Aaron", "Charles", "Rebecca", "Jacob",
    "Stephen", "Patrick", "Sean", "Erin", "Zachary", "Jamie", "Kelly", "Samantha", "Nathan",
    "Sara", "Dustin", "Paul", "Angela", "Tyler", "Scott", "Katherine", "Andrea", "Gregory",
    "Erica", "Mary", "Travis", "Lisa", "Kenneth", "Bryan", "Lindsey", "Kristen", "Jose",
    "Alexander", "Jesse", "Katie", "Lindsay", "Shannon", "Vanessa", "Courtney", "Christine",
    "Alicia", "Cody", "Allison", "Bradley", "Samuel",
)
#: Places and objects of the IOI dataset code.
IOI_PLACES: tuple[str, ...] = ("store", "garden", "restaurant", "school", "hospital", "office",
                               "house", "station")
IOI_OBJECTS: tuple[str, ...] = ("ring", "kiss", "bone", "basketball", "computer", "necklace",
                                "drink", "snack")

#: Event nouns for the greater-than prompts: the paper's example "war" and nouns after the
#: list of the greater-than dataset (Hanna et al. 2023, ``potential_nouns.txt``; not verbatim),
#: filtered per tokenizer.
GT_NOUNS: tuple[str, ...] = (
    "war", "abduction", "accord", "affair", "agreement", "assessment", "attack", "campaign",
    "captivity", "case", "challenge", "chaos", "clash", "collaboration", "coma", "competition",
    "confrontation", "conspiracy", "construction", "consultation", "contract", "convention",
    "cooperation", "custody", "deal", "decline", "development", "dispute", "dynasty",
    "effort", "employment", "engagement", "epidemic", "evaluation", "exchange", "existence",
    "expansion", "expedition", "fall", "friendship", "growth", "hardship", "illness",
    "imprisonment", "insurgency", "invasion", "investigation", "journey", "kingdom", "marriage",
    "negotiation", "occupation", "operation", "outbreak", "pilgrimage", "plague", "practice",
    "process", "program", "project", "quest", "reign", "relationship", "riot", "rivalry",
    "romance", "rule", "siege", "study", "tour", "tradition", "treaty", "trial", "trip",
    "voyage", "work",
)

_PROMPT = "The {noun} lasted from the year"       # + " 17YY to the year 17"
_MAX_TRIES = 50                                     # draws per kept row before refusing


def single_token_words(tokenizer, words: Sequence[str]) -> dict[str, int]:
    """``{word: token id}`` for the words whose space-prefixed form ``" " + word`` is exactly
    one token of ``tokenizer`` (in the order of ``words``; others left out)."""
    kept = {}
    for word in words:
        ids = tokenizer(" " + word, add_special_tokens=False).input_ids
        if len(ids) == 1:
            kept[word] = int(ids[0])
    return kept


def _lm_tokenizer(model, what: str):
    """The tokenizer of a causal LM with a real head, else InputError / Refused."""
    tok = model.tokenizer
    if tok is None:
        raise InputError(f"{what} needs a model with a tokenizer (it writes text prompts)")
    info = ensure_info(model)
    if not info.causal or not info.has_lm_head:
        raise Refused(f"{what} needs a causal language model with a trained LM head; "
                      f"{info.name} is {'an encoder' if not info.causal else 'without one'}")
    return tok


def _fill(template: str, a: str, b: str, s2: str, place: str, obj: str, abba: bool) -> str:
    """The template with IO ``a``, subject ``b`` (first mention) and ``s2`` (second mention:
    ``b`` clean, the third name corrupted). ABBA puts ``a`` before ``b`` in the first pair."""
    first, second = ("[A]", "[B]") if abba else ("[B]", "[A]")
    head, rest = template.split("[B] and [A]", 1)
    text = f"{head}{first} and {second}{rest}"
    text = text.replace("[A]", a).replace("[B]", b, 1).replace("[B]", s2)
    return text.replace("[PLACE]", place).replace("[OBJECT]", obj)


def _choice(seq: Sequence, gen: torch.Generator, k: int = 1) -> list:
    """``k`` distinct items of ``seq`` drawn uniformly with ``gen``."""
    return [seq[int(i)] for i in torch.randperm(len(seq), generator=gen)[:k]]


def ioi_task(model, n: int = 32, seed: int = 0,
             templates: Sequence[str] | None = None) -> PatchingTask:
    """Indirect object identification (Wang et al. 2022, "Interpretability in the Wild").

    Clean rows are the paper's templates (:data:`IOI_TEMPLATES`) filled with two names, a
    place and an object, e.g. ``"Then, Mary and John went to the store. John gave a drink
    to"`` -> `` Mary``: rows alternate ABBA (even rows) and BABA (odd rows). The corrupted row
    is the paper's ABC: the second mention of the subject S replaced by a third name C, so
    nothing in the prompt singles out the IO any more. Names, places and objects are kept
    only where they are one token with their leading space for this model's tokenizer.

    Rows come from the largest group of ``templates`` that tokenize to one length (with
    one-token fill-ins every row of a template has one length), so no padding is needed; a
    drawn row whose clean and corrupted tokens are not that length or differ anywhere but at
    the second subject is redrawn.

    Metric: ``logit(IO) - logit(S)`` at the last position, mean over the batch
    (:func:`~interp.circuits.metrics.logit_diff_metric`).

    Args:
        model: a causal LM with a tokenizer.
        n: rows (int >= 1).
        seed: the draw (names, places, objects, templates; CPU generator).
        templates: BABA templates with ``[A]`` (IO), ``[B]`` (S, twice: ``"[B] and [A]"``
            first), ``[PLACE]``, ``[OBJECT]``; default :data:`IOI_TEMPLATES`.

    Returns:
        A task with ``clean``/``corrupted`` ``[n, seq]`` and ``info``: ``io``, ``s``, ``c``
        (``[n]`` token id lists), ``io_pos``, ``s1_pos``, ``s2_pos`` (``[n]`` positions),
        ``answer``/``contrast``/``answer_position`` (= ``io``, ``s``, ``seq - 1``: the
        answer-token convention of :class:`~interp.circuits.tasks.PatchingTask`),
        ``order`` (``"ABBA"``/``"BABA"`` per row), ``template`` (index into ``templates``
        per row), ``templates``, ``names``/``places``/``objects`` (the kept words),
        ``example``/``corrupted_example`` (row 0 as text).

    Raises:
        InputError: bad ``n``, ``seed`` or templates; a model without a tokenizer.
        Refused: an encoder or a model without an LM head; a tokenizer with fewer than 3
            one-token names (or no one-token place or object); no row passing the checks.
    """
    check_int("n", n, 1)
    gen = generator(seed)
    tok = _lm_tokenizer(model, "ioi_task")
    templates = tuple(IOI_TEMPLATES if templates is None else templates)
    for t in templates:
        if not isinstance(t, str) or "[B] and [A]" not in t or t.count("[B]") != 2 \
                or t.count("[A]") != 1:
            raise InputError(f"an IOI template needs '[B] and [A]' first, one [A] and two [B] "
                             f"(the subject again), got {t!r}")
    if not templates:
        raise InputError("templates is empty")
    names = single_token_words(tok, IOI_NAMES)
    places = single_token_words(tok, IOI_PLACES)
    objects = single_token_words(tok, IOI_OBJECTS)
    if len(names) < 3 or not places or not objects:
        raise Refused(f"ioi_task: this tokenizer has {len(names)} one-token names (needs 3), "
                      f"{len(places)} places and {len(objects)} objects (needs 1 each)")
    name_list, place_list, obj_list = list(names), list(places), list(objects)

    # one length for the batch: the largest group of templates with one token length (ties:
    # the shorter length)
    a0, b0 = name_list[:2]
    lengths = [len(encode(model, _fill(t, a0, b0, b0, place_list[0], obj_list[0], False)))
               for t in templates]
    best = max(set(lengths), key=lambda L: (lengths.count(L), -L))
    group = [i for i, L in enumerate(lengths) if L == best]

    rows, corr_rows, meta = [], [], []
    tries = 0
    while len(rows) < n:
        tries += 1
        if tries > _MAX_TRIES * n:
            raise Refused(f"ioi_task: only {len(rows)} of {n} rows tokenize to one length with "
                          f"clean and corrupted differing only at the second subject; this "
                          f"tokenizer merges the names with their neighbours")
        ti = group[int(torch.randint(len(group), (1,), generator=gen))]
        io, s, c = _choice(name_list, gen, 3)
        place, obj = _choice(place_list, gen)[0], _choice(obj_list, gen)[0]
        abba = len(rows) % 2 == 0
        clean = encode(model, _fill(templates[ti], io, s, s, place, obj, abba))
        corr = encode(model, _fill(templates[ti], io, s, c, place, obj, abba))
        if len(clean) != best or len(corr) != best:
            continue
        diff = [i for i in range(best) if clean[i] != corr[i]]
        s_at = [i for i in range(best) if clean[i] == names[s]]
        io_at = [i for i in range(best) if clean[i] == names[io]]
        if len(s_at) != 2 or len(io_at) != 1 or diff != [s_at[1]] \
                or corr[s_at[1]] != names[c]:
            continue
        rows.append(clean)
        corr_rows.append(corr)
        meta.append((names[io], names[s], names[c], io_at[0], s_at[0], s_at[1],
                     "ABBA" if abba else "BABA", ti))
    io_ids, s_ids, c_ids, io_pos, s1_pos, s2_pos, order, which = map(list, zip(*meta))
    clean_t = check_tokens(model, torch.tensor(rows))
    corr_t = check_tokens(model, torch.tensor(corr_rows))
    fn = logit_diff_metric([best - 1], torch.tensor(io_ids)[:, None],
                           torch.tensor(s_ids)[:, None])
    return PatchingTask(clean_t, corr_t, fn, name="ioi",
                        info={"io": io_ids, "s": s_ids, "c": c_ids, "io_pos": io_pos,
                              "s1_pos": s1_pos, "s2_pos": s2_pos, "order": order,
                              "template": which, "templates": list(templates),
                              "names": names, "places": places, "objects": objects,
                              "answer": io_ids, "contrast": s_ids, "answer_position": best - 1,
                              "metric": "logit(IO) - logit(S) at the last position",
                              "example": tok.decode(rows[0]),
                              "corrupted_example": tok.decode(corr_rows[0])})


def _year_scheme(tok) -> tuple[str, list[int], list[int]]:
    """How the tokenizer writes ``" 17YY"``: ``("two-digit", ids of " 17", [100] ids of
    "00".."99")`` (GPT-2 style) or ``("digit", ids of " 17", [10] ids of "0".."9")`` (numbers
    split into single digits); Refused otherwise."""
    plain = lambda s: tok(s, add_special_tokens=False).input_ids     # noqa: E731
    head = plain(" 17")
    tails = [plain(f" 17{yy:02d}") for yy in range(100)]
    if all(t[:len(head)] == head and len(t) == len(head) + 1 for t in tails):
        ids = [t[-1] for t in tails]
        if len(set(ids)) == 100:
            return "two-digit", head, ids
    if all(t[:len(head)] == head and len(t) == len(head) + 2 for t in tails):
        digits = [tails[d][-1] for d in range(10)]                    # " 170d"
        if len(set(digits)) == 10 and all(tails[yy][-2:] == [digits[yy // 10], digits[yy % 10]]
                                          for yy in range(100)):
            return "digit", head, digits
    raise Refused(f"greater_than_task: this tokenizer writes ' 1732' as {plain(' 1732')}: "
                  f"neither one token per two-digit year after ' 17' (GPT-2) nor one token "
                  f"per digit, so the next-token metric is not defined")


def signed_mass_metric(position: int, ids: torch.Tensor, weights: torch.Tensor) -> Metric:
    """Mean over rows of ``sum_k weights[b, k] * P(ids[k])`` at ``position`` (probabilities
    from the softmax over the whole vocabulary): probability mass on the ``+1`` tokens minus
    mass on the ``-1`` tokens.

    Args:
        position: the query position (one for every row).
        ids: ``[K]`` token ids.
        weights: ``[batch, K]`` weights (``+1`` / ``-1`` / ``0``).

    Returns:
        ``logits [batch, seq, vocab] -> scalar tensor``.
    """
    ids, weights = torch.as_tensor(ids), torch.as_tensor(weights, dtype=torch.float32)

    def fn(logits: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(_rows(logits, [position]), dim=-1)[:, 0]          # [b, V]
        mass = probs[:, ids.to(logits.device)]                                  # [b, K]
        return (mass * weights.to(logits.device)).sum(-1).mean()

    return fn


def greater_than_task(model, n: int = 32, seed: int = 0) -> PatchingTask:
    """Greater-than (Hanna et al. 2023, "How does GPT-2 compute greater-than?").

    Clean rows ``"The {noun} lasted from the year 17YY to the year 17"``, corrupted rows the
    same with ``YY = 01``. Nouns (:data:`GT_NOUNS`, after the paper's list) are kept where
    ``" " + noun`` is one token for this tokenizer, so every row has one length; a row whose
    tokens are not the expected ``[prompt] [" 17" YY] [" to the year 17"]`` is redrawn.
    How the metric reads the next token depends on the tokenizer (:func:`_year_scheme`):

    - **two-digit years** (GPT-2 style: ``" 1732"`` = ``" 17"``, ``"32"``): the paper's
      metric, probability mass on the years ``> YY`` minus mass on the years ``<= YY`` (the
      100 tokens ``"00".."99"``) at the last position; ``YY`` drawn from 02..98 as in the
      paper;
    - **single digits** (SmolLM2, Qwen2.5, Gemma 3 split numbers into digits): the next token
      is the tens digit ``d``; the digit-level adaptation is ``P(d > Y1) - P(d < Y1)`` at the
      last position, ``Y1`` = tens digit of ``YY`` (the equal digit counts for neither side);
      ``Y1`` drawn from 1..8 (0 and 9 leave one side empty), ``YY`` from 10..89.

    The corrupted run is scored with the clean row's weights (its ``YY`` is 01, so a model that
    reads the year puts its mass above 01: low metric).

    Args:
        model: a causal LM with a tokenizer.
        n: rows (int >= 1).
        seed: the draw (nouns, years; CPU generator).

    Returns:
        A task with ``clean``/``corrupted`` ``[n, seq]`` and ``info``: ``scheme``
        (``"two-digit"`` / ``"digit"``), ``yy`` (``[n]`` ints), ``yy_pos`` (the positions of
        the ``YY`` tokens, one or two, same for every row), ``answer_ids`` (the ``[K]`` token
        ids the metric reads), ``nouns`` (the kept nouns), ``example``/``corrupted_example``.
        No ``info["answer"]``: the metric is a mass over many tokens, not one answer.

    Raises:
        InputError: bad ``n`` or ``seed``; a model without a tokenizer.
        Refused: an encoder or a model without an LM head; a tokenizer that writes years
            neither way; no one-token noun; no row passing the checks.
    """
    check_int("n", n, 1)
    gen = generator(seed)
    tok = _lm_tokenizer(model, "greater_than_task")
    scheme, head17, answer_ids = _year_scheme(tok)
    nouns = single_token_words(tok, GT_NOUNS)
    if not nouns:
        raise Refused("greater_than_task: no noun of GT_NOUNS is one token for this tokenizer")
    plain = lambda s: tok(s, add_special_tokens=False).input_ids     # noqa: E731
    tail = plain(" to the year 17")
    years = list(range(2, 99)) if scheme == "two-digit" else list(range(10, 90))
    noun_list = list(nouns)

    rows, corr_rows, yys = [], [], []
    length = yy_pos = None
    tries = 0
    while len(rows) < n:
        tries += 1
        if tries > _MAX_TRIES * n:
            raise Refused(f"greater_than_task: only {len(rows)} of {n} rows tokenize as "
                          f"[prompt] [' 17' YY] [' to the year 17'] for this tokenizer")
        noun = _choice(noun_list, gen)[0]
        yy = years[int(torch.randint(len(years), (1,), generator=gen))]
        prompt = _PROMPT.format(noun=noun)
        head = encode(model, prompt)
        clean = encode(model, f"{prompt} 17{yy:02d} to the year 17")
        corr = encode(model, f"{prompt} 1701 to the year 17")
        expect = head + plain(f" 17{yy:02d}") + tail
        expect_c = head + plain(" 1701") + tail
        if clean != expect or corr != expect_c or (length is not None and len(clean) != length):
            continue
        if length is None:
            length = len(clean)
            k = 1 if scheme == "two-digit" else 2
            yy_pos = list(range(len(head) + len(head17), len(head) + len(head17) + k))
        rows.append(clean)
        corr_rows.append(corr)
        yys.append(yy)

    yy_t = torch.tensor(yys)
    if scheme == "two-digit":
        weights = torch.where(torch.arange(100)[None, :] > yy_t[:, None], 1.0, -1.0)  # [n, 100]
    else:
        sign = torch.arange(10)[None, :] - (yy_t // 10)[:, None]                       # [n, 10]
        weights = torch.sign(sign).float()
    fn = signed_mass_metric(length - 1, torch.tensor(answer_ids), weights)
    return PatchingTask(check_tokens(model, torch.tensor(rows)),
                        check_tokens(model, torch.tensor(corr_rows)), fn, name="greater_than",
                        info={"scheme": scheme, "yy": yys, "yy_pos": yy_pos,
                              "answer_ids": list(answer_ids), "nouns": nouns,
                              "metric": ("P(year > YY) - P(year <= YY)" if scheme == "two-digit"
                                         else "P(d > Y1) - P(d < Y1), d = next (tens) digit"),
                              "example": tok.decode(rows[0]),
                              "corrupted_example": tok.decode(corr_rows[0])})


def task_baseline(model, task: PatchingTask) -> dict[str, float]:
    """``{"clean": metric of the clean run, "corrupted": metric of the corrupted run}`` (one
    forward each; = :func:`interp.circuits.metrics.baseline`)."""
    return baseline(model, task.checked(model))


def require_task_works(model, task: PatchingTask, margin: float = 0.0) -> dict[str, float]:
    """The baseline of ``task`` on ``model`` (:func:`task_baseline`), or
    :class:`~interp.errors.Refused` when the clean metric is not above the corrupted one by
    more than ``margin``: then the model does not do the task, and patching or circuit
    discovery on it would explain noise. Call it before a circuit search on a new model."""
    if not isinstance(margin, (int, float)) or isinstance(margin, bool) or margin < 0:
        raise InputError(f"margin must be a number >= 0, got {margin!r}")
    b = task_baseline(model, task)
    if not b["clean"] > b["corrupted"] + margin:
        raise Refused(f"{ensure_info(model).name} does not do the {task.name} task: clean "
                      f"metric {b['clean']:.4g} is not above the corrupted {b['corrupted']:.4g}"
                      f"{f' by more than {margin:g}' if margin else ''}; a circuit found on it "
                      f"would explain noise (use a larger model, or check the prompts in "
                      f"task.info)")
    return b
