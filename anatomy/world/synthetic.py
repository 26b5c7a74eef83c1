"""Plants that make the miniworld exhibit all three kinds of memorization, and a copying probe.

Prashanth et al. (2024, "Recite, Reconstruct, Recollect", §3) sort memorized samples (a
32-token prompt whose greedy 32-token continuation is reproduced exactly) by rule: the
continuation occurs more than 5 times in the training stream (``sequence_duplicates``, exact
matches): *recitation*; else the decoded sample is templated (``is_incrementing`` or
``is_repeating``, ``filters/pattern.py``): *reconstruction*; else *recollection*.

A 5M-parameter model trained on a few million tokens reproduces only what it has seen many
times: it learned no in-context copying from repeated text, and no rare word-to-word
associations, within the build's budget (measured: README, The miniworld). What it does learn
is a passage seen many times *with small variations*, as boilerplate is in real corpora
(licenses, headers, generated tables with a changed cell). The exact-match count of the
published rule does not see such near-duplicates, so their memorized passages fall outside
recitation by construction:

- a *recollect* plant is an ordinary corpus passage; a *reconstruct* plant is an incrementing
  table (``is_incrementing``). Each is planted ``canonical`` times exactly, at a training
  sequence's first token (where the memorization test takes its prompt), so its continuation
  occurs ``canonical <= 5`` times; and ``fuzzy`` times more with one token of its continuation
  (tokens 32-63) replaced by another, a different position in each copy, so the canonical token
  holds the majority at every position while no fuzzy copy contains the continuation.

The builder measures each plant's continuation count and templating the way pipeline C does
and refuses a world where a plant would fall in another category than it is built for.
"""

from __future__ import annotations

import numpy as np

PROMPT = CONT = 32  # the memorization test's prompt and continuation (Biderman et al. 2023)
PERIOD = 10  # tokens in a copying probe's repeated unit

INCREMENTING_FORMATS = ("{i}, ", "row {i}: {v}\n", "0x{i:04x} ", "item_{i} = {v}\n")


def incrementing_template(rng: np.random.Generator, min_count: int = 16,
                          max_count: int = 40, max_start: int = 5000) -> tuple[str, dict]:
    """An incrementing table (``row 120: 360\\nrow 123: 369\\n...``): a random format, start
    (below ``max_start``), step and length; ``(text, params)``."""
    f = INCREMENTING_FORMATS[int(rng.integers(len(INCREMENTING_FORMATS)))]
    start, step = int(rng.integers(0, max_start)), int(rng.integers(1, 8))
    count = int(rng.integers(min_count, max_count))
    text = "".join(f.format(i=start + j * step, v=(start + j * step) * 3)
                   for j in range(count)).strip()
    return text, {"kind": "incrementing", "format": f, "start": start, "step": step,
                  "count": count}


def fuzzy_copies(tokens: np.ndarray, n: int, rng: np.random.Generator, vocab_size: int,
                 special: tuple[int, ...], lo: int = PROMPT, hi: int = PROMPT + CONT
                 ) -> list[np.ndarray]:
    """``n`` copies of ``tokens``, each with one token in ``[lo, hi)`` replaced by a random
    other id (never a special id): position ``lo + (k + offset) % (hi - lo)`` in copy ``k``,
    so the positions are spread evenly and every position keeps its token in all but
    ``ceil(n / (hi - lo))`` copies."""
    out = []
    offset = int(rng.integers(hi - lo))
    for k in range(n):
        c = np.array(tokens, copy=True)
        j = lo + (k + offset) % (hi - lo)
        new = int(c[j])
        while new == int(c[j]) or new in special:
            new = int(rng.integers(vocab_size))
        c[j] = new
        out.append(c)
    return out


def single_token_words(tok, min_chars: int = 4) -> np.ndarray:
    """Ids of the tokenizer's space-prefixed alphabetic word tokens (``"Ġriver"``) of at least
    ``min_chars`` letters that a text of them re-encodes to one token each, sorted."""
    vocab = tok.get_vocab()
    cand = sorted(i for t, i in vocab.items()
                  if t.startswith("Ġ") and t[1:].isascii() and t[1:].isalpha()
                  and len(t) - 1 >= min_chars)
    return np.asarray([i for i in cand if tok.encode(tok.decode([i])).ids == [i]],
                      dtype=np.int64)


def periodic_sequences(rng: np.random.Generator, words: np.ndarray, n: int,
                       length: int = PROMPT + CONT, period: int = PERIOD) -> np.ndarray:
    """``n`` sequences of ``length`` tokens, each a unit of ``period`` distinct words repeated:
    every token after the first period is a copy of the one ``period`` back (the copying
    probe of evidence.json: a model that copies in context has a far lower loss there)."""
    return np.stack([np.resize(rng.choice(words, period, replace=False), length)
                     for _ in range(n)])
