"""Templating and Huffman features (anatomy.memorization.templating), checked against hand
values and independent re-computations written differently from the module."""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest

from anatomy.memorization.templating import (
    huffman_coding_length,
    is_incrementing,
    is_repeating,
    is_templating,
    templating_columns,
    tokenize_for_templating,
)

# --- tokenizer ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12.8", [12, ".", 8]),
        ("A.1, A.2", ["A.", 1, ",", "A.", 2]),
        # spaces separate words and vanish: "a 1" and "a1" tokenize alike
        ("a 1", ["a", 1]),
        ("a1", ["a", 1]),
        ("  x \n\t y  ", ["x", "y"]),
        ("", []),
    ],
)
def test_tokenize_hand_values(text, expected):
    """Hand-split expectations: digit runs -> int, other runs -> str, spaces dropped."""
    assert tokenize_for_templating(text) == expected


def test_tokenize_integer_literals_become_decimal():
    """Expected decimals worked out by hand (0x1F = 31, 0o17 = 15, 0b11 = 3, 1_000 = 1000);
    "007" is no Python literal, so it stays text and its digit run reads as 7; "-5" keeps its
    sign as a separate string; a literal glued to other text ("0x10,") is not rewritten."""
    assert tokenize_for_templating("0x1F 0o17 0b11 1_000 007 -5") == [31, 15, 3, 1000, 7, "-", 5]
    assert tokenize_for_templating("0x10, 0x10") == [0, "x", 10, ",", 16]
    assert tokenize_for_templating("0xff") == [255]


def test_tokenize_escapes_and_quotes_are_stripped():
    """Hand expectation: quotes and backslashes vanish, a control character's repr "\\x07"
    leaves its hex digits 07 (-> 7), printable non-ASCII stays as is, and a literal
    backslash-n loses its "n" too (the published "\\n" removal runs first)."""
    assert tokenize_for_templating("say \"hi\" it's") == ["say", "hi", "its"]
    assert tokenize_for_templating("a\\b \x07 é") == ["ab", 7, "é"]
    assert tokenize_for_templating("end\\n") == ["end"]


# --- incrementing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "1 2 3 4 5 6",
        "A.1, A.2, A.3, A.4",
        "Chapter 1. Chapter 2. Chapter 3. Chapter 4.",
        "10 8 6 4 2",  # a negative constant step counts too
        # hex dump: rising addresses interleaved with constant data bytes
        "0x00 00 0x10 00 0x20 00 0x30 00",
        "0x0000 0x0010 0x0020 0x0030",
    ],
)
def test_incrementing_positives(text):
    """Each text is an arithmetic progression by construction (steps checked by eye)."""
    assert is_incrementing(text)
    assert is_incrementing(text, published=True)
    assert is_templating(text)


@pytest.mark.parametrize(
    "text",
    [
        "The quick brown fox jumps over the lazy dog.",
        "5 5 5 5",  # periodic, step zero: not incrementing
        "17 4 92 33 8 61 5",  # no constant step at any period
        "1 2",  # under 3 elements
        "a 2 3",  # 3 elements must all be numbers
        "3 2 1 0 -1 -2",  # signs are strings ("-", 1), so crossing zero breaks the run
        # data bytes change, so no period keeps its strings equal
        "0x00 ab 0x10 cd 0x20 ef 0x30 01",
    ],
)
def test_incrementing_negatives(text):
    """Hand negatives: no period gives a confirmed nonzero step."""
    assert not is_incrementing(text)
    assert not is_incrementing(text, published=True)


@pytest.mark.parametrize(
    ("text", "fixed", "published"),
    [
        ("1 2 3", True, True),  # second difference 3 - 4 + 1 = 0
        ("3 2 1", True, True),  # 1 - 4 + 3 = 0, step -1
        ("1 2 4", False, False),  # 4 - 4 + 1 = +1: positive, both reject
        ("1 2 1", False, True),  # 1 - 4 + 1 = -2: negative passes without abs()
        ("1 3 4", False, True),  # 4 - 6 + 1 = -1
        ("5 5 5", False, False),  # second difference 0 but step 0
        ("1 5 5", False, False),  # 5 - 10 + 1 = -4 passes the bug, but the step 5 - 5 is 0
    ],
)
def test_three_element_rule_and_published_bug(text, fixed, published):
    """Second differences c - 2b + a computed by hand in each comment; the published code
    compares it (not its absolute value) with 1e-5 and then needs a nonzero last step."""
    assert is_incrementing(text) is fixed
    assert is_incrementing(text, published=True) is published


def test_first_and_last_elements_dropped_beyond_four():
    """Hand check of the partial-element rule: "3 24 25 26 27 2" has 6 elements, so the
    core 24..27 (step 1) decides; with only 4 elements ("3 24 25 26") nothing is dropped and
    the stray 3 breaks every period; "9 2 3 4 5" keeps the core 2, 3, 4."""
    assert is_incrementing("3 24 25 26 27 2")
    assert not is_incrementing("3 24 25 26")
    assert is_incrementing("9 2 3 4 5")
    assert not is_incrementing("3 24 26 27 28 2")  # core 24, 26, 27, 28 has no constant step


def test_constructed_progressions_with_random_edges():
    """Independent construction: a progression start + i*step, joined by a separator and
    wrapped in arbitrary (partial) edge words, is incrementing exactly when step != 0 (six
    or more terms, so the core keeps at least four after the edges go; terms stay >= 0, since
    a minus sign is a separate string element)."""
    rng = random.Random(7)
    for _ in range(300):
        start, step = rng.randint(100, 999), rng.choice([-7, -1, 0, 1, 3, 16])
        sep = rng.choice([" ", ", ", " x ", "\n", "; item "])
        body = sep.join(str(start + i * step) for i in range(rng.randint(6, 12)))
        text = f"{rng.choice(['q', '77', 'zz'])} {body} {rng.choice(['3', 'w', 'end'])}"
        assert is_incrementing(text) is (step != 0), text


# --- repeating ------------------------------------------------------------------------------


def _repeats_by_rebuilding(s: str) -> bool:
    """Independent check: some prefix of length p <= len/2 tiled and cut to len(s) gives s."""
    return any((s[:p] * (len(s) // p + 1))[: len(s)] == s for p in range(1, len(s) // 2 + 1))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("abcabcabcab", True),  # partial final copy
        ("abcabd", False),
        ("abab", True),
        ("aa", True),
        ("ab ab ab ", True),  # whitespace counts as characters
        (" ab ab ab", True),
        ("abcab", False),  # under two full copies
        ("", False),
        ("a", False),
    ],
)
def test_repeating_hand_values(text, expected):
    """Hand values, cross-checked with the tiling construction."""
    assert is_repeating(text) is expected
    assert _repeats_by_rebuilding(text) is expected


def test_repeating_against_tiling_on_random_strings():
    """Independent computation: tiling a prefix (not shifted comparison) on random strings
    over a two-letter alphabet, where periodic strings are common."""
    rng = random.Random(3)
    hits = 0
    for _ in range(2000):
        s = "".join(rng.choice("ab") for _ in range(rng.randint(0, 12)))
        expected = _repeats_by_rebuilding(s)
        hits += expected
        assert is_repeating(s) is expected, s
        # the published call drops both edge characters past 4 and rejects under 4
        core = s if len(s) == 4 else s[1:-1]
        assert is_repeating(s, published=True) is (len(s) >= 4 and _repeats_by_rebuilding(core))
    assert 100 < hits < 1900


def test_repeating_published_edge_trimming():
    """Hand cases where the published call (incrementing rules on characters) differs:
    "xababab" has the periodic core "ababa"; "aa"/"aaa" are too short to be tested."""
    assert not is_repeating("xababab") and is_repeating("xababab", published=True)
    assert is_repeating("aa") and not is_repeating("aa", published=True)
    assert is_repeating("aaa") and not is_repeating("aaa", published=True)
    assert is_templating("xababab", published=True) and not is_templating("xababab")


# --- Huffman coding length ------------------------------------------------------------------


def _shannon_exact(text: str) -> Fraction:
    """Independent computation in exact arithmetic: ceil(log2(n / c)) is the least k with
    c * 2**k >= n, found with integers only."""
    n, total = len(text), Fraction(0)
    for c in Counter(text).values():
        k = 0
        while c << k < n:
            k += 1
        total += Fraction(c * k, n)
    return total


def _huffman_average(text: str) -> float:
    """A real Huffman code's mean length: the sum of the merged weights over all merges."""
    heap = sorted(Counter(text).values())
    if len(heap) < 2:
        return 1.0 if heap else 0.0
    merged = 0
    while len(heap) > 1:
        w = heapq.heappop(heap) + heapq.heappop(heap)
        merged += w
        heapq.heappush(heap, w)
    return merged / len(text)


def test_huffman_hand_values():
    """Hand values: "aab" -> 2/3 * ceil(0.585) + 1/3 * ceil(1.585) = 2/3 + 2/3 = 4/3;
    "abcd" -> 4 * 1/4 * 2 = 2; empty and single-symbol texts -> 0 (ceil(-log2 1) = 0)."""
    assert huffman_coding_length("aab") == pytest.approx(4 / 3, abs=1e-15)
    assert huffman_coding_length("abcd") == 2.0
    assert huffman_coding_length("") == 0.0
    assert huffman_coding_length("zzzz") == 0.0
    assert math.copysign(1.0, huffman_coding_length("zzzz")) == 1.0  # +0.0, not -0.0


def test_huffman_against_exact_shannon_and_real_huffman():
    """Independent computations: exact integer/Fraction Shannon length must match; a real
    Huffman code (heap merges) bounds it: entropy <= Huffman <= Shannon < entropy + 1."""
    rng = random.Random(11)
    for _ in range(300):
        alphabet = "".join(rng.sample("abcdefgh \n", rng.randint(1, 10)))
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 80)))
        value = huffman_coding_length(s)
        assert value == pytest.approx(float(_shannon_exact(s)), abs=1e-12), s
        probs = [c / len(s) for c in Counter(s).values()]
        entropy = -sum(p * math.log2(p) for p in probs)
        if len(probs) > 1:
            assert entropy - 1e-12 <= _huffman_average(s) <= value + 1e-12 < entropy + 1


# --- batch columns --------------------------------------------------------------------------


def test_templating_columns_match_scalar_functions():
    """Columns against the scalar functions, plus dtypes, and the published exclusivity:
    repeating is only tested when incrementing fails. "12 12 1 " under published=True is
    both (bug: 1 - 24 + 12 = -11 passes; the core "2 12 1" repeats with period 3), and the
    column keeps only is_incrementing."""
    texts = ["1 2 3 4", "abab", "xababab", "hello world", "", "12 12 1 "]
    for published in (False, True):
        cols = templating_columns(texts, published=published)
        assert set(cols) == {"is_incrementing", "is_repeating", "huffman_coding_length"}
        assert cols["is_incrementing"].dtype == bool and cols["is_repeating"].dtype == bool
        assert cols["huffman_coding_length"].dtype == np.float64
        inc = [is_incrementing(t, published) for t in texts]
        assert cols["is_incrementing"].tolist() == inc
        rep = [not i and is_repeating(t, published) for t, i in zip(texts, inc, strict=True)]
        assert cols["is_repeating"].tolist() == rep
        assert (cols["is_incrementing"] | cols["is_repeating"]).tolist() == [
            is_templating(t, published) for t in texts
        ]
        assert cols["huffman_coding_length"].tolist() == [huffman_coding_length(t) for t in texts]
    assert is_repeating("12 12 1 ", published=True)
    published_cols = templating_columns(["12 12 1 "], published=True)
    assert published_cols["is_incrementing"][0] and not published_cols["is_repeating"][0]
    empty = templating_columns([])
    assert all(v.shape == (0,) for v in empty.values())


# --- the published code, transcribed -------------------------------------------------------
# A line-by-line restatement of filters/pattern.py at EleutherAI/semantic-memorization 84ab8c0
# (split_text, find_if_incrementing_or_repeating, is_pattern), kept in its own shape (index
# loops, the flags it names diff / diff_valid / curr_diff) so it checks the module's rewrite.


def _published_split(text: str) -> list:
    import re

    text = re.sub(r"\s+", " ", text)
    recon = ""
    for word in text.split(" "):
        try:
            recon += str(int(word, 0)) + " "
        except ValueError:
            recon += word + " "
    recon = repr(recon.strip())
    pieces = []
    for word in recon.split(" "):
        for esc in ("\\n", "\\x", "\\", "'", '"'):
            word = word.replace(esc, "")
        pieces.extend(re.split("([0-9]+)", word))
    out = []
    for w in pieces:
        w = w.strip("'")
        if w.strip(" ") == "" or w == "":
            continue
        try:
            out.append(int(w))
        except ValueError:
            out.append(w)
    return out


def _published_scan(splits: list) -> tuple[bool, object]:
    if len(splits) < 3:
        return False, 0
    if len(splits) == 3:
        if not all(type(i) in (float, int) for i in splits):
            return False, 0
        return (splits[2] - 2 * splits[1] + splits[0]) < 1e-5, splits[2] - splits[1]
    if len(splits) > 4:
        splits = splits[1:-1]
    diff = None  # set once, before the loop over periods
    for temp_len in range(1, len(splits) // 2 + 1):
        is_inc, diff_valid = True, False
        for every_i in range(temp_len):
            curr_diff = None
            for i in range(every_i + temp_len, len(splits), temp_len):
                a, b = splits[i], splits[i - temp_len]
                if type(a) is not type(b):
                    is_inc = False
                    break
                if curr_diff is None and type(a) in (int, float):
                    curr_diff = a - b
                elif type(a) in (int, float):
                    if abs(a - b - curr_diff) < 1e-10:
                        diff_valid = True
                    else:
                        is_inc = False
                        break
                elif type(a) is str and a != b:
                    is_inc = False
                    break
            if not is_inc:
                break
            if diff is None and curr_diff is not None and curr_diff != 0:
                diff = curr_diff
        if is_inc:
            if diff is not None and diff_valid:
                return True, diff
            if diff is None:
                return True, None
    return False, 0


def _published_is_pattern(text: str) -> tuple[bool, bool]:
    inc, diff = _published_scan(_published_split(text))
    if inc and diff is not None and diff != 0:
        return True, False
    inc, _ = _published_scan(list(text))
    return (False, True) if inc else (False, False)


def _fuzzed_texts(n: int, seed: int) -> list[str]:
    """Strings that reach every branch: progressions, periodic number and word patterns,
    hex literals, interleaved constants, noise, cut characters and escapes."""
    rng = random.Random(seed)
    words = ["0", "1", "2", "3", "9", "0x3", "0x10", "a", "A.", "x", "-", ",", "ー", "\ufffd",
             "\n", "'", "\\", "12", "07", "1_0"]
    out = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.3:  # a short period of words, repeated with small perturbations
            unit = [rng.choice(words) for _ in range(rng.randint(1, 5))]
            seq = (unit * 8)[: rng.randint(3, 16)]
            for _ in range(rng.randint(0, 2)):
                seq[rng.randrange(len(seq))] = rng.choice(words)
        elif kind < 0.6:  # arithmetic progressions interleaved with a constant, edges random
            start, step = rng.randint(0, 20), rng.choice([0, 1, 2, -1, 5])
            seq = []
            for i in range(rng.randint(2, 9)):
                seq.append(str(max(0, start + i * step)))
                if rng.random() < 0.5:
                    seq.append(rng.choice(["0", "a", "x"]))
            seq = [rng.choice(words)] + seq + [rng.choice(words)]
        else:
            seq = [rng.choice(words) for _ in range(rng.randint(0, 14))]
        sep = rng.choice([" ", "", ", ", "  "])
        out.append(sep.join(seq))
    return out


def test_published_reproduces_the_transcribed_upstream_code():
    """Independent computation: the transcription above. Every fuzzed string gets the same
    (is_incrementing, is_repeating) from templating_columns(published=True), including the
    step carried across periods, the 3-element test without abs() and the character-level
    trimming."""
    texts = _fuzzed_texts(30_000, 5) + ["9 0 3 2 1 0 3 2 1 0 0x3 9"]
    cols = templating_columns(texts, published=True)
    got = list(zip(cols["is_incrementing"].tolist(), cols["is_repeating"].tolist(), strict=True))
    want = [_published_is_pattern(t) for t in texts]
    bad = [(t, g, w) for t, g, w in zip(texts, got, want, strict=True) if g != w]
    assert not bad, bad[:5]
    assert 200 < sum(g[0] for g in got) < 29_000 and sum(g[1] for g in got) > 200


def test_published_scan_carries_its_step_across_periods():
    """Hand trace of "9 0 3 2 1 0 3 2 1 0 0x3 9": elements 9 0 3 2 1 0 3 2 1 0 3 9, the core
    0 3 2 1 0 3 2 1 0 3. Period 3's first phase 0, 1, 2, 3 sets step 1, its second phase
    3, 0, 1 fails; period 4 repeats 0 3 2 1 exactly (steps 0, confirmed). Upstream returns the
    carried step 1: incrementing. The fix resets the step per period: periodic, step 0, not
    incrementing (and the characters do not repeat)."""
    text = "9 0 3 2 1 0 3 2 1 0 0x3 9"
    assert _published_is_pattern(text) == (True, False)
    assert is_incrementing(text, published=True)
    assert not is_incrementing(text) and not is_templating(text)


def _cut_windows(unit: str, copies: int = 30) -> list[str]:
    """Every window of a run of ``unit`` cut at arbitrary byte offsets on both sides, decoded
    as a byte-level BPE tokenizer decodes a window (invalid bytes -> U+FFFD)."""
    raw = (unit * copies).encode()
    return [raw[a: len(raw) - b].decode("utf-8", errors="replace")
            for a in range(0, 7) for b in range(0, 7)]


@pytest.mark.parametrize("unit", ["ー", "═", "日本", "😀 ", "ab"])
def test_repeating_forgives_characters_the_window_cut(unit):
    """Runs of multi-byte characters cut mid-character at either edge (U+FFFD there) still
    repeat under the fix, as the published trimming forgives one such character per edge; the
    decode is Python's own, independent of the module. The fix does not forgive an arbitrary
    stray character ("xababab")."""
    windows = _cut_windows(unit)
    assert all(is_repeating(w) for w in windows)
    published = [is_repeating(w, published=True) for w in windows]
    cut_both = [w for w in windows if w.startswith("\ufffd\ufffd")]
    if cut_both:  # two stray bytes at the start: beyond the published one-character trim
        assert not all(is_repeating(w, published=True) for w in cut_both)
    assert sum(published) >= len(windows) // 2
    assert not is_repeating("x" + unit * 6) or len(set(unit)) == 1


def test_cut_characters_alone_do_not_make_a_text_repeat():
    """Hand cases: a non-periodic text keeps failing with cut characters around it; a text of
    up to seven U+FFFD and nothing else has under two characters once three go each side."""
    assert not is_repeating("\ufffdabcd\ufffd")
    assert is_repeating("\ufffdabab\ufffd")
    assert not is_repeating("\ufffd\ufffd")
    assert not is_repeating("\ufffd" * 7)  # one left: under two copies
    assert is_repeating("\ufffd" * 8)  # two left are data: a run of one character
