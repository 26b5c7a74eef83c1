"""The trace page (anatomy/trace/page.py) as a browser shows it: headless Chromium through
Playwright, the system's Chromium (Debian's ``chromium``; ``make install`` installs it where
apt-get can). The browser tests skip, with the reason, only when no Chromium executable or
no playwright module is found (see :func:`browser`).

The expected values are written by hand beside the records, not computed by the module:
spans' character offsets come from ``str.index`` on the Python strings (code points; the
texts hold the non-BMP "𝔘", two UTF-16 units in the browser, before and inside spans), the
first checkpoint of each occurrence is read off the checkpoint steps 200 / 400 / 900 (a
checkpoint at step S has seen the steps < S), and the counts are the records' own.
"""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest

from anatomy.trace.page import (
    count_level,
    first_checkpoint,
    level_ranges,
    segments,
    span_first_checkpoint,
    write_page,
)

CHECKPOINTS = [{"revision": "step200-tokens410K", "step": 200},
               {"revision": "step400-tokens819K", "step": 400},
               {"revision": "step900-tokens1843K", "step": 900}]
C200, C400, C900 = (c["revision"] for c in CHECKPOINTS)

TEXT0 = ("# 𝔘nicode 𝔘 header\ndef foo(x):\n    return x + 1\n\n"
         "print('</script><b>not bold</b>')\n")
TEXT1 = "nothing 𝔘 here </script><script>alert(1)</script> & <b>x</b>"

A = "def foo(x):\n    return x + 1"                # 12 occurrences, 3 listed, loss
B = "return x + 1\n\nprint('</script><b>not"      # overlaps A on "return x + 1"; 2, loss
C = "𝔘nicode 𝔘 header"                           # non-BMP inside; 1, after the last checkpoint


def _span(text: str, piece: str, tokens: tuple[int, int], count: int, steps: list[int],
          exposures: dict[str, int], loss: dict[str, float] | None) -> dict:
    a = text.index(piece)
    occ = [{"instance": 4000 + i, "offset": 10 + i, "step": st, "slot": 3 * i + 1,
            "within_row": i % 2 == 0,
            "context": {"before": "ctx </b> before ", "match": piece, "after": " after"}}
           for i, st in enumerate(steps)]
    span = {"start": tokens[0], "end": tokens[1], "char_start": a, "char_end": a + len(piece),
            "text": piece, "count": count, "occurrences": occ, "exposures": exposures}
    if loss is not None:
        span["loss"] = loss
    return span


def _records() -> list[dict]:
    spans = [
        _span(TEXT0, A, (6, 16), 12, [610, 23, 250],
              {C200: 3, C400: 7, C900: 12}, {C200: 5.12, C400: 2.3, C900: 0.8}),
        _span(TEXT0, B, (12, 25), 2, [260, 380], {C200: 0, C400: 2, C900: 2},
              {C200: 6.0, C400: 4.5, C900: 4.4}),
        _span(TEXT0, C, (1, 5), 1, [950], {C200: 0, C400: 0, C900: 0}, None),
    ]
    return [{"text": TEXT0, "id": "rec-0", "n_tokens": 31, "spans": spans},
            {"text": TEXT1, "id": "rec-1", "n_tokens": 12, "spans": []}]


META = {"title": "trace test </title>", "checkpoints": CHECKPOINTS, "index": "/idx/stream",
        "batch_size": 16, "min_tokens": 8, "generated_by": "trace.py --test"}

# what the details panel must show per span, by hand
EXPECTED = {
    "0-0": {"text": A, "count_line": "12 occurrences, 3 listed", "first": C200,
            "steps": [23, 250, 610], "occ_first": [C200, C400, C900]},
    "0-1": {"text": B, "count_line": "2 occurrences", "first": C400,
            "steps": [260, 380], "occ_first": [C400, C400]},
    "0-2": {"text": C, "count_line": "1 occurrence", "first": "",
            "steps": [950], "occ_first": ["none"]},
}


# ---------------------------------------------------------------------------------------
# the pure helpers (no browser)


def test_first_checkpoint():
    assert first_checkpoint(0, CHECKPOINTS) == C200
    assert first_checkpoint(199, CHECKPOINTS) == C200
    assert first_checkpoint(200, CHECKPOINTS) == C400  # a checkpoint at S saw steps < S
    assert first_checkpoint(899, CHECKPOINTS) == C900
    assert first_checkpoint(900, CHECKPOINTS) is None
    assert first_checkpoint(5, list(reversed(CHECKPOINTS))) == C200
    assert first_checkpoint(5, []) is None
    spans = _records()[0]["spans"]
    assert [span_first_checkpoint(s, CHECKPOINTS) for s in spans] == [C200, C400, None]
    no_exposures = {k: v for k, v in spans[1].items() if k != "exposures"}
    assert span_first_checkpoint(no_exposures, CHECKPOINTS) == C400  # from steps 260, 380


def test_segments_and_levels():
    text = "abcdefgh"
    # spans [1, 5) and [3, 7): the overlap "de" belongs to both
    assert segments(text, [(1, 5), (3, 7)]) == [
        ("a", []), ("bc", [0]), ("de", [0, 1]), ("fg", [1]), ("h", [])]
    assert segments("x𝔘y", [(1, 2)]) == [("x", []), ("𝔘", [0]), ("y", [])]
    assert count_level(1, 1000) == 1 and count_level(1000, 1000) == 5
    ranges = level_ranges(1000)
    assert ranges[0][1] == 1 and ranges[-1][2] == 1000
    for (_, _, hi), (_, lo, _) in zip(ranges, ranges[1:], strict=False):
        assert lo == hi + 1
    for k, lo, hi in ranges:
        assert count_level(lo, 1000) == k and count_level(hi, 1000) == k
    assert level_ranges(1) == [(1, 1, 1)]


def test_page_file(tmp_path):
    path = tmp_path / "sub" / "trace.html"
    write_page(path, _records(), META)
    page = path.read_text(encoding="utf-8")
    # the two real script elements end; no text's "</script>" ends one early
    assert page.count("</script>") == 2 and page.count("<script") == 2
    assert "http://" not in page.replace('"http://www.w3.org/2000/svg"', "")
    assert "https://" not in page
    assert [p.name for p in path.parent.iterdir()] == ["trace.html"]  # no temporary left
    data = json.loads(re.search(r'<script type="application/json" id="trace-data">(.*?)</script>',
                                page, re.S).group(1))
    assert data["spans"]["0-1"]["text"] == B
    # numpy integers, as the library's arrays give them, are written as numbers
    import numpy as np

    recs = _records()
    span = recs[0]["spans"][0]
    span["char_start"], span["char_end"] = np.int64(span["char_start"]), np.int64(span["char_end"])
    for o in span["occurrences"]:
        o["step"], o["slot"], o["within_row"] = np.int64(o["step"]), np.uint32(1), np.bool_(True)
    write_page(tmp_path / "np.html", recs, META)
    assert "print(&#x27;&lt;/script&gt;" in (tmp_path / "np.html").read_text(encoding="utf-8")
    bad = _records()
    bad[0]["spans"][0]["char_end"] = len(TEXT0) + 1
    with pytest.raises(ValueError, match="record 0, span 0"):
        write_page(tmp_path / "bad.html", bad, META)
    assert not (tmp_path / "bad.html").exists()


# ---------------------------------------------------------------------------------------
# in the browser

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _chromium() -> str | None:
    for exe in (os.environ.get("CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium",
                shutil.which("chromium-browser")):
        if exe and os.access(exe, os.X_OK):
            return exe
    return None


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium; the one place that skips (no executable, or no playwright)."""
    exe = _chromium()
    if exe is None:
        pytest.skip("no Chromium executable (chromium on PATH or /usr/bin/chromium): "
                    "apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def page_url(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("trace_page") / "trace.html"
    write_page(path, _records(), META)
    return path.as_uri()


def _span_text(page, sid: str) -> str:
    return page.eval_on_selector_all(f'pre.text [data-span~="{sid}"]',
                                     "els => els.map(e => e.textContent).join('')")


def _details(page) -> list[dict]:
    return page.eval_on_selector_all("#details .span-detail", """boxes => boxes.map(b => ({
        id: b.dataset.span,
        text: b.querySelector('pre.spantext').textContent,
        count_line: b.querySelector('.count').textContent,
        first: b.querySelector('.first').dataset.revision,
        steps: [...b.querySelectorAll('tr.occ td.step')].map(td => Number(td.textContent)),
        occ_first: [...b.querySelectorAll('tr.occ td.first')].map(td => td.textContent),
        bold: [...b.querySelectorAll('tr.occ td.context b')].map(e => e.textContent),
        bars: b.querySelectorAll('svg.plot rect.bar').length,
        loss_points: b.querySelectorAll('svg.plot circle.losspt').length,
    }))""")


def _check(box: dict, sid: str) -> None:
    want = EXPECTED[sid]
    assert box["id"] == sid
    for key in ("text", "count_line", "first", "steps", "occ_first"):
        assert box[key] == want[key], (sid, key)
    assert box["bold"] == [want["text"]] * len(want["steps"])
    assert box["bars"] == len(CHECKPOINTS)
    assert box["loss_points"] == (0 if sid == "0-2" else len(CHECKPOINTS))


def test_page_in_browser(browser, page_url, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(page_url)

    # the texts exactly as given, tags and "</script>" shown literally
    texts = page.eval_on_selector_all("pre.text", "els => els.map(e => e.textContent)")
    assert texts == [TEXT0, TEXT1]
    assert page.locator("pre.text b, pre.text script").count() == 0
    assert page.title() == META["title"]

    # three distinct spans highlighted, each exactly its text (non-BMP offsets right)
    ids = page.eval_on_selector_all("pre.text [data-span]",
                                    "els => els.flatMap(e => e.dataset.span.split(' '))")
    assert sorted(set(ids)) == ["0-0", "0-1", "0-2"]
    for sid, want in EXPECTED.items():
        assert _span_text(page, sid) == want["text"], sid
    shared = page.eval_on_selector_all('pre.text [data-span~="0-0"][data-span~="0-1"]',
                                       "els => els.map(e => e.textContent)")
    assert shared == ["return x + 1"]

    # the record without spans: its message
    assert page.locator("#record-1 p.nospan").inner_text() == \
        "no span of at least 8 tokens occurs in the training data"
    assert page.locator("#record-0 p.nospan").count() == 0

    # clicking a passage covered by A alone: A's details
    page.locator('pre.text [data-span="0-0"]').first.click()
    boxes = _details(page)
    assert len(boxes) == 1
    _check(boxes[0], "0-0")
    assert page.locator("#details tr.occ").count() == 3

    # the overlap: both spans, longest first
    assert len(B) > len(A)
    page.locator('pre.text [data-span="0-1 0-0"]').click()
    boxes = _details(page)
    assert [b["id"] for b in boxes] == ["0-1", "0-0"]
    for box in boxes:
        _check(box, box["id"])
    assert page.locator("#details tr.occ").count() == 5
    shot = tmp_path / "trace_page.png"
    page.screenshot(path=str(shot), full_page=True)

    # the span that only occurs after the last checkpoint
    page.locator('pre.text [data-span="0-2"]').first.click()
    _check(_details(page)[0], "0-2")

    assert shot.stat().st_size > 1000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("TRACE_PAGE_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["TRACE_PAGE_SCREENSHOT"])
    assert errors == []
    page.close()


def test_page_hash_preselects(browser, page_url):
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(page_url + "#span=0-1")
    boxes = _details(page)
    assert [b["id"] for b in boxes] == ["0-1"]
    _check(boxes[0], "0-1")
    assert _span_text(page, "0-1") == B
    selected = page.eval_on_selector_all("pre.text .sel", "els => els.map(e => e.textContent)")
    assert "".join(selected) == B
    # an unknown span in the hash leaves the panel's hint
    assert errors == []
    page.close()
    # an unknown span in the hash leaves the panel's hint
    page = browser.new_page()
    page.goto(page_url + "#span=9-9")
    assert page.locator("#details .span-detail").count() == 0
    assert page.locator("#details .hint").count() == 1
    page.close()

