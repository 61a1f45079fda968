"""CIDs against kubo's published vector and the JS UnixFS importer; stores that verify every read.

The kubo backend is tested against `_FakeKubo`, a loopback stand-in implementing the RPC
endpoints we use over a LocalBlockstore (no kubo daemon can be installed here), plus liars
that report a wrong CID or alter bytes, and a dead port.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import threading
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from multiformats import CID, multihash

from provenant.store import (ContentIntegrityError, ContentNotFoundError, ContentStore, ContentStoreUnavailable,
                             KuboStore, LocalBlockstore, open_store)
from provenant.store.cid import CHUNK_SIZE, MAX_LINKS, BlockRef, cid_for_bytes, cid_for_stream, dag_blocks, parse_cid

JS_CIDS = Path(__file__).parent / "js" / "cid_vectors.mjs"
HELLO_CID = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"  # kubo's, for b"hello world\n"
EMPTY_CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"  # kubo's, for the empty file
BIG = (MAX_LINKS + 1) * CHUNK_SIZE + 1234  # 176 chunks: a root over two link nodes


def pseudo_random(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def js_cids(folder: Path, cases: dict[str, bytes], *options: str) -> dict[str, tuple[str, int]]:
    """{name: (CID, distinct blocks)} from ipfs-unixfs-importer, each case read from a file."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node (Node.js 20) is needed to cross-check CIDs against ipfs-unixfs-importer")
    for name, data in cases.items():
        (folder / name).write_bytes(data)
    out = subprocess.run([node, str(JS_CIDS), *options, *(str(folder / name) for name in cases)],
                         capture_output=True, text=True, timeout=120, cwd=JS_CIDS.parents[2])
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    return {Path(row["file"]).name: (row["cid"], row["blocks"]) for row in rows}


CASES = {"hello": b"hello world\n", "empty": b"", "300kB": pseudo_random(300_000, 1),
         "one-chunk": pseudo_random(CHUNK_SIZE, 2), "chunk+1": pseudo_random(CHUNK_SIZE + 1, 3),
         "over-174-links": pseudo_random(BIG, 4)}
# Deep and exactly-full trees are too big to build at kubo's sizes; the same builder at tiny sizes.
SMALL = ("--chunk-size", "10", "--max-links", "4")
SMALL_CASES = {f"small-{n}": pseudo_random(n, n) for n in (1, 10, 11, 40, 41, 160, 161, 641, 5_000)}


@pytest.fixture(scope="module")
def js_vectors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, int]]:
    folder = tmp_path_factory.mktemp("cid-vectors")
    return js_cids(folder, CASES) | js_cids(folder, SMALL_CASES, *SMALL)


def test_published_kubo_vectors(js_vectors: dict[str, tuple[str, int]]) -> None:
    assert cid_for_bytes(b"hello world\n") == HELLO_CID == js_vectors["hello"][0]
    assert cid_for_bytes(b"") == EMPTY_CID == js_vectors["empty"][0]


@pytest.mark.parametrize("name", list(CASES))
def test_cid_matches_js_importer(name: str, js_vectors: dict[str, tuple[str, int]]) -> None:
    data = CASES[name]
    blocks = dag_blocks(data)
    assert (cid_for_bytes(data), len(blocks)) == js_vectors[name]
    assert list(blocks)[-1] == js_vectors[name][0]  # the root comes last
    assert parse_cid(js_vectors[name][0]).codec_name == ("raw" if len(data) <= CHUNK_SIZE else "dag-pb")


@pytest.mark.parametrize("name", list(SMALL_CASES))
def test_deep_and_full_trees_match_js_importer(name: str, js_vectors: dict[str, tuple[str, int]]) -> None:
    data = SMALL_CASES[name]
    blocks = dag_blocks(data, chunk_size=10, max_links=4)
    assert (cid_for_bytes(data, chunk_size=10, max_links=4), len(blocks)) == js_vectors[name]


@pytest.mark.parametrize(("code", "codec"), [(0x55, "raw"), (0x70, "dag-pb")])
def test_hand_built_cids_agree_with_multiformats(code: int, codec: str) -> None:
    for block in (b"", b"hello world\n", pseudo_random(1000, 7)):
        ref = BlockRef.of(code, block)
        theirs = CID("base32", 1, codec, multihash.digest(block, "sha2-256"))
        assert (str(ref), ref.binary) == (str(theirs), bytes(theirs))
        assert parse_cid(str(theirs)) == ref == BlockRef.from_binary(bytes(theirs))
        assert parse_cid(str(theirs.set(base="base58btc"))) == ref  # other spellings still parse


def test_streamed_cid_equals_in_memory(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(CASES["300kB"])
    with (tmp_path / "f").open("rb") as stream:
        assert cid_for_stream(stream) == cid_for_bytes(CASES["300kB"])


# -- LocalBlockstore ---------------------------------------------------------------------
@pytest.fixture()
def store(tmp_path: Path) -> LocalBlockstore:
    return LocalBlockstore(tmp_path / "blocks")


def block_file(store: LocalBlockstore, cid: str) -> Path:
    [path] = [p for p in store.root.rglob(cid)]
    return path


@pytest.mark.parametrize("name", ["hello", "empty", "300kB", "chunk+1"])
def test_roundtrip(store: LocalBlockstore, name: str) -> None:
    cid = store.put(CASES[name])
    assert cid == cid_for_bytes(CASES[name])
    assert store.has(cid) and store.get(cid) == CASES[name]
    assert store.put(CASES[name]) == cid  # idempotent
    assert not list(store.root.rglob(".tmp-*"))


def test_put_file_streams_a_multi_level_dag(store: LocalBlockstore, tmp_path: Path) -> None:
    path = tmp_path / "big"
    path.write_bytes(CASES["over-174-links"])
    tracemalloc.start()
    cid = store.put_file(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert cid == cid_for_bytes(CASES["over-174-links"])
    assert peak < 8 * CHUNK_SIZE, f"put_file held {peak} bytes for a {path.stat().st_size}-byte file"
    assert store.get(cid) == CASES["over-174-links"]


def test_cidv0_spelling_finds_the_same_dag(store: LocalBlockstore) -> None:
    cid = store.put(CASES["300kB"])
    v0 = str(CID.decode(cid).set(version=0, base="base58btc"))
    assert v0.startswith("Qm") and store.get(v0) == CASES["300kB"]


def test_tampered_leaf_is_refused(store: LocalBlockstore) -> None:
    cid = store.put(CASES["300kB"])
    leaf = next(c for c in dag_blocks(CASES["300kB"]) if c.startswith("bafk"))
    path = block_file(store, leaf)
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ContentIntegrityError, match=cid) as err:
        store.get(cid)
    assert leaf in str(err.value) and err.value.cid == cid
    assert store.put(CASES["300kB"]) == cid and store.get(cid) == CASES["300kB"]  # putting again repairs


def test_tampered_single_block_is_refused(store: LocalBlockstore) -> None:
    cid = store.put(b"hello world\n")
    block_file(store, cid).write_bytes(b"hello w0rld\n")
    with pytest.raises(ContentIntegrityError, match=cid):
        store.get(cid)


def test_missing_block_and_unknown_cid(store: LocalBlockstore) -> None:
    cid = store.put(CASES["chunk+1"])
    leaf = next(c for c in dag_blocks(CASES["chunk+1"]) if c != cid)
    block_file(store, leaf).unlink()
    with pytest.raises(ContentNotFoundError, match=leaf):
        store.get(cid)
    unknown = cid_for_bytes(b"never stored")
    assert not store.has(unknown)
    with pytest.raises(ContentNotFoundError, match=unknown):
        store.get(unknown)


@pytest.mark.parametrize("bad", ["", "bafy-not-a-cid", "Qm123", "zzzz"])
def test_malformed_cid_is_a_value_error(store: LocalBlockstore, bad: str) -> None:
    for call in (store.get, store.has):
        with pytest.raises(ValueError, match="CID") as err:
            call(bad)
        assert repr(bad) in str(err.value)


def test_crash_mid_write_leaves_no_block(store: LocalBlockstore, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(src: str, dst: str) -> None:
        raise OSError("disk vanished")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        store.put(b"hello world\n")
    assert not [p for p in store.root.rglob("*") if p.is_file()]


def test_open_store_picks_the_backend(tmp_path: Path) -> None:
    local = open_store(str(tmp_path / "b"))
    remote = open_store("http://127.0.0.1:5001")
    assert isinstance(local, LocalBlockstore) and isinstance(remote, KuboStore)
    assert isinstance(local, ContentStore) and isinstance(remote, ContentStore)


# -- KuboStore against a loopback stand-in -----------------------------------------------
class _FakeKubo(BaseHTTPRequestHandler):
    """/api/v0/add, /cat, /pin/add, /pin/ls as kubo answers them, over a LocalBlockstore."""

    store: LocalBlockstore
    pins: set[str]
    lie: str = ""  # "", "cid" (report a wrong CID) or "bytes" (alter what /cat returns)
    seen: list[dict[str, list[str]]]

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        self.seen.append(query)
        body = self._body()
        arg = query.get("arg", [""])[0]
        if url.path == "/api/v0/add":
            assert query["cid-version"] == ["1"] and query["raw-leaves"] == ["true"], query
            boundary = self.headers["Content-Type"].split("boundary=")[1].encode()
            part = body.split(b"--" + boundary)[1]
            content = part.partition(b"\r\n\r\n")[2][:-2]
            cid = self.store.put(content)
            if query.get("pin") == ["true"]:
                self.pins.add(cid)
            reported = cid_for_bytes(content + b"!") if self.lie == "cid" else cid
            line = {"Name": "blob", "Hash": reported, "Size": str(len(content))}
            return self._reply(200, json.dumps(line).encode() + b"\n", "application/x-ndjson")
        if url.path in ("/api/v0/cat", "/api/v0/pin/add") and not self.store.has(arg):
            return self._error(f"block was not found locally (offline): ipld: could not find {arg}")
        if url.path == "/api/v0/cat":
            data = self.store.get(arg)
            return self._reply(200, data[:-1] + b"?" if self.lie == "bytes" else data, "text/plain")
        if url.path == "/api/v0/pin/add":
            self.pins.add(arg)
            return self._reply(200, json.dumps({"Pins": [arg]}).encode(), "application/json")
        if url.path == "/api/v0/pin/ls":
            if arg not in self.pins:
                return self._error(f"path '{arg}' is not pinned")
            return self._reply(200, json.dumps({"Keys": {arg: {"Type": "recursive"}}}).encode(), "application/json")
        self._reply(404, b"404 page not found", "text/plain")

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while size := int(self.rfile.readline().strip(), 16):
                data += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
            return data
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def _error(self, message: str) -> None:
        self._reply(500, json.dumps({"Message": message, "Code": 0, "Type": "error"}).encode(), "application/json")

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def _serve(tmp_path: Path, lie: str = "") -> Iterator[tuple[KuboStore, type[_FakeKubo]]]:
    handler = type("Kubo", (_FakeKubo,), {"store": LocalBlockstore(tmp_path / f"kubo{lie}"), "pins": set(),
                                          "lie": lie, "seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        with KuboStore(f"http://127.0.0.1:{server.server_address[1]}", timeout=10) as client:
            yield client, handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture()
def kubo(tmp_path: Path) -> Iterator[tuple[KuboStore, type[_FakeKubo]]]:
    with _serve(tmp_path) as pair:
        yield pair


def test_kubo_roundtrip_and_pins(kubo: tuple[KuboStore, type[_FakeKubo]], tmp_path: Path) -> None:
    client, server = kubo
    for data in (b"hello world\n", b"", CASES["300kB"]):
        cid = client.put(data)
        assert cid == cid_for_bytes(data) and client.get(cid) == data and client.has(cid)
    assert server.seen[0]["pin"] == ["true"] and server.seen[0]["chunker"] == [f"size-{CHUNK_SIZE}"]
    path = tmp_path / "upload"
    path.write_bytes(CASES["chunk+1"])
    cid = client.put_file(path)
    assert cid == cid_for_bytes(CASES["chunk+1"]) and client.get(cid) == CASES["chunk+1"]
    other = server.store.put(b"added by someone else")
    assert not client.has(other)
    client.pin(other)
    assert client.has(other)
    unknown = cid_for_bytes(b"nobody has this")
    with pytest.raises(ContentNotFoundError, match=unknown):
        client.get(unknown)
    with pytest.raises(ContentNotFoundError, match=unknown):
        client.pin(unknown)
    with pytest.raises(ValueError, match="nope"):
        client.get("nope")


def test_kubo_reporting_a_wrong_cid_is_refused(tmp_path: Path) -> None:
    with _serve(tmp_path, lie="cid") as (client, _):
        with pytest.raises(ContentIntegrityError, match=cid_for_bytes(b"hello world\n")):
            client.put(b"hello world\n")


def test_kubo_returning_altered_bytes_is_refused(tmp_path: Path) -> None:
    with _serve(tmp_path, lie="bytes") as (client, _):
        cid = client.put(CASES["300kB"])
        with pytest.raises(ContentIntegrityError, match=cid):
            client.get(cid)


def test_dead_kubo_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"  # nothing listens once it is closed
    with KuboStore(url, timeout=5) as client:
        for call in (lambda: client.put(b"x"), lambda: client.get(HELLO_CID), lambda: client.has(HELLO_CID)):
            with pytest.raises(ContentStoreUnavailable, match=url):
                call()
