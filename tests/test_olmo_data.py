"""anatomy.olmo_data: token files, data order, config, local and HTTP range reads, failures.

Independent computation throughout: the fixture writes random uint16 token files and a uint32
permutation with plain numpy; the expected tokens of (step, slot) are cut from those arrays
with numpy (each file's tail dropped, files concatenated in list order) and indexed by the
permutation, never through the module under test.
"""

from __future__ import annotations

import http.server
import re
import shutil
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from anatomy.byte_ranges import FetchError
from anatomy.data_order import DataOrder, PositionOutOfRange
from anatomy.io import InputError
from anatomy.olmo_config import batch_sizes_from_checkpoints, load_olmo_config
from anatomy.olmo_data import OlmoData, check_coverage
from anatomy.token_files import InstanceOutOfRange, TokenFiles

L = 16  # tokens per instance
B = 3  # true batch size (the config file claims 4, as OLMo-7B's claims 2048 for 2160)
# Token counts per file: tails that are not a multiple of L, and one file with no instance.
TOKENS = [5 * L + 7, 9, 3 * L + 15, 4 * L + 1]
COUNTS = [5, 0, 3, 4]
REPO = Path(__file__).resolve().parents[1]


def _write_config(path: Path, paths: list[str], order: str | None, **extra) -> Path:
    cfg = {
        "run_name": "fixture-run",
        "model": {"max_sequence_length": L, "vocab_size": 50000, "eos_token_id": 7,
                  "pad_token_id": 1},
        "tokenizer": {"identifier": "tok/tokenizer.json"},
        "global_train_batch_size": 4,
        "data": {"paths": paths, "memmap_dtype": "uint16"},
        "data_anatomy": {"batch_size": B, "model_name": "Fixture", **extra},
    }
    if order is not None:
        cfg["data_anatomy"]["global_indices"] = order
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture
def world(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "run"
    (root / "tokens").mkdir(parents=True)
    arrays, rel = [], []
    for f, n in enumerate(TOKENS):
        a = rng.integers(0, 50000, size=n).astype("<u2")
        name = f"tokens/part-{f:03d}-00000.npy"
        (root / name).write_bytes(a.tobytes())  # raw, no header, as OLMo writes them
        arrays.append(a)
        rel.append(name)
    expected = np.concatenate([a[: len(a) // L * L] for a in arrays]).reshape(-1, L)
    order = rng.permutation(len(expected)).astype("<u4")
    (root / "global_indices.npy").write_bytes(order.tobytes())
    config = _write_config(root / "config.yaml", rel, "global_indices.npy")
    return SimpleNamespace(root=root, config=config, arrays=arrays, expected=expected,
                           order=order.astype(np.int64), rel=rel)


# ---------------------------------------------------------------------------------------
# config


def test_config_resolves_relative_paths_and_batch_size(world):
    (world.root / "tok").mkdir()
    (world.root / "tok" / "tokenizer.json").write_text("{}")
    cfg = load_olmo_config(world.config)
    assert cfg.paths == [str(world.root / r) for r in world.rel]
    assert cfg.global_indices == str(world.root / "global_indices.npy")
    assert (cfg.seq_len, cfg.batch_size, cfg.config_batch_size) == (L, B, 4)
    assert (cfg.eos_token_id, cfg.pad_token_id, cfg.dtype, cfg.vocab_size) == (7, 1, "uint16",
                                                                                 50000)
    assert cfg.model_name == "Fixture" and cfg.run_name == "fixture-run"
    assert cfg.tokenizer == str(world.root / "tok" / "tokenizer.json")  # exists locally
    assert cfg.extra["batch_size"] == B


def test_config_defaults_without_extension(tmp_path):
    p = tmp_path / "plain.yaml"
    p.write_text(yaml.safe_dump({
        "model": {"max_sequence_length": 8, "eos_token_id": 0, "pad_token_id": 1},
        "global_train_batch_size": 5,
        "tokenizer": {"identifier": "allenai/OLMo-7B"},
        "data": {"paths": ["/abs/a.npy", "https://host/b.npy"]}}))
    cfg = load_olmo_config(p)
    assert cfg.batch_size == cfg.config_batch_size == 5
    assert cfg.dtype == "uint16" and cfg.global_indices is None and cfg.vocab_size is None
    assert cfg.paths == ["/abs/a.npy", "https://host/b.npy"]  # absolute and URLs kept
    assert cfg.model_name == "plain" and cfg.tokenizer == "allenai/OLMo-7B"  # hub name kept
    with pytest.raises(InputError, match="no data order"):
        OlmoData(cfg)


@pytest.mark.parametrize(("edit", "key"), [
    (lambda c: c["model"].pop("eos_token_id"), "model.eos_token_id"),
    (lambda c: c["model"].update(max_sequence_length="2048"), "model.max_sequence_length"),
    (lambda c: c["model"].update(pad_token_id=True), "model.pad_token_id"),
    (lambda c: c.pop("global_train_batch_size"), "global_train_batch_size"),
    (lambda c: c["data"].update(paths="tokens/a.npy"), "data.paths"),
    (lambda c: c["data"].update(paths=["ok.npy", 3]), "data.paths[1]"),
    (lambda c: c["data"].update(memmap_dtype="int16"), "data.memmap_dtype"),
    (lambda c: c["data_anatomy"].update(batch_size=0), "data_anatomy.batch_size"),
    (lambda c: c["data_anatomy"].update(checkpoints=[1, 2]), "data_anatomy.checkpoints"),
    (lambda c: c.update(model=[1]), "model"),
    (lambda c: c["data"].update(paths=["s3://bucket/a.npy"]), "s3"),
])
def test_bad_config_names_file_and_key(world, edit, key):
    cfg = yaml.safe_load(world.config.read_text())
    edit(cfg)
    world.config.write_text(yaml.safe_dump(cfg))
    with pytest.raises(InputError) as e:
        load_olmo_config(world.config)
    assert key in str(e.value)
    assert str(world.config) in str(e.value) or "s3://" in str(e.value)


def test_config_not_found_and_invalid_yaml(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_olmo_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1, 2\n")
    with pytest.raises(InputError, match="invalid YAML"):
        load_olmo_config(bad)


# ---------------------------------------------------------------------------------------
# local reads


def test_every_step_and_slot_matches_numpy(world):
    with OlmoData(load_olmo_config(world.config)) as data:
        assert len(data.files) == len(world.expected) == sum(COUNTS)
        assert data.files.counts.tolist() == COUNTS
        assert data.files.sizes == [2 * n for n in TOKENS]
        assert data.n_steps == len(world.expected) // B
        for step in range(data.n_steps):
            assert data.batch(step).tolist() == world.order[step * B:(step + 1) * B].tolist()
            for b in range(B):
                got = data.tokens_at(step, b)
                assert got.dtype == np.int64 and got.shape == (L,)
                np.testing.assert_array_equal(got, world.expected[world.order[step * B + b]])


def test_file_of_skips_empty_files(world):
    files = TokenFiles([world.root / r for r in world.rel], L)
    # Independent: cumulative counts [5, 5, 8, 12] with file 1 empty.
    assert [files.file_of(i) for i in (0, 4, 5, 7, 8, 11)] == [
        (0, 0), (0, 4), (2, 0), (2, 2), (3, 0), (3, 3)]
    with pytest.raises(InstanceOutOfRange):
        files.file_of(-1)


def test_relocated_world_reads_the_same(world, tmp_path):
    moved = tmp_path / "elsewhere" / "run2"
    shutil.move(str(world.root), moved)
    cfg = load_olmo_config(moved / "config.yaml")
    assert all(p.startswith(str(moved)) for p in cfg.paths)
    with OlmoData(cfg) as data:
        np.testing.assert_array_equal(data.tokens_at(1, 2), world.expected[world.order[1 * B + 2]])


def test_instances_in_input_order_with_errors_in_place(world):
    files = TokenFiles([world.root / r for r in world.rel], L)
    ids = [11, 0, 12, 5, 400, 3, 11]
    got = files.instances(ids, num_workers=3)
    assert len(got) == len(ids)
    for i, g in zip(ids, got, strict=True):
        if i >= len(world.expected):
            assert isinstance(g, InstanceOutOfRange) and isinstance(g, IndexError)
            assert g.instance == i and g.n_instances == 12
        else:
            np.testing.assert_array_equal(g, world.expected[i])
    assert [isinstance(g, Exception) for g in files.instances(ids, num_workers=1)] == [
        isinstance(g, Exception) for g in got]
    with pytest.raises(InstanceOutOfRange, match="#538"):
        files.instance(12)


def test_tokens_at_positions(world):
    with OlmoData(load_olmo_config(world.config)) as data:
        positions = [7, 0, 12, 3, -1, 11]
        got = data.tokens_at_positions(positions, num_workers=2)
        for p, g in zip(positions, got, strict=True):
            if 0 <= p < len(world.order):
                np.testing.assert_array_equal(g, world.expected[world.order[p]])
            else:
                assert isinstance(g, PositionOutOfRange)


def test_data_order_indexing_and_max(world):
    order = DataOrder(world.root / "global_indices.npy")
    assert len(order) == len(world.order)
    assert order[4] == world.order[4] and isinstance(order[4], int)
    assert order[[9, 2, 2]].tolist() == world.order[[9, 2, 2]].tolist()
    assert order[3:9].tolist() == world.order[3:9].tolist()
    assert order.max(chunk=5) == int(world.order.max())
    with pytest.raises(PositionOutOfRange):
        order[len(world.order)]
    with pytest.raises(PositionOutOfRange):
        order[[0, -1]]


def test_position_arguments_checked(world):
    with OlmoData(load_olmo_config(world.config), batch_size=2) as data:
        assert data.position(5, 1) == 11
        with pytest.raises(InputError):
            data.position(0, 2)
        with pytest.raises(InputError):
            data.position(-1, 0)


# ---------------------------------------------------------------------------------------
# OLMo #538: the data order names instances the files do not hold


def test_coverage_check_and_out_of_range_in_order(world):
    cfg = load_olmo_config(world.config)
    with OlmoData(cfg) as data:
        cov = data.coverage()
        assert cov.ok and cov.n_missing == 0 and cov.order_max == int(world.order.max())
    bad = world.order.copy()
    bad[[4, 9]] = [13, 14]  # 12 instances in the files; 13 and 14 do not exist
    (world.root / "order538.npy").write_bytes(bad.astype("<u4").tobytes())
    with OlmoData(cfg, global_indices=str(world.root / "order538.npy")) as data:
        cov = data.coverage()
        assert not cov.ok and cov.order_max == 14 and cov.n_missing == 3
        assert "#538" in cov.message()
        with pytest.raises(InputError, match=re.escape(str(world.config))):
            data.coverage(strict=True)
        with pytest.raises(InstanceOutOfRange):
            data.tokens_at(4 // B, 4 % B)
        got = data.tokens_at_positions(list(range(len(bad))))
        failed = [p for p, g in enumerate(got) if isinstance(g, InstanceOutOfRange)]
        assert failed == [4, 9]
    assert check_coverage(cfg, data_order_max=11, n_instances=12).ok
    assert check_coverage(None, 925801835, 925201012).n_missing == 600824  # OLMo #538 numbers


# ---------------------------------------------------------------------------------------
# bad local files


def test_missing_and_odd_sized_files(world):
    with pytest.raises(InputError, match="not found") as e:
        len(TokenFiles([world.root / world.rel[0], world.root / "tokens/missing.npy"], L))
    assert "missing.npy" in str(e.value)
    odd = world.root / "odd.npy"
    odd.write_bytes(b"\x00" * 33)
    with pytest.raises(InputError, match="not a multiple of 2") as e:
        len(TokenFiles([odd], L))
    assert "odd.npy" in str(e.value)
    with pytest.raises(InputError, match="not found"):
        DataOrder(world.root / "no_order.npy")
    with pytest.raises(InputError, match="multiple of 4"):
        DataOrder(odd)


def test_token_file_writer_writes_what_olmo_reads(world, tmp_path):
    from anatomy.data_order import write_data_order
    from anatomy.token_files import TokenFileWriter, write_token_file

    # the writer's bytes are exactly the raw little-endian arrays the fixture wrote by hand
    for a, rel in zip(world.arrays, world.rel, strict=True):
        out = tmp_path / rel
        assert write_token_file(out, [a[:3], a[3:]], "uint16") == len(a)
        assert out.read_bytes() == (world.root / rel).read_bytes()
    write_data_order(tmp_path / "order.npy", world.order)
    assert (tmp_path / "order.npy").read_bytes() == (world.root / "global_indices.npy").read_bytes()
    big = np.array([70000, 1], dtype=np.int64)
    write_token_file(tmp_path / "u32.npy", big, "uint32")
    assert TokenFiles([tmp_path / "u32.npy"], 2, "uint32").instance(0).tolist() == [70000, 1]
    with pytest.raises(InputError, match=r"\[0, 2\*\*16\) for uint16"):
        write_token_file(tmp_path / "bad.npy", big, "uint16")
    assert not (tmp_path / "bad.npy").exists()
    with pytest.raises(RuntimeError), TokenFileWriter(tmp_path / "half.npy") as w:
        w.write([1, 2, 3])
        raise RuntimeError("interrupted")
    assert not list(tmp_path.glob("*half*"))  # nothing half-written


def test_fsspec_urls_read_like_local_files(world):
    """memory:// is a real fsspec backend (offline): s3://, gs:// and hf:// take this path."""
    import fsspec

    mem = fsspec.filesystem("memory")
    urls = []
    for rel in world.rel:
        mem.pipe(f"/olmo/{rel}", (world.root / rel).read_bytes())
        urls.append(f"memory://olmo/{rel}")
    mem.pipe("/olmo/global_indices.npy", (world.root / "global_indices.npy").read_bytes())
    files = TokenFiles(urls, L)
    assert files.counts.tolist() == COUNTS
    for i in range(len(world.expected)):
        np.testing.assert_array_equal(files.instance(i), world.expected[i])
    order = DataOrder("memory://olmo/global_indices.npy")
    assert order[[0, 5, 2]].tolist() == world.order[[0, 5, 2]].tolist()
    with pytest.raises(InputError, match="unsupported URL scheme 'nosuch'"):
        TokenFiles(["nosuch://bucket/x.npy"], L)
    missing = TokenFiles(["memory://olmo/none.npy"], L)
    with pytest.raises(FetchError, match="not found"):
        len(missing)


# ---------------------------------------------------------------------------------------
# the real OLMo-7B config (parsed only: nothing is fetched)


def test_real_olmo7b_config():
    cfg = load_olmo_config(REPO / "configs" / "OLMo-7B.yaml")
    assert len(cfg.paths) == 443 and len(set(cfg.paths)) == 443
    pat = re.compile(r"https?://olmo-data\.org/preprocessed/olmo-mix/v1_5-sample/"
                     r"gpt-neox-20b-pii-special/part-(\d{3})-(\d{5})\.npy")
    keys = [tuple(int(x) for x in pat.fullmatch(p).groups()) for p in cfg.paths]
    assert keys == sorted(keys)  # config order = instance numbering order
    assert sorted({k[0] for k in keys}) == list(range(188))
    for part in range(188):  # each part's shards are numbered 0, 1, ... without gaps
        shards = [k[1] for k in keys if k[0] == part]
        assert shards == list(range(len(shards)))
    assert (cfg.seq_len, cfg.eos_token_id, cfg.pad_token_id, cfg.vocab_size) == (2048, 50279, 1,
                                                                                 50280)
    assert cfg.dtype == "uint16"
    assert (cfg.config_batch_size, cfg.batch_size) == (2048, 2160)
    assert cfg.global_indices == ("https://olmo-checkpoints.org/ai2-llm/olmo-medium/wvc30anm/"
                                  "train_data/global_indices.npy")
    assert cfg.model_name == "OLMo-7B" and cfg.tokenizer == "allenai/OLMo-7B"
    # The checkpoint names pin the true batch size: only 2160 fits all four, 2048 fits none.
    assert batch_sizes_from_checkpoints(cfg.checkpoints.values(), cfg.seq_len) == [2160]
    assert 2048 not in batch_sizes_from_checkpoints(["step100000-tokens442B"], 2048)


def test_batch_sizes_from_checkpoints_small():
    # Independent: brute force over B of round(step * B * L / 1000) == N.
    names = ["step0-tokens0K", "step10-tokens20K", "step25-tokens51K", "main"]
    brute = [b for b in range(1, 200)
             if all(round(s * b * L / 1000) == n for s, n in ((10, 20), (25, 51)))]
    assert batch_sizes_from_checkpoints(names, L) == brute == [127, 128]
    assert batch_sizes_from_checkpoints(["main"], L) == []


# ---------------------------------------------------------------------------------------
# HTTP: a real local server with HEAD and single-range GET, failure injection, byte counts


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse is observable

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        with self.server.lock:
            self.server.connections += 1

    def do_HEAD(self):
        self._serve(head=True)

    def do_GET(self):
        self._serve(head=False)

    def _empty(self, status: int, headers: dict[str, str] | None = None):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _serve(self, head: bool):
        srv = self.server
        rng = self.headers.get("Range")
        with srv.lock:
            srv.requests.append((self.command, self.path, rng))
            fail = srv.fail_next > 0
            srv.fail_next -= fail
            short = not head and srv.short_next > 0
            srv.short_next -= short
        if self.path.startswith("/moved/"):
            return self._empty(301, {"Location": self.path[len("/moved"):]})
        if fail:
            return self._empty(srv.fail_status)
        f = srv.root / self.path.lstrip("/")
        if not f.is_file():
            return self._empty(404)
        data = f.read_bytes()
        if head:
            self.send_response(200)
            if not srv.no_head_length:
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            return None
        a, b = 0, len(data)
        if rng:
            m = re.fullmatch(r"bytes=(\d+)-(\d+)", rng)
            a, b = int(m.group(1)), min(int(m.group(2)) + 1, len(data))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {a}-{b - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[a:b]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if short:  # promise the full length, send half, hang up (OLMo #766)
            body = body[: len(body) // 2]
            self.close_connection = True
        with srv.lock:  # recorded before sending, so the client cannot see the bytes first
            srv.served.append((self.path, a, a + len(body)))
        self.wfile.write(body)
        return None


@pytest.fixture
def server(world):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.root = world.root
    srv.lock = threading.Lock()
    srv.requests, srv.served, srv.connections = [], [], 0
    srv.fail_next, srv.fail_status, srv.short_next, srv.no_head_length = 0, 503, 0, False
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()


def _reset(srv):
    with srv.lock:
        srv.requests.clear()
        srv.served.clear()


def test_http_reads_equal_local_and_fetch_only_the_instance(world, server):
    urls = [f"{server.url}/{r}" for r in world.rel]
    with TokenFiles(urls, L, backoff=0.0) as files:
        assert len(files) == 12 and files.counts.tolist() == COUNTS
        assert [r[0] for r in server.requests] == ["HEAD"] * 4
        for i in range(12):
            _reset(server)
            np.testing.assert_array_equal(files.instance(i), world.expected[i])
            # Only instance i's bytes, from its own file, in one request.
            f = np.searchsorted(np.cumsum(COUNTS), i, side="right")
            j = i - (np.cumsum(COUNTS)[f - 1] if f else 0)
            assert server.served == [(f"/{world.rel[f]}", j * 2 * L, (j + 1) * 2 * L)]
        got = files.instances(range(12), num_workers=4)
        np.testing.assert_array_equal(np.stack(got), world.expected)


def test_http_connection_reused(world, server):
    with TokenFiles([f"{server.url}/{r}" for r in world.rel], L, backoff=0.0) as files:
        len(files)
        before = server.connections
        files.instances(range(12), num_workers=1)  # one thread, one keep-alive connection
        assert server.connections - before == 1
        assert len(server.served) == 12


def test_http_data_order_fetches_only_wanted_entries(world, server):
    url = f"{server.url}/global_indices.npy"
    with DataOrder(url, backoff=0.0, num_workers=1) as order:
        assert len(order) == len(world.order)
        _reset(server)
        assert order[[5, 6, 7, 1, 6]].tolist() == world.order[[5, 6, 7, 1, 6]].tolist()
        # Contiguous 5..7 in one request, 1 in another; 4 bytes per entry.
        assert sorted(server.served) == [("/global_indices.npy", 4, 8),
                                         ("/global_indices.npy", 20, 32)]
        _reset(server)
        assert order[3] == world.order[3]
        assert server.served == [("/global_indices.npy", 12, 16)]
        assert order.max(chunk=5) == int(world.order.max())
    cfg_path = _write_config(world.root / "remote.yaml", [f"{server.url}/{r}" for r in world.rel],
                             url)
    with OlmoData(load_olmo_config(cfg_path), backoff=0.0) as data:
        assert data.config.paths[0].startswith("http://")  # URLs are not resolved as paths
        for step in range(4):
            for b in range(B):
                np.testing.assert_array_equal(data.tokens_at(step, b),
                                              world.expected[world.order[step * B + b]])


def test_http_retries_failures_then_succeeds(world, server):
    with TokenFiles([f"{server.url}/{r}" for r in world.rel], L, retries=3,
                    backoff=0.0) as files:
        len(files)
        _reset(server)
        server.fail_next = 2  # two 503s, then the real answer
        np.testing.assert_array_equal(files.instance(6), world.expected[6])
        assert len(server.requests) == 3
        _reset(server)
        server.short_next = 1  # half the body then a hang-up, once
        np.testing.assert_array_equal(files.instance(9), world.expected[9])
        assert len(server.requests) == 2
        assert server.served[-1][2] - server.served[-1][1] == 2 * L


def test_http_gives_up_with_fetch_error(world, server):
    with TokenFiles([f"{server.url}/{r}" for r in world.rel], L, retries=2,
                    backoff=0.0) as files:
        len(files)
        _reset(server)
        server.fail_next = 10
        with pytest.raises(FetchError) as e:
            files.instance(0)
        assert e.value.status == 503 and world.rel[0] in str(e.value)
        assert len(server.requests) == 3  # first try + 2 retries
        # Returned, not raised, by the batch reader.
        got = files.instances([1, 2], num_workers=2)
        assert all(isinstance(g, FetchError) for g in got)
    server.fail_next = 0
    _reset(server)
    with pytest.raises(FetchError) as e:  # a 404 is not retried
        len(TokenFiles([f"{server.url}/tokens/missing.npy"], L, backoff=0.0))
    assert e.value.status == 404 and len(server.requests) == 1


def test_http_redirect_and_head_without_length(world, server):
    server.no_head_length = True  # size from a 1-byte ranged GET instead
    urls = [f"{server.url}/moved/{r}" for r in world.rel]
    with TokenFiles(urls, L, backoff=0.0) as files:
        assert files.counts.tolist() == COUNTS
        _reset(server)
        np.testing.assert_array_equal(files.instance(7), world.expected[7])
        np.testing.assert_array_equal(files.instance(8), world.expected[8])
        # The redirect is remembered: no second hop for the same file.
        assert [r[1] for r in server.requests] == [f"/{world.rel[2]}", f"/{world.rel[3]}"]
