"""StandardMerkleTree against @openzeppelin/merkle-tree: roots, proofs, multiproofs and dumps."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from eth_abi import encode
from eth_utils import keccak, to_checksum_address

from provenant.merkle import StandardMerkleTree, leaf_hash

JS_MERKLE = Path(__file__).parent / "js" / "merkle_vectors.mjs"
ADDRESS_TYPES = ["address", "uint256"]
LINEAGE_TYPES = ["uint256", "bytes32", "bytes32"]
SIZES = (1, 2, 3, 7, 1000)


def address_values(n: int, seed: int) -> list[list[Any]]:
    """(address, amount) leaves as a JS caller writes them: checksummed or lower-case hex, decimal strings."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        address = "0x" + rng.randbytes(20).hex()
        out.append([to_checksum_address(address) if i % 2 else address, str(rng.getrandbits(rng.choice([8, 64, 256])))])
    return out


def lineage_values(n: int, seed: int) -> list[list[Any]]:
    """(contribution id, content hash, rows hash) leaves as Python code builds them: int and bytes."""
    rng = random.Random(seed)
    return [[rng.getrandbits(48), rng.randbytes(32), rng.randbytes(32)] for _ in range(n)]


def as_js(value: Any) -> Any:
    if isinstance(value, list):
        return [as_js(v) for v in value]
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return str(value) if isinstance(value, int) else value


def multi_sets(n: int) -> list[list[int]]:
    sets = [[0], list(range(n)), sorted({n - 1, 0}, reverse=True), sorted({(i * 7) % n for i in range(min(n, 9))})]
    return [list(s) for s in dict.fromkeys(tuple(s) for s in sets)]


CASES = {(types_name, n): (types, make(n, n)) for n in SIZES
         for types_name, types, make in (("address", ADDRESS_TYPES, address_values),
                                         ("lineage", LINEAGE_TYPES, lineage_values))}


@pytest.fixture(scope="module")
def js_trees(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, int], dict[str, Any]]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node (Node.js 20) is needed to cross-check against @openzeppelin/merkle-tree")
    folder = tmp_path_factory.mktemp("merkle-vectors")
    paths = []
    for (name, n), (types, values) in CASES.items():
        path = folder / f"{name}-{n}.json"
        path.write_text(json.dumps({"types": types, "values": as_js(values), "multi": multi_sets(n)}))
        paths.append(path)
    out = subprocess.run([node, str(JS_MERKLE), *map(str, paths)], capture_output=True, text=True, timeout=120,
                         cwd=JS_MERKLE.parents[2])
    assert out.returncode == 0, out.stderr
    return dict(zip(CASES, (json.loads(line) for line in out.stdout.splitlines()), strict=True))


@pytest.mark.parametrize("case", list(CASES), ids=[f"{k}-{n}" for k, n in CASES])
def test_matches_openzeppelin(case: tuple[str, int], js_trees: dict[tuple[str, int], dict[str, Any]]) -> None:
    types, values = CASES[case]
    expected = js_trees[case]
    tree = StandardMerkleTree.of(values, types)
    assert tree.root == expected["root"]
    assert [tree.get_proof(i) for i in range(len(values))] == expected["proofs"]
    assert tree.dump() == expected["dump"]
    for indices, want in zip(multi_sets(len(values)), expected["multi"], strict=True):
        got = tree.get_multi_proof(indices)
        assert {**got, "leaves": as_js(got["leaves"])} == want
        assert StandardMerkleTree.verify_multi_proof(tree.root, types, got)
    for i in range(0, len(values), max(1, len(values) // 25)):
        assert tree.get_proof(values[i]) == expected["proofs"][i]  # by value as well as by index
        assert StandardMerkleTree.verify(tree.root, types, values[i], expected["proofs"][i])
    # the JS library's dump loads here, and ours (the same JSON) answers the same proofs
    loaded = StandardMerkleTree.load(json.loads(json.dumps(expected["dump"])))
    assert loaded.root == tree.root and loaded.get_proof(len(values) - 1) == expected["proofs"][-1]


def test_verify_refuses_wrong_leaf_and_proof() -> None:
    values = lineage_values(7, 1)
    tree = StandardMerkleTree.of(values, LINEAGE_TYPES)
    proof = tree.get_proof(3)
    assert StandardMerkleTree.verify(tree.root, LINEAGE_TYPES, values[3], proof)
    assert not StandardMerkleTree.verify(tree.root, LINEAGE_TYPES, values[4], proof)
    assert not StandardMerkleTree.verify(tree.root, LINEAGE_TYPES, values[3], proof[::-1])
    assert not StandardMerkleTree.verify(tree.root, LINEAGE_TYPES, [values[3][0] + 1, *values[3][1:]], proof)


def test_single_leaf_root_is_the_leaf_hash() -> None:
    value = [1, bytes(32), bytes(32)]
    tree = StandardMerkleTree.of([value], LINEAGE_TYPES)
    assert tree.root == "0x" + keccak(keccak(encode(LINEAGE_TYPES, value))).hex()
    assert tree.get_proof(0) == [] and StandardMerkleTree.verify(tree.root, LINEAGE_TYPES, value, [])


@pytest.mark.parametrize(
    ("types", "value"),
    [
        (["uint256", "int256", "bool"], [2**256 - 1, -(2**255), True]),
        (["uint8", "int8", "bytes1"], [255, -128, b"\xff"]),
        (["address", "bytes32"], ["0x" + "AB" * 20, "0x" + "cd" * 32]),
        (["address", "uint256"], [bytes(range(20)), "0x10"]),
        (["bytes32"], [b"short"]),  # eth_abi right-pads a short bytesN; the fast path defers to it
        (["string", "uint256[]", "bytes"], ["hi", ["1", 2], b"\x00\x01"]),
    ],
)
def test_fast_leaf_encoding_equals_eth_abi(types: list[str], value: list[Any]) -> None:
    def normal(t: str, v: Any) -> Any:
        if isinstance(v, list):
            return [normal(t[:-2], x) for x in v]
        if isinstance(v, str) and ("int" in t or t.startswith("bytes")) and t != "string":
            return int(v, 0) if "int" in t else bytes.fromhex(v[2:])
        return v

    expected = keccak(keccak(encode(types, [normal(t, v) for t, v in zip(types, value)])))
    assert leaf_hash(types, value) == expected


@pytest.mark.parametrize(
    ("types", "value"),
    [(["uint8"], [256]), (["uint256"], [-1]), (["address"], ["0x1234"]), (["bool"], [1]), (["uint256"], [1, 2])],
)
def test_bad_leaves_are_refused(types: list[str], value: list[Any]) -> None:
    with pytest.raises(Exception):  # eth_abi's EncodingError family, or ValueError for the arity
        leaf_hash(types, value)


def test_misuse_is_refused() -> None:
    with pytest.raises(ValueError, match="non-zero"):
        StandardMerkleTree.of([], LINEAGE_TYPES)
    tree = StandardMerkleTree.of(lineage_values(3, 2), LINEAGE_TYPES)
    with pytest.raises(ValueError, match="not in tree"):
        tree.get_proof([9, bytes(32), bytes(32)])
    with pytest.raises(ValueError, match="out of bounds"):
        tree.get_proof(3)
    dump = tree.dump()
    dump["tree"][0] = "0x" + "00" * 32
    with pytest.raises(ValueError, match="invalid"):
        StandardMerkleTree.load(dump)


def test_hundred_thousand_leaves() -> None:
    rng = random.Random(5)
    values = [["0x%040x" % rng.getrandbits(160), rng.getrandbits(256)] for _ in range(100_000)]
    started = time.perf_counter()
    tree = StandardMerkleTree.of(values, ADDRESS_TYPES)
    elapsed = time.perf_counter() - started
    # Computed by @openzeppelin/merkle-tree 1.0.8 on these values (decimal strings); pinned
    # because the JS library takes ~30 s for 100k leaves, too slow to rerun on every test run.
    assert tree.root == "0xb8e4a5b459158d9037ac739f5aa4e51f9b7adea4f7e78a7dbca90512c3ec104b"
    for i in (0, 4_242, 99_999):
        assert StandardMerkleTree.verify(tree.root, ADDRESS_TYPES, values[i], tree.get_proof(i))
    # ~4 s on an idle core, nearly all of it keccak; an O(n^2) step would take minutes.
    assert elapsed < 30, f"100k leaves took {elapsed:.1f}s"
