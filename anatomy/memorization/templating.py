"""Templating (the reconstruction signal) and Huffman coding length, per decoded text.

Mirrors EleutherAI/semantic-memorization at HEAD 84ab8c0: ``filters/pattern.py``
(``split_text``, ``find_if_incrementing_or_repeating``, ``is_pattern``) and
``filters/huffman_coding_filter.py``; Prashanth et al. 2024, "Recite, Reconstruct,
Recollect", §3 (taxonomy: reconstruction = templated, i.e. incrementing or repeating) and the
feature list (Huffman coding length as a compressibility proxy).

Three deliberate deviations, all switchable with ``published=True`` (default False: fixed):

- with exactly 3 elements the published second-difference test has no ``abs()``, so any
  negative second difference ("1 2 1") counts as incrementing;
- the character-level repeating test is called without its ``test_repeating=True`` switch, so
  it inherits the incrementing rules: under 4 characters never repeats, and beyond 4 the first
  and last characters are dropped before the period test (the fix keeps that edge tolerance
  for characters the token window cut, decoded as U+FFFD);
- the period scan sets its step once, before the loop over periods, and carries it from one
  period to the next (:func:`_first_period`).

Everything else follows the published code, including two points a prose reading may miss:

- spaces are separators, never elements: the published tokenizer splits on " " first and only
  then on digit runs, so "a 1" and "a1" both give ["a", 1];
- a period is accepted when *some* step anywhere is confirmed (a phase with at least two equal
  steps, possibly zero) and *some* phase has a nonzero step; the first period that fits decides.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

_DIGITS = re.compile(r"([0-9]+)")
# Removed in this order after repr(); "\\n" goes first, taking its "n" with it, as published.
_ESCAPES = ("\\n", "\\x", "\\", "'", '"')


def _number_or_word(word: str) -> str:
    """A whitespace-free word as the published code rewrites it: an integer literal in Python
    source syntax (``int(word, 0)``: 0x1f, 0o17, 0b11, 1_000, +3) becomes its decimal form."""
    try:
        return str(int(word, 0))
    except ValueError:
        return word


def _piece(piece: str) -> int | str:
    # The published code tries int() on every piece, not only the [0-9]+ runs, so a lone
    # non-ASCII decimal digit ("٣") left over from the split also becomes a number.
    try:
        return int(piece)
    except ValueError:
        return piece


def tokenize_for_templating(text: str) -> list[int | str]:
    """Elements for the incrementing test: ints for digit runs, strings for everything else.

    Source: ``split_text`` in ``filters/pattern.py``. Steps: collapse whitespace; rewrite each
    space-separated word that is an integer literal (hex included) in decimal; escape the
    string with ``repr()`` (the published choice: printable non-ASCII stays as is, control
    characters become ``\\xNN`` whose "\\x" is then dropped, leaving the hex digits); strip
    "\\n", "\\x", backslashes and quotes; split each word on ASCII digit runs and drop empty
    pieces. Spaces only separate words and never appear in the output.

    >>> tokenize_for_templating("v 12.8, 0x10")
    ['v', 12, '.', 8, ',', 16]
    """
    words = " ".join(_number_or_word(w) for w in re.sub(r"\s+", " ", text).split(" "))
    escaped = repr(words.strip())
    for escape in _ESCAPES:
        escaped = escaped.replace(escape, "")
    # repr() adds no spaces and the escapes hold none, so splitting after the replacements
    # gives the same words as the published per-word loop.
    return [_piece(p) for word in escaped.split(" ") for p in _DIGITS.split(word) if p]


def _first_period(items: Sequence[int | str], carry_step: bool = False
                  ) -> tuple[bool, int | None]:
    """The published period scan: ``(fits, step)`` for the first period p <= len/2 that fits.

    Each phase (items p apart) must keep its type; strings must repeat, numbers must keep the
    phase's first step (within 1e-10). ``step`` is the first nonzero phase step; a period with
    no nonzero step returns ``(True, None)`` (periodic, not incrementing) and ends the scan, a
    period with a nonzero step but no confirmed step anywhere is skipped.

    ``carry_step=True`` is the published code as written (``filters/pattern.py`` lines 38-69
    at 84ab8c0): ``diff`` is set once, before the loop over periods, so the first nonzero step
    of any phase that fitted, in any earlier period (even one that failed), is carried into
    the later periods. A later all-zero period then reads as incrementing with that stale step
    when some zero step is confirmed ("9 0 3 2 1 0 3 2 1 0 0x3 9": period 3's first phase
    0, 1, 2, 3 leaves step 1, its second phase fails; period 4 repeats 0 3 2 1 exactly), and
    is skipped when none is. The default resets the step per period, as the scan intends.
    """
    step: int | None = None
    for p in range(1, len(items) // 2 + 1):
        fits, confirmed = True, False
        if not carry_step:
            step = None
        for phase in range(p):
            run = items[phase::p]
            first = None
            for prev, cur in zip(run, run[1:], strict=False):
                if type(cur) is not type(prev) or (isinstance(cur, str) and cur != prev):
                    fits = False
                elif isinstance(cur, str):
                    continue
                elif first is None:
                    first = cur - prev
                elif abs(cur - prev - first) < 1e-10:
                    confirmed = True
                else:
                    fits = False
                if not fits:
                    break
            if not fits:
                break
            if step is None and first:
                step = first
        if fits and step is None:
            return True, None
        if fits and confirmed:
            return True, step
    return False, None


def is_incrementing(text: str, published: bool = False) -> bool:
    """True when the text's elements form an arithmetic progression, possibly interleaved with
    repeated strings ("A.1, A.2, A.3", "0x00 00 0x10 00 0x20 00", "1 2 3 4").

    Source: ``find_if_incrementing_or_repeating`` and ``is_pattern`` in ``filters/pattern.py``
    (Prashanth et al. 2024, §3, "incrementing" templates). Rules on the elements of
    :func:`tokenize_for_templating`: fewer than 3 is never incrementing; exactly 3 must all be
    numbers with second difference ~0 (< 1e-5) and a nonzero step. ``published=True`` keeps
    the published comparison without ``abs()``, under which every negative second difference
    passes ("1 2 1", "1 3 4"), and the period scan carries a step across periods as written
    (:func:`_first_period`). With more than 4 elements the first and last are dropped as
    possibly partial (cut by the 64-token window), then :func:`_first_period` must find a
    period with a confirmed, nonzero step ("5 5 5 5" is periodic but not incrementing).
    """
    items = tokenize_for_templating(text)
    if len(items) < 3:
        return False
    if len(items) == 3:
        if not all(isinstance(x, int) for x in items):
            return False
        a, b, c = items
        second = c - 2 * b + a
        return (second if published else abs(second)) < 1e-5 and c != b
    if len(items) > 4:
        items = items[1:-1]
    fits, step = _first_period(items, carry_step=published)
    return fits and step is not None


def _shift_periodic(chars: str) -> bool:
    """Some period p <= len/2 with ``chars[i] == chars[i - p]`` for every i >= p."""
    return any(chars[p:] == chars[:-p] for p in range(1, len(chars) // 2 + 1))


# A UTF-8 character is at most 4 bytes: a window that cuts one leaves at most 3 stray bytes,
# each decoded as U+FFFD at the start, or one U+FFFD for a truncated character at the end.
_CUT = "\ufffd"
_MAX_CUT = 3


def _without_cut_characters(text: str) -> str:
    """``text`` less the U+FFFD runs (at most 3 each side) that a token window leaves where it
    cuts a multi-byte character at either edge."""
    a, b = 0, len(text)
    while a < min(_MAX_CUT, b) and text[a] == _CUT:
        a += 1
    while b - a > 0 and len(text) - b < _MAX_CUT and text[b - 1] == _CUT:
        b -= 1
    return text[a:b]


def is_repeating(text: str, published: bool = False) -> bool:
    """True when the characters of ``text`` are exactly periodic: some period p <= len/2 with
    ``text[i] == text[i - p]`` for every i >= p (at least two full copies, the last copy may be
    cut short: "abcabcabcab"). No tokenizing; whitespace counts.

    Source: ``is_pattern`` in ``filters/pattern.py`` feeds ``list(text)`` to
    ``find_if_incrementing_or_repeating``, whose period scan on strings only reduces to this
    shift comparison. The function has a ``test_repeating=True`` switch that skips the
    incrementing preliminaries, but ``is_pattern`` does not pass it (a bug). ``published=True``
    reproduces the published call: fewer than 4 characters is never repeating ("aa", "aaa"),
    and beyond 4 the first and last characters are dropped first ("xababab" passes, its core
    "ababa" is periodic).

    ``published=False`` (default) fixes that trimming (short texts are tested, a stray edge
    character is not forgiven) but keeps the tolerance the trimming gave for what really is
    partial at the character level: a multi-byte character cut by the token window, decoded
    as U+FFFD. Up to 3 U+FFFD at each edge are dropped before the test, so a window of "ー"
    runs cut mid-character at either end still repeats (the published trimming flags such a
    window only when each edge holds at most one U+FFFD).
    """
    if not published:
        return _shift_periodic(_without_cut_characters(text))
    if len(text) < 4:
        return False
    return _shift_periodic(text if len(text) == 4 else text[1:-1])


def is_templating(text: str, published: bool = False) -> bool:
    """``is_incrementing or is_repeating``: the reconstruction signal (Prashanth et al. 2024, §3;
    ``model_parameters.py`` / ``filters/pattern.py``)."""
    return is_incrementing(text, published=published) or is_repeating(text, published=published)


def huffman_coding_length(text: str) -> float:
    """Shannon code length in bits per character, ``sum p * ceil(-log2 p)`` over the text's
    characters with their empirical frequencies p.

    Source: ``calculate_huffman_code_length`` in ``filters/huffman_coding_filter.py``. Despite
    the name it is the Shannon (not Huffman) code length, an upper bound on the Huffman one.
    An empty text gives 0.0 (the published numpy sum of an empty array). A text of one distinct
    character gives 0.0, as the formula and the published code do (ceil(-log2 1) = 0), although
    a real code needs one bit per character.
    """
    n = len(text)
    # log2 of count/n, as published: count/n is rounded once, so powers of two stay exact.
    bits = sum(c / n * math.ceil(-math.log2(c / n)) for c in Counter(text).values())
    return float(bits)


def templating_columns(texts: Sequence[str], published: bool = False) -> dict[str, np.ndarray]:
    """The published feature columns for a batch of decoded texts: bool ``is_incrementing``,
    bool ``is_repeating`` and float64 ``huffman_coding_length`` (the ``usvsnsp/semantic-filters``
    names).

    As in ``is_pattern`` (``filters/pattern.py``), repeating is only tested when incrementing
    fails, so the two bool columns never both hold; their OR is :func:`is_templating`.
    """
    inc = np.fromiter((is_incrementing(t, published=published) for t in texts), bool, len(texts))
    rep = np.fromiter((not i and is_repeating(t, published=published)
                       for t, i in zip(texts, inc, strict=True)), bool, len(texts))
    huff = np.fromiter((huffman_coding_length(t) for t in texts), np.float64, len(texts))
    return {"is_incrementing": inc, "is_repeating": rep, "huffman_coding_length": huff}
