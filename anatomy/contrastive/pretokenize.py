"""MLM pretokenization: texts -> packed rows of ``seq_len`` tokens (pipeline E, step 1).

Mirrors nomic contrastors' v1 ``scripts/text/pretokenize.py`` (commit b0e94ca, the
nomic-embed-text-v1 era; a4c197f leaves it unchanged), whose packing is Hugging Face
``transformers/examples/pytorch/language-modeling/run_mlm.py``'s ``group_texts``:

1. every text is tokenized on its own with its special tokens (BERT: ``[CLS] ... [SEP]``),
   no truncation, ``return_special_tokens_mask=True``; a tokenizer without a CLS token gets
   ``<s>`` added as CLS, as published (its post-processor decides whether texts carry it);
2. ``pack="batch"`` (the published behaviour, the default): within each ``datasets.map``
   batch (1,000 rows) every column is concatenated, cut to a multiple of ``seq_len`` and
   chunked; each batch's tail is **dropped**; a batch holding fewer than ``seq_len`` tokens
   in all is kept as one shorter row (run_mlm's ``if total_length >= max_seq_length`` guard).
   With ``num_workers > 1`` the batches are formed inside each worker's contiguous shard, as
   ``datasets`` does, so the tails (and the dropped count) depend on the worker count;
3. ``pack="across_batches"``: one continuous stream over the whole dataset cut into
   ``seq_len`` rows; nothing is dropped, the final row may be shorter.

Rows carry ``input_ids``, ``token_type_ids``, ``attention_mask`` and ``special_tokens_mask``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from anatomy import io
from anatomy.io import InputError

log = logging.getLogger("anatomy")

COLUMNS = ("input_ids", "token_type_ids", "attention_mask", "special_tokens_mask")
BATCH_SIZE = 1000  # datasets.map's default batch size, which the published script relies on
PACK_MODES = ("batch", "across_batches")
# the published data: bookcorpus train + wikimedia/wikipedia 20231101.en train, text only
PUBLISHED_DATASETS = ("bookcorpus", "wikimedia/wikipedia:20231101.en")
BERT_VOCAB_SHA256 = "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"
HUGE_LENGTH = int(1e30)  # transformers' VERY_LARGE_INTEGER: no truncation, no warning
LOCAL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json", ".json.gz", ".parquet",
                  ".txt", ".txt.gz", ".txt.zst")


# ---------------------------------------------------------------------------------------
# packing


def group_texts(examples: Mapping[str, Sequence[Sequence[int]]], seq_len: int
                ) -> dict[str, list[list[int]]]:
    """run_mlm's ``group_texts`` on one batch: concatenate every column, keep a multiple of
    ``seq_len`` (the whole batch when it holds fewer than ``seq_len`` tokens), chunk."""
    keys = list(examples.keys())
    concatenated = {k: list(chain(*examples[k])) for k in keys}
    total = len(concatenated[keys[0]]) if keys else 0
    if total >= seq_len:
        total = (total // seq_len) * seq_len
    return {k: [t[i: i + seq_len] for i in range(0, total, seq_len)]
            for k, t in concatenated.items()}


def pack_stream(batches: Iterable[Mapping[str, Sequence[Sequence[int]]]], seq_len: int
                ) -> Iterator[dict[str, list[int]]]:
    """Every token of every batch as one stream, cut into ``seq_len`` rows; the final row
    keeps what is left (shorter), so nothing is dropped."""
    buf: dict[str, list[int]] = {}
    for batch in batches:
        for k, seqs in batch.items():
            b = buf.setdefault(k, [])
            for s in seqs:
                b.extend(s)
        if not buf:
            continue
        key = next(iter(buf))
        n = len(buf[key]) // seq_len * seq_len
        for i in range(0, n, seq_len):
            yield {k: v[i: i + seq_len] for k, v in buf.items()}
        for k in buf:
            del buf[k][:n]
    if buf and buf[next(iter(buf))]:
        yield dict(buf)


def _stream_rows(tokenized, seq_len: int):
    """``datasets.Dataset.from_generator`` body for ``pack="across_batches"``."""
    batches = (tokenized[i: i + BATCH_SIZE] for i in range(0, len(tokenized), BATCH_SIZE))
    yield from pack_stream(({k: b[k] for k in COLUMNS} for b in batches), seq_len)


def shard_sizes(n: int, num_proc: int) -> list[int]:
    """Rows per worker of ``datasets.map(num_proc=...)``: contiguous shards, the first
    ``n % num_proc`` one row larger (``Dataset.shard(contiguous=True)``)."""
    num_proc = max(1, min(num_proc, n)) if n else 1
    div, mod = divmod(n, num_proc)
    return [div + (i < mod) for i in range(num_proc)]


def batch_mode_dropped(lengths: Sequence[int], seq_len: int, num_proc: int = 1,
                       batch_size: int = BATCH_SIZE) -> tuple[int, int]:
    """``(tokens dropped, rows)`` of ``pack="batch"`` from the texts' token counts."""
    dropped = rows = start = 0
    for size in shard_sizes(len(lengths), num_proc):
        for i in range(start, start + size, batch_size):
            total = int(sum(lengths[i: min(i + batch_size, start + size)]))
            if total >= seq_len:
                dropped += total % seq_len
                rows += total // seq_len
            elif total:
                rows += 1
        start += size
    return dropped, rows


# ---------------------------------------------------------------------------------------
# tokenizer


def _hub_unreachable(exc: InputError) -> bool:
    return "not available offline" in exc.problem or "cannot load" in exc.problem


def offline_bert_base_uncased():
    """bert-base-uncased's exact WordPiece tokenizer from the MiniLM package's vocab.txt
    (sha256 checked against bert-base-uncased's, see the contrastive reference §4)."""
    from transformers import BertTokenizerFast

    from anatomy.lm import default_embedder_path

    vocab = default_embedder_path() / "vocab.txt"
    digest = hashlib.sha256(io.require_file(vocab, "vocab").read_bytes()).hexdigest()
    if digest != BERT_VOCAB_SHA256:
        raise InputError(vocab, f"sha256 {digest[:8]}... is not bert-base-uncased's vocab "
                                f"({BERT_VOCAB_SHA256[:8]}...)")
    import inspect

    if "vocab_file" in inspect.signature(BertTokenizerFast.__init__).parameters:
        return BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True)  # transformers 4
    # transformers 5: the fast tokenizer takes the vocabulary itself (token -> id, line order)
    words = vocab.read_text(encoding="utf-8").split("\n")
    if words and words[-1] == "":
        words.pop()
    return BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}, do_lower_case=True)


def load_mlm_tokenizer(name: str):
    """``(tokenizer, source)``: any HF tokenizer via :func:`anatomy.lm.load_tokenizer`;
    ``bert-base-uncased`` falls back to the offline vocab when the hub is unreachable.
    ``model_max_length`` is set huge (no truncation warnings); a tokenizer without a CLS
    token gets ``<s>`` as CLS, as published."""
    from anatomy.lm import load_tokenizer

    source = str(name)
    try:
        tok = load_tokenizer(name)
    except InputError as e:
        if str(name) != "bert-base-uncased" or not _hub_unreachable(e):
            raise
        tok = offline_bert_base_uncased()
        source = f"bert-base-uncased (offline vocab sha256 {BERT_VOCAB_SHA256[:8]})"
    tok.model_max_length = HUGE_LENGTH
    if tok.cls_token is None:
        tok.add_special_tokens({"cls_token": "<s>"})
    return tok, source


def tokenize_batch(batch: Mapping[str, list], tokenizer, text_key: str = "text"
                   ) -> dict[str, list]:
    """Tokenize each text with its special tokens, no truncation, special_tokens_mask."""
    enc = tokenizer(batch[text_key], truncation=False, return_special_tokens_mask=True,
                    return_token_type_ids=True, return_attention_mask=True)
    return {k: enc[k] for k in COLUMNS}


# ---------------------------------------------------------------------------------------
# sources


def _is_local(src: str) -> bool:
    return Path(src).expanduser().exists() or src.endswith(LOCAL_SUFFIXES) \
        or src.startswith((".", "/", "~"))


def _local_files(src: str) -> list[Path]:
    p = Path(src).expanduser()
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.name.endswith(LOCAL_SUFFIXES)
                       and not f.name.startswith("."))
        if not files:
            raise InputError(p, f"no {', '.join(LOCAL_SUFFIXES)} files here")
        return files
    return [io.require_file(p, "dataset file")]


def read_text_file(path: Path, text_key: str = "text") -> list[str]:
    """Documents of one local file: JSONL records' ``text_key`` (a string, else an error
    naming the line), a Parquet column, or a text file's blank-line-separated paragraphs."""
    name = path.name
    if ".jsonl" in name or name.endswith((".json", ".json.gz")):
        out = []
        for lineno, rec in io.iter_jsonl_numbered(path, required=(text_key,)):
            v = rec[text_key]
            if not isinstance(v, str):
                raise InputError(path, f'field "{text_key}" is {type(v).__name__}, not a string',
                                 lineno)
            out.append(v)
        return out
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            schema = pq.read_schema(path)
        except Exception as e:  # noqa: BLE001 - any unreadable file is the user's input
            raise InputError(path, f"cannot read Parquet ({e})") from None
        if text_key not in schema.names:
            raise InputError(path, f'no column "{text_key}" (has {", ".join(schema.names)})')
        col = pq.read_table(path, columns=[text_key]).column(text_key).to_pylist()
        for i, v in enumerate(col):
            if not isinstance(v, str):
                raise InputError(path, f'row {i}: "{text_key}" is {type(v).__name__}, '
                                       "not a string")
        return col
    with io.open_text(path) as f:
        text = f.read()
    paras = [p.strip("\n") for p in text.replace("\r\n", "\n").split("\n\n")]
    return [p for p in paras if p.strip()]


def _split_hf_name(src: str) -> tuple[str, str | None]:
    name, _, config = src.partition(":")
    return name, config or None


def load_hf_texts(src: str, text_key: str = "text"):
    """An HF hub dataset's train split, text column only (``NAME[:CONFIG]``); offline or
    unreachable: one InputError line."""
    from anatomy.lm import _offline

    _offline()  # an unreachable hub is found once, before datasets retries each request
    import datasets

    name, config = _split_hf_name(src)
    try:
        ds = datasets.load_dataset(name, config, split="train")
    except Exception as e:  # noqa: BLE001 - connection, missing dataset, offline mode ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(None, f"cannot load HF dataset {src} ({type(e).__name__}: {first}); "
                               "offline, pass local JSONL/Parquet/text files") from None
    if text_key not in ds.column_names:
        raise InputError(None, f'HF dataset {src} has no column "{text_key}" '
                               f'(has {", ".join(ds.column_names)})')
    ds = ds.select_columns([text_key])
    return ds.rename_column(text_key, "text") if text_key != "text" else ds


def world_texts(world: str | os.PathLike) -> list[str]:
    """The miniworld's corpus documents, in document-id order: each document's tokens
    (``truth/docs.jsonl.gz`` locates them in the trained stream) decoded with the world's
    own tokenizer (byte-level, so the decode is the document's text)."""
    from anatomy.lm import load_tokenizer
    from anatomy.truth import World

    w = World.open(world)
    tok = load_tokenizer(w.root / "tokenizer")
    docs = sorted(w.docs)
    return tok.batch_decode([w.doc_tokens(d).tolist() for d in docs])


def load_sources(sources: Sequence[str] | None, text_key: str = "text",
                 world: str | os.PathLike | None = None):
    """``(datasets.Dataset with one "text" column, identities for the fingerprint)``.

    Local files (JSONL(.gz/.zst), Parquet, text; folders of them), HF names
    (``NAME[:CONFIG]``, ``published`` for bookcorpus + wikipedia 20231101.en) or, with no
    sources, the miniworld's documents.
    """
    import datasets

    if not sources:
        if world is None:
            raise InputError(None, "no --dataset given and no miniworld")
        ds = datasets.Dataset.from_dict({"text": world_texts(world)})
        return ds, {"world_docs": str(Path(world) / "truth" / "docs.jsonl.gz"),
                    "world_tokens": str(Path(world) / "tokens")}
    expanded: list[str] = []
    for s in sources:
        expanded.extend(PUBLISHED_DATASETS if s == "published" else [s])
    parts, ids = [], {}
    local: list[str] = []
    for i, s in enumerate(expanded):
        if _is_local(s):
            for f in _local_files(s):
                local.extend(read_text_file(f, text_key))
                ids[f"dataset{i}:{f}"] = str(f)
        else:
            if local:
                parts.append(datasets.Dataset.from_dict({"text": local}))
                local = []
            parts.append(load_hf_texts(s, text_key))
            ids[f"dataset{i}"] = s
    if local or not parts:
        parts.append(datasets.Dataset.from_dict({"text": local}))
    ds = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    return ds, ids


# ---------------------------------------------------------------------------------------
# pipeline


@dataclass
class PretokenizeResult:
    dataset: Any  # datasets.Dataset of packed rows
    stats: dict[str, Any] = field(default_factory=dict)


def pretokenize_dataset(texts, tokenizer, seq_len: int, pack: str = "batch",
                        num_workers: int = 1, batch_size: int = BATCH_SIZE
                        ) -> PretokenizeResult:
    """Tokenize every text of ``texts`` (a ``datasets.Dataset`` with a ``text`` column) and
    pack the rows (see the module docstring); ``stats`` counts texts, tokens, rows and the
    tokens each mode drops."""
    import datasets

    if seq_len < 1:
        raise InputError(None, "--seq_len must be at least 1")
    if pack not in PACK_MODES:
        raise InputError(None, f'unknown --pack "{pack}" ({", ".join(PACK_MODES)})')
    n = len(texts)
    num_proc = max(1, min(num_workers, n)) if n else 1
    kw: dict[str, Any] = {"num_proc": num_proc} if num_proc > 1 else {}
    tokenized = texts.map(tokenize_batch, batched=True, batch_size=batch_size,
                          fn_kwargs={"tokenizer": tokenizer, "text_key": "text"},
                          remove_columns=texts.column_names, desc="tokenize", **kw)
    lengths = [len(x) for x in tokenized["input_ids"]] if n else []
    tokens = int(sum(lengths))
    if pack == "batch":
        packed = tokenized.map(group_texts, batched=True, batch_size=batch_size,
                               fn_kwargs={"seq_len": seq_len}, desc="group texts", **kw)
    else:
        features = tokenized.features if n else datasets.Features(
            {k: datasets.Sequence(datasets.Value("int32" if k == "input_ids" else "int8"))
             for k in COLUMNS})
        rows = list(_stream_rows(tokenized, seq_len)) if n else []
        packed = datasets.Dataset.from_list(rows, features=features) if rows else \
            datasets.Dataset.from_dict({k: [] for k in COLUMNS}, features=features)
    row_lengths = [len(x) for x in packed["input_ids"]] if len(packed) else []
    packed_tokens = int(sum(row_lengths))
    drop_batch, rows_batch = batch_mode_dropped(lengths, seq_len, num_proc, batch_size)
    stats = {
        "texts": n, "tokens": tokens, "rows": len(packed), "packed_tokens": packed_tokens,
        "dropped_tokens": tokens - packed_tokens,
        "short_rows": [[i, r] for i, r in enumerate(row_lengths) if r != seq_len],
        "seq_len": seq_len, "pack": pack, "num_proc": num_proc, "batch_size": batch_size,
        "modes": {"batch": {"rows": rows_batch, "dropped_tokens": drop_batch},
                  "across_batches": {"rows": -(-tokens // seq_len), "dropped_tokens": 0}},
        "special_tokens": int(sum(sum(m) for m in tokenized["special_tokens_mask"])) if n
        else 0,
    }
    return PretokenizeResult(packed, stats)


def token_dtype(tokenizer) -> str:
    """uint16 when every id fits, else uint32 (OLMo's token file dtypes)."""
    return "uint16" if len(tokenizer) <= 65536 else "uint32"


def olmo_names() -> list[str]:
    return ["input_ids.npy", "special_tokens_mask.npy", "meta.json"]


def write_olmo(ds, out: Path, seq_len: int, dtype: str, stats: Mapping[str, Any]) -> None:
    """OLMo token files of the packed rows: ``input_ids.npy`` (raw ``dtype``, no header,
    through the shared writer), ``special_tokens_mask.npy`` (raw uint8, parallel) and
    ``meta.json`` (seq_len, dtype, rows, tokens, rows shorter than seq_len)."""
    from anatomy.token_files import TokenFileWriter

    out.mkdir(parents=True, exist_ok=True)
    ids_w = TokenFileWriter(out / "input_ids.npy", dtype)
    mask_w = TokenFileWriter(out / "special_tokens_mask.npy", "uint8")
    with ids_w, mask_w:
        for i in range(0, len(ds), BATCH_SIZE):
            b = ds[i: i + BATCH_SIZE]
            if b["input_ids"]:
                ids_w.write(np.fromiter(chain(*b["input_ids"]), dtype=np.int64))
                mask_w.write(np.fromiter(chain(*b["special_tokens_mask"]), dtype=np.int64))
    io.write_json(out / "meta.json", {
        "format": "olmo token files", "seq_len": seq_len, "dtype": dtype,
        "mask_dtype": "uint8", "rows": len(ds), "tokens": ids_w.n_tokens,
        "short_rows": stats.get("short_rows", []),
        "files": {"input_ids": "input_ids.npy", "special_tokens_mask":
                  "special_tokens_mask.npy"}})


@contextlib.contextmanager
def datasets_bars(show: bool | None = None):
    """``datasets``' own progress bars ("Saving the dataset", "Map") on or off inside the
    block, then as they were; ``None``: off under ``--quiet`` (:mod:`anatomy.progress`),
    which they do not follow by themselves."""
    from datasets.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    from anatomy.progress import is_quiet

    show = not is_quiet() if show is None else show
    was_off = are_progress_bars_disabled()
    if not show:
        disable_progress_bars()
    try:
        yield
    finally:
        if not show and not was_off:
            enable_progress_bars()


def save_hf(ds, out: Path) -> None:
    """``save_to_disk`` into a temporary folder beside ``out``, then rename it onto ``out``
    (no "Saving the dataset" bar under ``--quiet``)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with datasets_bars():
            ds.save_to_disk(str(tmp))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def push_to_hub(ds, repo: str) -> None:
    """Push the rows to a private hub dataset (as published); offline: one clear line."""
    from anatomy.lm import _offline

    if _offline():
        raise InputError(None, f"cannot push to {repo}: the hub is offline (HF_HUB_OFFLINE)")
    try:
        ds.push_to_hub(repo, private=True)
    except Exception as e:  # noqa: BLE001 - network, auth, bad repo name
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(None, f"cannot push to {repo} ({type(e).__name__}: {first})") from None


def report_path(out: Path) -> Path:
    return out.with_name(out.name + ".report.json")


def pretokenize(sources: Sequence[str] | None, tokenizer_name: str, seq_len: int, out: Path,
                *, pack: str = "batch", fmt: str = "hf", text_key: str = "text",
                num_workers: int = 1, world: str | os.PathLike | None = None,
                push_repo: str | None = None, overwrite: bool = False,
                progress: bool = True) -> dict[str, Any]:
    """The whole step: sources -> tokenizer -> packed rows -> ``out`` (+ report JSON beside
    it), under the project's output policy (same inputs and flags: skipped; different ones:
    refused without ``overwrite``). Returns the stats (``status``: written or skipped)."""
    from anatomy.execution import (
        Output,
        check_output,
        fingerprint,
        mark_output,
        recorded_summary,
    )

    if fmt not in ("hf", "olmo"):
        raise InputError(None, f'unknown --format "{fmt}" (hf, olmo)')
    if push_repo is not None and fmt != "hf":
        raise InputError(None, "--push_to_hub needs --format hf")
    if push_repo is not None:
        from anatomy.lm import _offline

        if _offline():
            raise InputError(None, f"cannot push to {push_repo}: the hub is offline "
                                   "(HF_HUB_OFFLINE)")
    out = Path(out)
    rep = report_path(out)
    if fmt == "hf":
        output = Output([out / "dataset_info.json", out / "state.json", rep],
                        out.with_name(out.name + ".done.json"))
    else:
        output = Output([*(out / n for n in olmo_names()), rep],
                        out.with_name(out.name + ".done.json"))
    tok_path = Path(tokenizer_name).expanduser()
    inputs: dict[str, Any] = {"tokenizer": str(tok_path) if tok_path.exists()
                              else str(tokenizer_name)}
    # sources are identified before reading (files by content, hub names by name)
    if sources:
        for i, s in enumerate(sources):
            inputs[f"dataset{i}"] = s
    else:
        inputs["world_docs"] = str(Path(world or "data/world") / "truth" / "docs.jsonl.gz")
        inputs["world_tokens"] = str(Path(world or "data/world") / "tokens")
    fp = fingerprint("pretokenize", inputs,
                     {"seq_len": seq_len, "pack": pack, "format": fmt, "text_key": text_key,
                      "batch_size": BATCH_SIZE, "num_workers": num_workers,
                      "push_to_hub": push_repo})
    if not check_output(output, fp, overwrite):
        return {**recorded_summary(output), "status": "skipped"}
    if not progress:
        import datasets

        datasets.disable_progress_bars()
    texts, _ = load_sources(sources, text_key, world)
    tok, tok_src = load_mlm_tokenizer(tokenizer_name)
    res = pretokenize_dataset(texts, tok, seq_len, pack, num_workers)
    stats = {**res.stats, "tokenizer": tok_src, "vocab_size": len(tok),
             "cls_token_id": tok.cls_token_id, "sep_token_id": tok.sep_token_id,
             "format": fmt, "output": str(out)}
    if fmt == "hf":
        save_hf(res.dataset, out)
    else:
        if out.exists():
            shutil.rmtree(out)
        stats["dtype"] = token_dtype(tok)
        write_olmo(res.dataset, out, seq_len, stats["dtype"], stats)
    io.write_json(rep, stats)
    if push_repo is not None:
        push_to_hub(res.dataset, push_repo)
        stats["pushed_to"] = push_repo
    summary = {k: v for k, v in stats.items() if k != "short_rows"}
    mark_output(output, fp, summary)
    return {**summary, "status": "written"}
