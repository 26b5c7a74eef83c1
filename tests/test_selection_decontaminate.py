"""Held-out decontamination (anatomy/selection/decontaminate.py) against a brute force.

The brute force is independent of the module: Python tuples of words (lowercase, ``\\w+``)
in sets, no hashing, no numpy windows; its fractions must equal the module's exactly. The
planted cases pin the rule: the boundary (exactly 20 % is kept), the reasons, short and
empty documents, n-grams never crossing pool rows, a file target compared with the pool only.
"""

from __future__ import annotations

import hashlib
import random
import re

import numpy as np
import pytest

from anatomy.io import InputError
from anatomy.selection.decontaminate import (
    HeldOutFilter,
    _WordHasher,
    decontaminate_targets,
    describe,
    held_out_overlaps,
    words,
)
from anatomy.selection.pool import ListTexts
from anatomy.selection.targets import Target


def brute_grams(text: str, n: int) -> list[tuple[str, ...]]:
    w = re.findall(r"\w+", text.lower())
    if not w:
        return []
    if len(w) < n:
        return [tuple(w)]  # a short document: all its words as one n-gram
    return [tuple(w[i:i + n]) for i in range(len(w) - n + 1)]


def brute_set(texts: list[str], n: int) -> set[tuple[str, ...]]:
    """Every k-gram inside one text, for every k <= n (what a short document can match)."""
    out = set()
    for t in texts:
        w = re.findall(r"\w+", t.lower())
        for k in range(1, n + 1):
            out.update(tuple(w[i:i + k]) for i in range(len(w) - k + 1))
    return out


def brute_fraction(doc: str, ref: set, n: int) -> float:
    g = brute_grams(doc, n)
    return sum(x in ref for x in g) / len(g) if g else 0.0


def seq(prefix: str, k: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(k)]


def test_words_and_fixed_hash():
    assert words("The MIT-License, (c) 2024: don't!") == ["the", "mit", "license", "c",
                                                          "2024", "don", "t"]
    # blake2b-64, never Python's salted hash(): the same on every run and machine
    want = int.from_bytes(hashlib.blake2b(b"license", digest_size=8).digest(), "little")
    assert _WordHasher()(["license"]) == [want]


def test_fractions_equal_a_brute_force():
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(12)]  # small: many chance matches of every length

    def text(k):
        return " ".join(rng.choice(vocab).upper() if rng.random() < 0.2 else rng.choice(vocab)
                        for _ in range(k)) + rng.choice([".", "", " ,;"])

    def spliced(src):  # pieces of other texts and random words: partial overlaps at any n
        parts = []
        for _ in range(rng.randint(1, 4)):
            w = rng.choice(src).split()
            a = rng.randint(0, len(w))
            parts += w[a:a + rng.randint(0, 12)] + [text(rng.randint(0, 4))]
        return " ".join(parts)

    pool = [text(rng.randint(0, 40)) for _ in range(30)]
    sel = [[text(rng.randint(5, 30)) for _ in range(10)], None]
    held = [[text(rng.randint(0, 30)) for _ in range(10)]
            + [spliced(pool + sel[0]) for _ in range(30)], ["", "...", text(3), text(9)]]
    seen = set()
    for n in (1, 2, 3, 8):
        got = held_out_overlaps(held, ListTexts(pool), sel, HeldOutFilter(n=n, block_rows=7))
        seen |= {round(float(x), 3) for g in got for x in g["any"]}
        ref_pool = brute_set(pool, n)
        for g, h, s in zip(got, held, sel, strict=True):
            ref_sel = brute_set(s, n) if s is not None else set()
            assert g["words"].tolist() == [len(re.findall(r"\w+", x)) for x in h]
            for i, doc in enumerate(h):
                assert g["pool"][i] == brute_fraction(doc, ref_pool, n)
                assert g["any"][i] == brute_fraction(doc, ref_pool | ref_sel, n)
                if s is None:
                    assert np.isnan(g["selection"][i])
                else:
                    assert g["selection"][i] == brute_fraction(doc, ref_sel, n)
    assert len(seen) > 20 and 0.0 in seen and 1.0 in seen  # many partial overlaps tested


def _target(held: list[str], sel: list[str]) -> Target:
    return Target("t", {"g": sel}, {"g": held})


def test_boundary_planted_and_clean():
    doc = seq("d", 17)  # 10 word 8-grams
    two = " ".join(doc[:9])  # 9 words: the doc's first 2 of 10 8-grams -> 0.20 exactly
    three = " ".join(doc[5:15])  # 10 words: 3 of 10 -> 0.30
    clean = " ".join(seq("c", 30))
    planted = " ".join(seq("p", 20))
    pool = ListTexts([f"x y z {two} q", " ".join(seq("n", 50)), f"{planted.upper()}!"])
    held = [" ".join(doc), clean, planted]
    (t,), rep = decontaminate_targets([_target(held, ["unrelated words only here"])], pool)
    assert t.eval_groups["g"] == [" ".join(doc), clean]  # 0.20 kept, planted removed
    r = rep["t"]
    assert (r["docs"], r["kept"], r["removed"]) == (3, 2, 1)
    assert r["groups"]["g"]["removed_docs"] == [
        {"index": 2, "reason": "pool", "words": 20, "pool": 1.0, "selection": 0.0, "any": 1.0}]
    # one more overlapping 8-gram crosses the threshold
    pool3 = ListTexts([three])
    (t,), rep = decontaminate_targets([_target(held[:2], ["z"])], pool3)
    assert t.eval_groups["g"] == [clean] and rep["t"]["removed"] == 1
    assert rep["t"]["groups"]["g"]["removed_docs"][0]["pool"] == pytest.approx(0.3)
    # the threshold is a parameter: at 0.1 the 0.20 document goes too
    (t,), _ = decontaminate_targets([_target(held[:2], ["z"])], pool,
                                    HeldOutFilter(threshold=0.1))
    assert t.eval_groups["g"] == [clean]


def test_reasons():
    a, b, c, d = (" ".join(seq(p, 20)) for p in "abcd")  # 13 8-grams each
    e = seq("e", 20)
    pool = ListTexts([a, c, " ".join(e[:10])])  # e: its first 3 of 13 8-grams
    sel = [b, c, " ".join(e[10:])]  # e: its last 3 of 13 8-grams
    held = [a, b, c, d, " ".join(e)]
    (t,), rep = decontaminate_targets([_target(held, sel)], pool)
    got = {x["index"]: x["reason"] for x in rep["t"]["groups"]["g"]["removed_docs"]}
    # e: 3/13 (0.23) with the pool, 3/13 with the selection half: over the threshold in each
    assert got == {0: "pool", 1: "selection", 2: "both", 4: "both"}
    assert t.eval_groups["g"] == [d]
    pool = ListTexts([" ".join(e[:9])])  # 2/13 each: only the union exceeds 0.20
    (t,), rep = decontaminate_targets([_target([" ".join(e), d], [" ".join(e[11:])])], pool)
    assert t.eval_groups["g"] == [d]
    assert rep["t"]["by_reason"] == {"pool": 0, "selection": 0, "both": 0, "union": 1}


def test_short_and_empty_documents():
    pool = ListTexts(["the quick brown fox jumps over", "lazy dog"])
    held = ["Quick, brown FOX jumps!", "quick fox brown jumps", "?!", "dog lazy"]
    (t,), rep = decontaminate_targets([_target(held, ["zzz"])], pool)
    # verbatim (case and punctuation aside) in a row: removed; same words reordered: kept
    assert t.eval_groups["g"] == held[1:]
    g = rep["t"]["groups"]["g"]
    assert (g["short"], g["empty"], g["removed"]) == (3, 1, 1)


def test_ngrams_do_not_cross_pool_rows():
    doc = seq("r", 16)
    pool = ListTexts([" ".join(doc[:8]), " ".join(doc[8:])])  # 2 of 9 8-grams, one per row
    (o,) = held_out_overlaps([[" ".join(doc)]], pool, [None], HeldOutFilter(block_rows=1))
    assert o["pool"][0] == pytest.approx(2 / 9)
    (o2,) = held_out_overlaps([[" ".join(doc)]], ListTexts([" ".join(doc)]), [None])
    assert o2["pool"][0] == 1.0


def test_file_target_is_compared_with_the_pool_only():
    text = " ".join(seq("f", 20))
    t = Target("file", {"file": [text]}, {"file": [text]}, distinct_halves=False)
    (out,), rep = decontaminate_targets([t], ListTexts(["nothing shared"]))
    assert out.eval_groups == {"file": [text]}  # its own selection texts are not the pool
    assert rep["file"]["selection_half"] is False
    assert "not known" in describe(rep["file"])


def test_everything_removed_is_an_error_and_off_is_reported():
    text = " ".join(seq("s", 20))
    with pytest.raises(InputError, match="nothing is left"):
        decontaminate_targets([_target([text], ["x"])], ListTexts([text]))
    assert "not decontaminated" in describe({"enabled": False})
