"""The trace step: texts -> maximal spans in the trained stream -> occurrences, exposures
before each checkpoint, and (optionally) each checkpoint's loss on every span.

For each text (JSONL field ``text``, or ``input_ids`` already tokenized with the training
tokenizer) the output record keeps the input's fields and adds ``n_tokens`` and ``spans``:
``[{"start", "end", "char_start", "char_end", "text", "count", "count_within_row",
"occurrences": [{"instance", "offset", "step", "slot", "within_row"}, ...], "first_step",
"exposures": {revision: n}, "loss": {revision: mean loss}}]``. ``start``/``end`` are token
offsets into the text, ``char_*`` character offsets; ``count`` is every occurrence in the
trained stream (training order), ``count_within_row`` those inside one training sequence
(what ``filter_duplicates.py --ngrams`` counts); ``occurrences`` lists the first
``max_occurrences`` in training order; ``exposures[r]`` is how many occurrences lie in
steps before checkpoint r's step (a checkpoint saved after step S has trained on steps
0..S-1). ``loss`` (with ``score``) is the mean next-token loss of the span's tokens (from
its second token when it starts the text) under each checkpoint, and ``token_loss`` the
per-token losses it is the mean of; one batched pass per checkpoint
(:func:`anatomy.lm.token_stats`, as ``run_mia.py``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from anatomy.io import InputError, PathLike
from anatomy.trace.index import TraceIndex
from anatomy.trace.spans import maximal_spans, unigram_filter


@dataclass
class Checkpoint:
    revision: str
    step: int


def parse_checkpoints(spec: str | Sequence[str] | Mapping[int, str]) -> list[Checkpoint]:
    """Checkpoints from a config's ``{step: revision}``, or names: ``step1000-tokens4B``
    (the step is read from ``stepN``), ``NAME=STEP``, or a bare step ``1000``."""
    if isinstance(spec, Mapping):
        out = [Checkpoint(str(r), int(s)) for s, r in spec.items()]
    else:
        items = [x.strip() for x in (spec.split(",") if isinstance(spec, str) else spec)]
        out = []
        for x in filter(None, items):
            name, _, step = x.partition("=")
            if step:
                if not step.isdigit():
                    raise InputError(None, f"checkpoint {x!r}: the step after = must be an "
                                           "integer")
                out.append(Checkpoint(name, int(step)))
            elif x.isdigit():
                out.append(Checkpoint(f"step{x}", int(x)))
            elif m := re.match(r"step(\d+)", x):
                out.append(Checkpoint(x, int(m.group(1))))
            else:
                raise InputError(None, f"checkpoint {x!r}: no step in its name (write "
                                       "NAME=STEP)")
    return sorted(out, key=lambda c: c.step)


@dataclass
class TraceOptions:
    min_len: int = 8
    max_occurrences: int = 100
    unigram_filter: bool = False
    unigram_fraction: float = 0.05
    context: int = 0  # tokens of context each side of a listed occurrence (for the page)


def encode_records(records: Sequence[Mapping[str, Any]], tokenizer, max_len: int,
                   vocab: int, where: PathLike | None = None, limit: str = "the model's context"
                   ) -> list[tuple[list[int], list[tuple[int, int]] | None, str]]:
    """``(tokens, character offsets or None, text)`` of each record; one clear error for a
    text longer than ``max_len`` tokens (``limit`` names what sets it), a character the
    tokenizer cannot encode, or an ``input_ids`` entry outside the vocabulary."""
    unk = getattr(tokenizer, "unk_token_id", None)
    out = []
    for i, rec in enumerate(records, 1):
        if "input_ids" in rec and rec["input_ids"] is not None:
            ids = rec["input_ids"]
            if not isinstance(ids, list) or not all(isinstance(t, int) and
                                                    not isinstance(t, bool) for t in ids):
                raise InputError(where, "input_ids must be a list of integers", i)
            bad = [t for t in ids if not 0 <= t < vocab]
            if bad:
                raise InputError(where, f"input_ids holds token {bad[0]}, outside the "
                                        f"training vocabulary (0..{vocab - 1})", i)
            text = rec.get("text")
            out.append((list(ids), None, text if isinstance(text, str)
                        else tokenizer.decode(ids)))
        else:
            text = rec.get("text")
            if not isinstance(text, str):
                raise InputError(where, 'each record needs a string "text" (or "input_ids")',
                                 i)
            enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            ids, offs = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
            if unk is not None and unk in ids:
                a, b = offs[ids.index(unk)]
                raise InputError(where, f"the training tokenizer cannot encode {text[a:b]!r} "
                                        f"(character {a}): it maps to its unknown token", i)
            out.append((ids, offs, text))
        if len(out[-1][0]) > max_len:
            raise InputError(where, f"the text is {len(out[-1][0])} tokens long, longer than "
                                    f"{limit} ({max_len} tokens): split it", i)
    return out


def trace_tokens(index: TraceIndex, tokens: Sequence[int], checkpoints: Sequence[Checkpoint],
                 opts: TraceOptions) -> list[dict[str, Any]]:
    """The spans of one tokenized text (without character offsets or losses)."""
    spans = maximal_spans(index.contains, tokens, opts.min_len)
    if opts.unigram_filter:
        spans = unigram_filter(spans, tokens, index.unigram, opts.unigram_fraction)
    out = []
    B = index.batch_size
    for a, b in spans:
        occ = index.locate(tokens[a:b])
        steps = occ.slot // B
        n = min(len(occ), opts.max_occurrences)
        rows = [{"instance": int(occ.instance[j]), "offset": int(occ.offset[j]),
                 "step": int(steps[j]), "slot": int(occ.slot[j]),
                 "within_row": bool(occ.within_row[j])} for j in range(n)]
        out.append({"start": a, "end": b, "count": len(occ),
                    "count_within_row": int(occ.within_row.sum()), "occurrences": rows,
                    "first_step": int(steps.min()) if len(occ) else None,
                    "exposures": {c.revision: int((steps < c.step).sum())
                                  for c in checkpoints}})
    return out


def add_contexts(index: TraceIndex, tokenizer, spans: list[dict[str, Any]], width: int
                 ) -> None:
    """Each listed occurrence's context: up to ``width`` tokens either side, within its
    training sequence (the match itself may run into the next one)."""
    L = index.seq_len
    for sp in spans:
        n = sp["end"] - sp["start"]
        for o in sp["occurrences"]:
            before, match, after = index.window(o["slot"], o["offset"], n,
                                                min(width, o["offset"]),
                                                max(0, min(width, L - o["offset"] - n)))
            o["context"] = {"before": tokenizer.decode(before.tolist()),
                            "match": tokenizer.decode(match.tolist()),
                            "after": tokenizer.decode(after.tolist())}


def span_losses(model, token_lists: Sequence[Sequence[int]],
                spans: Sequence[Sequence[Mapping[str, Any]]], batch_size: int = 16
                ) -> list[list[tuple[float | None, list[float]]]]:
    """``(mean, per-token)`` next-token loss of each span's tokens under ``model`` (one
    batched pass); a span's first token has no loss when it starts the text."""
    from anatomy.lm import token_stats

    stats = token_stats(model, [list(t) for t in token_lists], batch_size=batch_size,
                        progress=False)
    out = []
    for st, sps in zip(stats, spans, strict=True):
        lp = np.asarray(st.logprob, np.float64)  # lp[i]: token i + 1
        row = []
        for sp in sps:
            a, b = max(sp["start"], 1), sp["end"]
            tok = (-lp[a - 1:b - 1]).tolist()
            row.append((round(float(np.mean(tok)), 4) if tok else None,
                        [round(x, 4) for x in tok]))
        out.append(row)
    return out


def trace_records(index: TraceIndex, records: Sequence[Mapping[str, Any]], tokenizer,
                  checkpoints: Sequence[Checkpoint], opts: TraceOptions,
                  where: PathLike | None = None, score: bool = False
                  ) -> tuple[list[dict[str, Any]], list[list[int]]]:
    """Every record traced (see the module docstring), and each one's tokens. A text may be
    as long as the index's ``max_text_tokens`` (four sequences by default: a passage can run
    across sequences of the stream), and no longer than the model's context when it is to be
    scored (``score``)."""
    vocab = len(index.unigram)
    vocab = max(vocab, int(getattr(tokenizer, "vocab_size", 0) or 0), len(tokenizer))
    if score and index.seq_len <= index.max_text:
        max_len, limit = index.seq_len, "the model's context, which --score needs"
    else:
        max_len, limit = index.max_text, "the longest text the index holds whole " \
            "(build_trace_index.py --max_text_tokens)"
    encoded = encode_records(records, tokenizer, max_len, vocab, where, limit)
    out = []
    for rec, (ids, offs, text) in zip(records, encoded, strict=True):
        spans = trace_tokens(index, ids, checkpoints, opts)
        for sp in spans:
            a, b = sp["start"], sp["end"]
            if offs is not None:
                sp["char_start"], sp["char_end"] = int(offs[a][0]), int(offs[b - 1][1])
                sp["text"] = text[sp["char_start"]:sp["char_end"]]
            else:  # tokens given: offsets into their decoding, clamped to a non-empty
                # range (a prefix can end inside a character of a byte-level tokenizer)
                pre = len(tokenizer.decode(ids[:a]))
                sp["text"] = tokenizer.decode(ids[a:b])
                lo = min(pre, max(len(text) - 1, 0))
                sp["char_start"] = lo
                sp["char_end"] = min(max(lo + 1, pre + len(sp["text"])), len(text))
        if opts.context:
            add_contexts(index, tokenizer, spans, opts.context)
        keys = ("start", "end", "char_start", "char_end", "text", "count", "count_within_row",
                "first_step", "exposures", "occurrences")
        spans = [{k: sp[k] for k in keys} for sp in spans]
        out.append({**rec, "text": text, "n_tokens": len(ids), "spans": spans})
    return out, [ids for ids, _, _ in encoded]


def add_losses(records: list[dict[str, Any]], tokens: Sequence[Sequence[int]], model_path: str,
               checkpoints: Sequence[Checkpoint], batch_size: int = 16,
               device: str | None = None) -> None:
    """``loss`` of every span under every checkpoint (each loaded once)."""
    from anatomy.lm import load_causal_lm

    for c in checkpoints:
        model = load_causal_lm(model_path, revision=c.revision, device=device)
        losses = span_losses(model, tokens, [r["spans"] for r in records], batch_size)
        for r, row in zip(records, losses, strict=True):
            for sp, (mean, per_token) in zip(r["spans"], row, strict=True):
                sp.setdefault("loss", {})[c.revision] = mean
                sp.setdefault("token_loss", {})[c.revision] = per_token
        del model


def run_trace(index_dir: PathLike, texts: PathLike, output: PathLike, *, tokenizer,
              tokenizer_source: str, data=None, checkpoints: Sequence[Checkpoint] = (),
              opts: TraceOptions | None = None, html: PathLike | None = None,
              model: str | None = None, score: bool = False, batch_size: int = 16,
              device: str | None = None, overwrite: bool = False,
              command: str = "trace.py") -> dict[str, Any]:
    """The whole step behind ``trace.py``: check the index against ``data`` (when given),
    trace ``texts`` and write ``output`` (JSONL) and ``html`` (the page), under the output
    policy (a rerun with the same inputs is skipped; nothing half-written)."""
    from pathlib import Path

    from anatomy import execution, io
    from anatomy.trace.page import write_page

    opts = opts or TraceOptions()
    index = TraceIndex(index_dir)
    if data is not None:
        index.check_data(data)
    if score and not model:
        raise InputError(None, "--score needs the model (--model)")
    if score and not checkpoints:
        raise InputError(None, "--score needs checkpoints to score (--checkpoints)")
    out = Path(output)
    files = [out] + ([Path(html)] if html else [])
    output_spec = execution.Output.file(*files)
    params = {"min_len": opts.min_len, "max_occurrences": opts.max_occurrences,
              "unigram_filter": opts.unigram_filter, "unigram_fraction": opts.unigram_fraction,
              "context": opts.context, "score": score, "tokenizer": tokenizer_source,
              "checkpoints": [[c.revision, c.step] for c in checkpoints],
              "model": model if score else None}
    fp = execution.fingerprint("trace", {"texts": texts,
                                         "index": Path(index_dir) / "index.json"}, params)
    if not execution.check_output(output_spec, fp, overwrite):
        return {**execution.recorded_summary(output_spec), "status": "skipped"}
    records = io.read_jsonl(texts)
    traced, tokens = trace_records(index, records, tokenizer, checkpoints, opts, texts, score)
    if score:
        add_losses(traced, tokens, model, checkpoints, batch_size, device)
    io.write_jsonl(out, traced)
    if html:
        meta = {"title": f"trace of {Path(texts).name}", "index": str(index_dir),
                "batch_size": index.batch_size, "min_tokens": opts.min_len,
                "checkpoints": [{"revision": c.revision, "step": c.step} for c in checkpoints],
                "generated_by": command}
        write_page(html, traced, meta)
    n_spans = sum(len(r["spans"]) for r in traced)
    summary = {"texts": len(traced), "empty": sum(1 for r in traced if not r["n_tokens"]),
               "spans": n_spans,
               "with_spans": sum(1 for r in traced if r["spans"]),
               "occurrences": sum(sp["count"] for r in traced for sp in r["spans"])}
    execution.mark_output(output_spec, fp, summary)
    return {**summary, "status": "written"}
