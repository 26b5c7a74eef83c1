"""The static HTML page of ``trace`` (issue 26): texts with every span that occurs in the
training data highlighted, and per span where it occurs, which checkpoint saw it first and
how its exposures (and loss, when scored) grow over the checkpoints.

One self-contained file: inline CSS and JS, no network, no server. Everything that can be
computed here is: the texts are cut into segments (each with the spans that cover it, in
Python's code-point offsets, so no JS ever indexes a string), HTML-escaped and written as
markup; the first checkpoint of every span and occurrence and the plots' series are
precomputed and embedded as JSON in a ``<script type="application/json">`` whose ``<``,
``>`` and ``&`` are ``\\u`` escapes (a text holding ``</script>`` cannot end it). The JS only
fills the details panel (with ``textContent``, never ``innerHTML``) when a highlighted
passage is clicked or the URL's hash is ``#span=R-S`` (record R, span S; both 0-based).

Elements a test or a user script can query: ``[data-span~="R-S"]`` (the highlighted
segments of span R-S; a segment covered by several spans lists them all, longest first),
``#details``, ``.span-detail[data-span]``, ``.count``, ``.first[data-revision]``,
``tr.occ`` (cells ``td.step``, ``td.slot``, ``td.instance``, ``td.offset``, ``td.first``,
``td.context``), ``svg.plot``, ``p.nospan``.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from anatomy.io import write_text

LEVELS = 5  # colour levels of the highlight (log scale of the largest count covering a char)
_RECORD_KEYS = ("text", "spans", "n_tokens")  # the others are the input's fields, shown as is


# ---------------------------------------------------------------------------------------
# the pure parts


def _ordered(checkpoints: Sequence[Mapping]) -> list[Mapping]:
    return sorted(checkpoints, key=lambda c: c["step"])


def first_checkpoint(step: int, checkpoints: Sequence[Mapping]) -> str | None:
    """The revision of the first checkpoint that trained on ``step``: the first one whose step
    is greater (a checkpoint at step S has seen exactly the steps < S); None when none is."""
    for c in _ordered(checkpoints):
        if c["step"] > step:
            return c["revision"]
    return None


def span_first_checkpoint(span: Mapping, checkpoints: Sequence[Mapping]) -> str | None:
    """The first checkpoint that saw a span: the first with a positive exposure count; from
    the listed occurrences' earliest step when the span carries no exposures for these
    checkpoints (the list may be capped, so exposures are preferred)."""
    exposures = span.get("exposures") or {}
    ordered = _ordered(checkpoints)
    if any(c["revision"] in exposures for c in ordered):
        for c in ordered:
            if (exposures.get(c["revision"]) or 0) > 0:
                return c["revision"]
        return None
    steps = [o["step"] for o in span.get("occurrences") or () if o.get("step") is not None]
    return first_checkpoint(min(steps), ordered) if steps else None


def count_level(count: int, max_count: int, levels: int = LEVELS) -> int:
    """Colour level 1..levels of a count on a log scale up to the page's largest count."""
    if max_count <= 1 or count <= 1:
        return 1
    return max(1, min(levels, math.ceil(levels * math.log1p(count) / math.log1p(max_count))))


def level_ranges(max_count: int, levels: int = LEVELS) -> list[tuple[int, int, int]]:
    """``(level, lowest count, highest count)`` of each level that some count 1..max has."""
    max_count = max(1, max_count)
    lows = []
    for k in range(1, levels + 1):
        lo = 1 if k == 1 else math.floor(math.expm1((k - 1) * math.log1p(max_count) / levels)) + 1
        lo = max(1, lo)
        while lo <= max_count and count_level(lo, max_count, levels) < k:  # float edges
            lo += 1
        while lo > 1 and count_level(lo - 1, max_count, levels) >= k:
            lo -= 1
        lows.append(lo)
    out = []
    for k, lo in enumerate(lows, 1):
        hi = lows[k] - 1 if k < levels else max_count
        if lo <= hi:
            out.append((k, lo, hi))
    return out


def segments(text: str, bounds: Sequence[tuple[int, int]]) -> list[tuple[str, list[int]]]:
    """Cut ``text`` where any span starts or ends: ``(piece, indices of the spans covering it)``
    in order; ``bounds`` are code-point ``(start, end)`` offsets, as Python slices them."""
    starts: dict[int, list[int]] = {}
    ends: dict[int, list[int]] = {}
    for i, (a, b) in enumerate(bounds):
        starts.setdefault(a, []).append(i)
        ends.setdefault(b, []).append(i)
    cuts = sorted({0, len(text), *starts, *ends})
    active: set[int] = set()
    out = []
    for a, b in zip(cuts, cuts[1:], strict=False):
        active.difference_update(ends.get(a, ()))
        active.update(starts.get(a, ()))
        out.append((text[a:b], sorted(active)))
    return out


def _int(x: Any) -> int | None:
    return None if x is None else int(x)  # numpy integers too


def _finite(x: Any) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _span_data(r: int, s: int, span: Mapping, text: str, checkpoints: list[Mapping]) -> dict:
    occurrences = sorted(span.get("occurrences") or (),
                         key=lambda o: (o.get("step") is None, o.get("step") or 0,
                                        o.get("slot") or 0))
    exposures = span.get("exposures") or {}
    loss = span.get("loss")
    revs = [c["revision"] for c in checkpoints]
    occ = []
    for o in occurrences:
        ctx = o.get("context")
        occ.append({
            "step": _int(o.get("step")), "slot": _int(o.get("slot")),
            "instance": _int(o.get("instance")), "offset": _int(o.get("offset")),
            "within_row": None if o.get("within_row") is None else bool(o["within_row"]),
            "first": None if o.get("step") is None else first_checkpoint(o["step"], checkpoints),
            "context": None if not ctx else [str(ctx.get("before", "")),
                                             str(ctx.get("match", "")),
                                             str(ctx.get("after", ""))],
        })
    series_e = [int(exposures.get(v) or 0) for v in revs]
    return {
        "id": f"{r}-{s}", "start": _int(span.get("start")), "end": _int(span.get("end")),
        "text": str(span["text"]) if "text" in span else text[span["char_start"]:span["char_end"]],
        "count": len(occ) if span.get("count") is None else int(span["count"]),
        "first": span_first_checkpoint(span, checkpoints),
        "max_exposure": max(series_e, default=0),
        "exposures": series_e,
        "loss": None if loss is None else [_finite(loss.get(v)) for v in revs],
        "occurrences": occ,
    }


def _bounds(r: int, record: Mapping) -> list[tuple[int, int]]:
    text = record.get("text")
    if not isinstance(text, str):
        raise ValueError(f"record {r}: its text is not a string ({type(text).__name__})")
    out = []
    for s, span in enumerate(record.get("spans") or ()):
        a, b = span.get("char_start"), span.get("char_end")
        try:
            a, b = int(a), int(b)  # numpy integers too; None and floats' fractions refused
            ok = a == span["char_start"] and b == span["char_end"] and 0 <= a < b <= len(text)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"record {r}, span {s}: char_start {a!r} / char_end {b!r} is not a "
                             f"non-empty range of its text of {len(text)} characters")
        out.append((a, b))
    return out


# ---------------------------------------------------------------------------------------
# the page


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _script_json(obj: Any) -> str:
    s = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return s.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def _field(value: Any) -> str:
    s = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return s if len(s) <= 300 else s[:300] + "…"


def _record_html(r: int, n: int, record: Mapping, bounds: list[tuple[int, int]],
                 counts: list[int], max_count: int, min_tokens: Any) -> str:
    text = record["text"]
    nspans = len(bounds)
    head = [f"text {r + 1} of {n}"]
    if record.get("n_tokens") is not None:
        head.append(f"{record['n_tokens']} tokens")
    head.append(f"{nspans} span{'' if nspans == 1 else 's'}")
    fields = "".join(f"<span class=\"field\"><b>{_e(k)}</b> {_e(_field(v))}</span>"
                     for k, v in record.items() if k not in _RECORD_KEYS)
    parts = [f'<section class="record" id="record-{r}"><h2>{_e(" · ".join(head))}</h2>']
    if fields:
        parts.append(f'<p class="fields">{fields}</p>')
    if not bounds:
        at_least = f" of at least {min_tokens} tokens" if min_tokens is not None else ""
        parts.append(f'<p class="nospan">no span{_e(at_least)} occurs in the training data</p>')
    # longest span first where several cover a segment (the details panel's order)
    rank = sorted(range(nspans), key=lambda i: (bounds[i][0] - bounds[i][1], bounds[i][0]))
    order = {i: k for k, i in enumerate(rank)}
    pieces = []
    for piece, covering in segments(text, bounds):
        if not covering:
            pieces.append(_e(piece))
            continue
        covering.sort(key=order.__getitem__)
        top = max(counts[i] for i in covering)
        cls = f"h l{count_level(top, max_count)}" + (" multi" if len(covering) > 1 else "")
        ids = " ".join(f"{r}-{i}" for i in covering)
        title = f"{len(covering)} spans, up to {top} occurrences" if len(covering) > 1 else \
            f"{top} occurrence{'' if top == 1 else 's'}"
        pieces.append(f'<span class="{cls}" data-span="{ids}" tabindex="0" '
                      f'title="{_e(title)}">{_e(piece)}</span>')
    parts.append(f'<pre class="text">{"".join(pieces)}</pre></section>')
    return "".join(parts)


def render_page(records: Sequence[Mapping], meta: Mapping) -> str:
    """The page's HTML (see :func:`write_page`)."""
    checkpoints = [{"revision": str(c["revision"]), "step": int(c["step"])}
                   for c in _ordered(meta.get("checkpoints") or ())]
    all_bounds = [_bounds(r, rec) for r, rec in enumerate(records)]
    spans: dict[str, dict] = {}
    all_counts = []
    for r, rec in enumerate(records):
        counts = []
        for s, span in enumerate(rec.get("spans") or ()):
            d = _span_data(r, s, span, rec["text"], checkpoints)
            spans[d["id"]] = d
            counts.append(d["count"])
        all_counts.append(counts)
    max_count = max((c for cs in all_counts for c in cs), default=1)
    min_tokens = meta.get("min_tokens")

    title = str(meta.get("title") or "trace")
    info = []
    for key, label in (("index", "index"), ("batch_size", "batch size"),
                       ("min_tokens", "shortest span (tokens)"), ("generated_by", "made by")):
        if meta.get(key) is not None:
            info.append(f"<div><dt>{_e(label)}</dt><dd>{_e(meta[key])}</dd></div>")
    cps = ", ".join(f'<span class="cp">{_e(c["revision"])}</span>' for c in checkpoints) or "none"
    info.append(f"<div><dt>checkpoints</dt><dd>{cps} <span class=\"note\">(a checkpoint at "
                f"step S has seen the occurrences at steps &lt; S)</span></dd></div>")
    legend = "".join(f'<span class="sw l{k}">{lo if lo == hi else f"{lo}–{hi}"}</span>'
                     for k, lo, hi in level_ranges(max_count))
    legend = (f'<p class="legend">occurrences in the training data (log scale): {legend} '
              f'<span class="sw l3 multi">underlined</span> where several spans overlap; '
              f'click a highlighted passage for its details</p>')
    body = "".join(_record_html(r, len(records), rec, all_bounds[r], all_counts[r], max_count,
                                min_tokens) for r, rec in enumerate(records))
    if not records:
        body = '<p class="nospan">no texts</p>'
    data = {"checkpoints": checkpoints, "spans": spans}
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{_e(title)}</h1><dl>{''.join(info)}</dl>{legend}</header>"
        f"<div class=\"layout\"><main>{body}</main>"
        "<aside id=\"details\" aria-live=\"polite\"><p class=\"hint\">Click a highlighted "
        "passage to see where it occurs in the training data.</p></aside></div>"
        f"<script type=\"application/json\" id=\"trace-data\">{_script_json(data)}</script>"
        f"<script>{_JS}</script></body></html>\n"
    )


def write_page(path: str | os.PathLike, records: Sequence[Mapping], meta: Mapping) -> None:
    """Write the trace page of ``records`` (one per input text, with their ``spans``) as one
    self-contained HTML file, atomically.

    ``meta``: ``title``, ``checkpoints`` (``[{"revision", "step"}]``), ``index``,
    ``batch_size``, ``generated_by`` and optionally ``min_tokens`` (the shortest span traced,
    named in the message of a text with no span). Raises ValueError for a span whose
    ``char_start``/``char_end`` is not a non-empty range of its text.
    """
    write_text(path, render_page(records, meta))


_CSS = """
:root{--hl:232,118,0}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1c1c1e;
background:#f6f6f4}
header{padding:12px 20px 6px;background:#fff;border-bottom:1px solid #ddd}
h1{font-size:20px;margin:0 0 6px}
dl{margin:0;display:flex;flex-wrap:wrap;gap:2px 22px}
dl div{display:flex;gap:6px}dt{color:#666}dd{margin:0;word-break:break-all}
.cp{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
.note,.hint,.plot-key{color:#666;font-size:12px}
.legend{margin:8px 0 4px;font-size:12px;color:#444}
.sw{display:inline-block;padding:0 6px;margin:0 1px;border-radius:3px;
font-family:ui-monospace,Menlo,Consolas,monospace}
.layout{display:grid;grid-template-columns:minmax(0,1fr) minmax(320px,38%);gap:16px;
padding:14px 20px}
@media (max-width:900px){.layout{grid-template-columns:1fr}}
.record h2{font-size:14px;margin:6px 0 4px;color:#333}
.fields{margin:0 0 4px;font-size:12px;color:#444;display:flex;flex-wrap:wrap;gap:2px 14px}
.nospan{margin:2px 0 6px;color:#8a4b00;font-style:italic}
pre.text{white-space:pre-wrap;overflow-wrap:anywhere;margin:0 0 14px;padding:10px 12px;
font:13px/1.55 ui-monospace,Menlo,Consolas,"DejaVu Sans Mono",monospace;background:#fff;
border:1px solid #e0e0e0;border-radius:5px}
.h{cursor:pointer;border-radius:2px}
.l1{background:rgba(var(--hl),.14)}.l2{background:rgba(var(--hl),.28)}
.l3{background:rgba(var(--hl),.44)}.l4{background:rgba(var(--hl),.62)}
.l5{background:rgba(var(--hl),.82)}
.multi{text-decoration:underline;text-decoration-color:#7a2e00;text-decoration-thickness:2px;
text-underline-offset:3px}
.h.sel{outline:2px solid #0a5bd3;outline-offset:0}
.h:focus-visible{outline:2px dashed #0a5bd3}
aside#details{position:sticky;top:10px;align-self:start;max-height:calc(100vh - 20px);
overflow:auto;background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px 14px}
.span-detail{border-bottom:1px solid #eee;padding:6px 0 10px}
.span-detail:last-child{border-bottom:0}
.span-detail h3{font-size:14px;margin:4px 0}
.span-detail h3 a{font-weight:normal;font-size:12px;margin-left:8px}
pre.spantext{white-space:pre-wrap;overflow-wrap:anywhere;margin:4px 0;padding:6px 8px;
background:rgba(var(--hl),.14);border-radius:4px;font:12px/1.45 ui-monospace,Menlo,Consolas,
monospace;max-height:12em;overflow:auto}
.count,.first{margin:2px 0}
svg.plot{display:block;margin:6px 0 0;font:10px system-ui,sans-serif}
svg.plot .bar{fill:rgba(var(--hl),.7)}svg.plot .axis{stroke:#999;stroke-width:1}
svg.plot .lossline{fill:none;stroke:#0a5bd3;stroke-width:1.5}svg.plot .losspt{fill:#0a5bd3}
svg.plot text{fill:#555}
table.occs{border-collapse:collapse;width:100%;margin-top:6px;font-size:12px}
table.occs th,table.occs td{border-bottom:1px solid #eee;padding:2px 5px;text-align:left;
vertical-align:top}
table.occs td.num{text-align:right;font-variant-numeric:tabular-nums}
td.context{font-family:ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap;
overflow-wrap:anywhere;max-width:26em}
td.context b{background:rgba(var(--hl),.35)}
"""

_JS = r"""
(function () {
"use strict";
var DATA = JSON.parse(document.getElementById("trace-data").textContent);
var SVG = "http://www.w3.org/2000/svg";
var details = document.getElementById("details");
var stepOf = {};
DATA.checkpoints.forEach(function (c) { stepOf[c.revision] = c.step; });

function el(tag, cls, text) {
  var e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}
function sv(tag, attrs, text) {
  var e = document.createElementNS(SVG, tag);
  for (var k in attrs) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = String(text);
  return e;
}
function plural(n, word) { return n + " " + word + (n === 1 ? "" : "s"); }
function hasLoss(sp) {
  return !!sp.loss && sp.loss.some(function (v) { return v !== null; });
}
function cpText(rev) { return rev === null ? "none" : rev; }

function plot(sp) {
  var cps = DATA.checkpoints, n = cps.length;
  if (!n) return null;
  var loss = sp.loss, withLoss = hasLoss(sp);
  var W = 320, H = 150, L = 36, R = withLoss ? 40 : 10, T = 22, B = 30;
  var pw = W - L - R, ph = H - T - B, w = pw / n;
  var svg = sv("svg", {"class": "plot", width: W, height: H, viewBox: "0 0 " + W + " " + H,
                       role: "img"});
  svg.appendChild(sv("title", {}, "exposures" + (withLoss ? " and loss" : "") +
                                   " per checkpoint"));
  var maxE = Math.max(1, sp.max_exposure);
  svg.appendChild(sv("line", {"class": "axis", x1: L, y1: T, x2: L, y2: T + ph}));
  svg.appendChild(sv("line", {"class": "axis", x1: L, y1: T + ph, x2: L + pw, y2: T + ph}));
  svg.appendChild(sv("text", {x: L - 4, y: T + 4, "text-anchor": "end"}, maxE));
  svg.appendChild(sv("text", {x: L - 4, y: T + ph, "text-anchor": "end"}, 0));
  svg.appendChild(sv("text", {x: 2, y: 10}, "exposures"));
  var every = Math.ceil(n / 8);
  cps.forEach(function (c, i) {
    var e = sp.exposures[i], h = ph * e / maxE;
    var bar = sv("rect", {"class": "bar", x: L + i * w + w * 0.15, y: T + ph - h,
                          width: w * 0.7, height: h, "data-revision": c.revision});
    bar.appendChild(sv("title", {}, c.revision + ": " + plural(e, "exposure")));
    svg.appendChild(bar);
    if (i % every === 0 || i === n - 1)
      svg.appendChild(sv("text", {x: L + (i + 0.5) * w, y: T + ph + 12, "text-anchor": "middle"},
                         c.step));
  });
  svg.appendChild(sv("text", {x: L + pw / 2, y: H - 3, "text-anchor": "middle"},
                     "checkpoint step"));
  if (withLoss) {
    var vals = loss.filter(function (v) { return v !== null; });
    var lo = Math.min.apply(null, vals), hi = Math.max.apply(null, vals);
    if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
    var y = function (v) { return T + ph * (hi - v) / (hi - lo); };
    svg.appendChild(sv("line", {"class": "axis", x1: L + pw, y1: T, x2: L + pw, y2: T + ph}));
    svg.appendChild(sv("text", {x: L + pw + 4, y: T + 4}, hi.toFixed(2)));
    svg.appendChild(sv("text", {x: L + pw + 4, y: T + ph}, lo.toFixed(2)));
    svg.appendChild(sv("text", {x: W - 2, y: 10, "text-anchor": "end"}, "loss"));
    var pts = [];
    loss.forEach(function (v, i) {
      if (v === null) return;
      var x = L + (i + 0.5) * w;
      pts.push(x.toFixed(1) + "," + y(v).toFixed(1));
      var dot = sv("circle", {"class": "losspt", cx: x, cy: y(v), r: 3,
                              "data-revision": cps[i].revision});
      dot.appendChild(sv("title", {}, cps[i].revision + ": loss " + v.toFixed(3)));
      svg.appendChild(dot);
    });
    svg.insertBefore(sv("polyline", {"class": "lossline", points: pts.join(" ")}),
                     svg.querySelector("circle"));
  }
  return svg;
}

function spanBlock(sp) {
  var box = el("div", "span-detail");
  box.setAttribute("data-span", sp.id);
  var h = el("h3", null, "span " + sp.id + (sp.start !== null && sp.start !== undefined ?
      " (tokens " + sp.start + "–" + sp.end + ")" : ""));
  var a = el("a", null, "link");
  a.href = "#span=" + sp.id;
  h.appendChild(a);
  box.appendChild(h);
  box.appendChild(el("pre", "spantext", sp.text));
  var listed = sp.occurrences.length;
  box.appendChild(el("p", "count", plural(sp.count, "occurrence") +
                     (listed < sp.count ? ", " + listed + " listed" : "")));
  var first = el("p", "first");
  first.setAttribute("data-revision", sp.first === null ? "" : sp.first);
  first.appendChild(document.createTextNode("first seen by checkpoint: "));
  first.appendChild(el("b", null, sp.first === null ? "none of them" :
                       sp.first + " (step " + stepOf[sp.first] + ")"));
  box.appendChild(first);
  var svg = plot(sp);
  if (svg) {
    box.appendChild(svg);
    box.appendChild(el("p", "plot-key", "bars: exposures (occurrences at steps before the " +
                       "checkpoint, left axis)" + (hasLoss(sp) ? "; line: the checkpoint's loss " +
                       "on the span (right axis)" : "")));
  }
  if (listed) {
    var t = el("table", "occs"), tr = el("tr");
    ["step", "slot", "instance", "offset", "within row", "first checkpoint", "context"]
      .forEach(function (c) { tr.appendChild(el("th", null, c)); });
    t.appendChild(el("thead")).appendChild(tr);
    var tb = t.appendChild(el("tbody"));
    sp.occurrences.forEach(function (o) {
      var row = el("tr", "occ");
      [["step", o.step], ["slot", o.slot], ["instance", o.instance], ["offset", o.offset]]
        .forEach(function (p) { row.appendChild(el("td", p[0] + " num", p[1])); });
      row.appendChild(el("td", "row", o.within_row === null || o.within_row === undefined ?
                         "" : (o.within_row ? "yes" : "no")));
      row.appendChild(el("td", "first", o.step === null ? "" : cpText(o.first)));
      var ctx = el("td", "context");
      if (o.context) {
        ctx.appendChild(document.createTextNode(o.context[0]));
        ctx.appendChild(el("b", null, o.context[1]));
        ctx.appendChild(document.createTextNode(o.context[2]));
      }
      row.appendChild(ctx);
      tb.appendChild(row);
    });
    box.appendChild(t);
  }
  return box;
}

function show(ids) {
  document.querySelectorAll(".h.sel").forEach(function (e) { e.classList.remove("sel"); });
  details.replaceChildren();
  ids = ids.filter(function (id) { return DATA.spans[id]; });
  if (ids.length > 1)
    details.appendChild(el("p", "hint", ids.length + " spans cover this passage, longest first"));
  ids.forEach(function (id) {
    document.querySelectorAll('[data-span~="' + id + '"]')
      .forEach(function (e) { e.classList.add("sel"); });
    details.appendChild(spanBlock(DATA.spans[id]));
  });
  details.scrollTop = 0;
}

function pick(e) {
  var t = e.target.closest && e.target.closest("pre.text [data-span]");
  if (t) show(t.getAttribute("data-span").split(" "));
}
document.addEventListener("click", pick);
document.addEventListener("keydown", function (e) {
  if (e.key === "Enter" || e.key === " ") { pick(e); }
});

function fromHash() {
  var m = /^#span=(\d+-\d+)$/.exec(location.hash);
  if (!m || !DATA.spans[m[1]]) return;
  show([m[1]]);
  var seg = document.querySelector('pre.text [data-span~="' + m[1] + '"]');
  if (seg) seg.scrollIntoView({block: "center"});
}
window.addEventListener("hashchange", fromHash);
fromHash();
})();
"""
