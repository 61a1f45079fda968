"""OpenZeppelin StandardMerkleTree, byte for byte as `@openzeppelin/merkle-tree` 1.x builds it.

The same root must come out of this module, the browser (`StandardMerkleTree.of`) and the chain
(`MerkleProof.verify`), so the layout is copied exactly rather than merely "a Merkle tree":

* leaf = keccak256(keccak256(abi.encode(types, values))); the double hash keeps a 64-byte leaf
  from ever being mistaken for an inner node (second-preimage attack);
* leaves are sorted ascending by hash (stable for equal hashes), then laid out in one array of
  2n-1 nodes, leaves from the end backwards, node i's children at 2i+1 and 2i+2;
* an inner node is keccak256 of its two children sorted ascending, so proofs need no
  left/right flags.

`dump()` gives the JS library's `tree.dump()` JSON ("standard-v1"); integers are written as
decimal strings and bytes as 0x-hex (JSON numbers would lose precision in a browser), which is
what the JS library is fed too. Checked against the JS library in tests/test_merkle.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from eth_abi import encode

# eth_utils.keccak is this same function behind a type-dispatching decorator that cost a
# quarter of the build time here; hashing dominates building a 100k-leaf tree.
from eth_hash.auto import keccak

FORMAT = "standard-v1"
_HEX40 = re.compile(r"0x[0-9a-fA-F]{40}")


def _hex(node: bytes) -> str:
    return "0x" + node.hex()


def _node(value: str | bytes) -> bytes:
    node = bytes.fromhex(value[2:] if value[:2] in ("0x", "0X") else value) if isinstance(value, str) else value
    if len(node) != 32:
        raise ValueError("Merkle tree nodes must be 32 bytes")
    return node


def node_hash(a: bytes, b: bytes) -> bytes:
    return keccak(a + b if a <= b else b + a)


def process_proof(leaf: bytes, proof: Sequence[str | bytes]) -> bytes:
    node = _node(leaf)
    for sibling in proof:
        node = node_hash(node, _node(sibling))
    return node


# -- leaf encoding ------------------------------------------------------------------------
def _parse_int(value: Any) -> Any:
    if isinstance(value, str):
        return int(value, 16) if value[:2] in ("0x", "0X") else int(value, 10)
    return value


def _parse_bytes(value: Any) -> Any:
    return bytes.fromhex(value[2:]) if isinstance(value, str) and value[:2] in ("0x", "0X") else value


def _normalizer(abi_type: str) -> Callable[[Any], Any]:
    """Accept what the JS library accepts: decimal or 0x strings for integers, 0x strings for bytes."""
    if abi_type.endswith("]"):
        inner = _normalizer(abi_type[: abi_type.rindex("[")])
        return lambda value: [inner(v) for v in value]
    if re.fullmatch(r"u?int\d*", abi_type):
        return _parse_int
    if abi_type.startswith("bytes"):
        return _parse_bytes
    return lambda value: value


def _word_encoder(abi_type: str) -> Callable[[Any], bytes | None] | None:
    """A fast encoder of one static ABI word, or None for types left to eth_abi.

    It returns None for any value it does not find exactly canonical, and the whole leaf then
    goes through eth_abi, which encodes it or raises its own error; so the fast path can only
    ever agree with eth_abi (tests/test_merkle.py checks it does). eth_abi alone made 100k
    leaves take several seconds longer.
    """
    if m := re.fullmatch(r"(u?)int(\d*)", abi_type):
        bits = int(m[2] or 256)
        lo, hi = (0, 1 << bits) if m[1] else (-(1 << (bits - 1)), 1 << (bits - 1))

        def integer(v: Any) -> bytes | None:
            if type(v) is not int or not lo <= v < hi:
                return None
            return (v % (1 << 256)).to_bytes(32, "big")

        return integer
    if abi_type == "address":

        def address(v: Any) -> bytes | None:
            if type(v) is str and _HEX40.fullmatch(v):
                return bytes(12) + bytes.fromhex(v[2:])
            return bytes(12) + v if type(v) is bytes and len(v) == 20 else None

        return address
    if abi_type == "bool":
        return lambda v: (bytes(31) + bytes([v])) if type(v) is bool else None
    if (m := re.fullmatch(r"bytes(\d+)", abi_type)) and 1 <= int(m[1]) <= 32:
        size = int(m[1])
        return lambda v: v + bytes(32 - size) if type(v) is bytes and len(v) == size else None
    return None


def _leaf_hasher(leaf_encoding: Sequence[str]) -> Callable[[Sequence[Any]], bytes]:
    types = list(leaf_encoding)
    words = [_word_encoder(t) for t in types]
    fast = all(w is not None for w in words)
    normalizers = [_normalizer(t) for t in types]

    def leaf_hash(value: Sequence[Any]) -> bytes:
        if isinstance(value, (str, bytes, int)) or len(value) != len(types):
            raise ValueError(f"a leaf must be a sequence of {len(types)} values for {types}, got {value!r}")
        values = [n(v) for n, v in zip(normalizers, value)]
        if fast:
            encoded = [w(v) for w, v in zip(words, values)]  # type: ignore[misc]
            if None not in encoded:
                return keccak(keccak(b"".join(encoded)))  # type: ignore[arg-type]
        return keccak(keccak(encode(types, values)))

    return leaf_hash


def leaf_hash(leaf_encoding: Sequence[str], value: Sequence[Any]) -> bytes:
    return _leaf_hasher(leaf_encoding)(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


# -- the tree -----------------------------------------------------------------------------
class StandardMerkleTree:
    """Build with `StandardMerkleTree.of(values, types)` or `.load(dump)`, not the constructor."""

    def __init__(self, tree: list[bytes], values: list[tuple[Any, int]], leaf_encoding: Sequence[str]) -> None:
        self._tree = tree
        self._values = values  # (value, tree index), in the caller's order
        self.leaf_encoding = list(leaf_encoding)
        self._leaf_hash = _leaf_hasher(self.leaf_encoding)
        # Like the JS library, a duplicated value is found at its last position.
        self._lookup = {tree[tree_index]: i for i, (_, tree_index) in enumerate(values)}

    @classmethod
    def of(
        cls, values: Sequence[Sequence[Any]], leaf_encoding: Sequence[str], *, sort_leaves: bool = True
    ) -> StandardMerkleTree:
        values = list(values)  # read twice below; a generator would be spent after the first
        if not values:
            raise ValueError("Expected non-zero number of leaves")
        hasher = _leaf_hasher(leaf_encoding)
        hashed = [(hasher(value), i) for i, value in enumerate(values)]
        if sort_leaves:
            hashed.sort(key=lambda pair: pair[0])  # stable, like Array.prototype.sort
        size = 2 * len(hashed) - 1
        tree: list[bytes] = [b""] * size
        tree_index = [0] * len(values)
        for leaf_index, (digest, value_index) in enumerate(hashed):
            tree[size - 1 - leaf_index] = digest
            tree_index[value_index] = size - 1 - leaf_index
        for i in range(size - 1 - len(hashed), -1, -1):
            tree[i] = node_hash(tree[2 * i + 1], tree[2 * i + 2])
        return cls(tree, [(value, tree_index[i]) for i, value in enumerate(values)], leaf_encoding)

    @classmethod
    def load(cls, data: dict[str, Any]) -> StandardMerkleTree:
        """Rebuild from `dump()` output (ours or the JS library's), checking every node."""
        if data.get("format") != FORMAT:
            raise ValueError(f"Unknown format {data.get('format')!r}")
        if data.get("leafEncoding") is None:
            raise ValueError("Expected leaf encoding")
        tree = [_node(h) for h in data["tree"]]
        if not tree:
            raise ValueError("Merkle tree is invalid")
        loaded = cls(tree, [(v["value"], int(v["treeIndex"])) for v in data["values"]], data["leafEncoding"])
        for i in range(len(loaded._values)):
            loaded._checked_tree_index(i)
        for i in range(len(tree)):
            if 2 * i + 2 < len(tree) and tree[i] != node_hash(tree[2 * i + 1], tree[2 * i + 2]):
                raise ValueError("Merkle tree is invalid")
            if 2 * i + 1 == len(tree) - 1:
                raise ValueError("Merkle tree is invalid")
        return loaded

    @property
    def root(self) -> str:
        return _hex(self._tree[0])

    def __len__(self) -> int:
        return len(self._values)

    def at(self, index: int) -> Any:
        return self._values[index][0]

    def entries(self) -> Iterator[tuple[int, Any]]:
        for i, (value, _) in enumerate(self._values):
            yield i, value

    def leaf_hash(self, value: Sequence[Any]) -> str:
        return _hex(self._leaf_hash(value))

    def index_of(self, value: Sequence[Any]) -> int:
        index = self._lookup.get(self._leaf_hash(value))
        if index is None:
            raise ValueError("Leaf is not in tree")
        return index

    def get_proof(self, leaf: int | Sequence[Any]) -> list[str]:
        """Sibling hashes from the leaf up, for `MerkleProof.verify(proof, root, leafHash)`."""
        tree_index = self._checked_tree_index(leaf if isinstance(leaf, int) else self.index_of(leaf))
        proof = []
        while tree_index > 0:
            proof.append(self._tree[tree_index - 1 if tree_index % 2 == 0 else tree_index + 1])
            tree_index = (tree_index - 1) // 2
        return [_hex(p) for p in proof]

    def get_multi_proof(self, leaves: Sequence[int | Sequence[Any]]) -> dict[str, Any]:
        """{leaves, proof, proofFlags} for `MerkleProof.multiProofVerify`, as the JS library gives."""
        indices = [self._checked_tree_index(x if isinstance(x, int) else self.index_of(x)) for x in leaves]
        indices.sort(reverse=True)
        if any(a == b for a, b in zip(indices, indices[1:])):
            raise ValueError("Cannot prove duplicated index")
        stack, proof, flags = list(indices), [], []
        head = 0  # a moving start instead of list.pop(0), which would make this O(n^2)
        while head < len(stack) and stack[head] > 0:
            j = stack[head]
            head += 1
            sibling = j - 1 if j % 2 == 0 else j + 1
            if head < len(stack) and stack[head] == sibling:
                flags.append(True)
                head += 1
            else:
                flags.append(False)
                proof.append(_hex(self._tree[sibling]))
            stack.append((j - 1) // 2)
        if not indices:
            proof.append(self.root)
        by_hash = {self._tree[ti]: value for value, ti in self._values}
        return {"leaves": [by_hash[self._tree[i]] for i in indices], "proof": proof, "proofFlags": flags}

    def _checked_tree_index(self, value_index: int) -> int:
        if not 0 <= value_index < len(self._values):
            raise ValueError("Index out of bounds")
        value, tree_index = self._values[value_index]
        if not (len(self._tree) // 2 <= tree_index < len(self._tree)):  # leaves fill the back half
            raise ValueError("Index is not a leaf")
        if self._tree[tree_index] != self._leaf_hash(value):
            raise ValueError("Merkle tree does not contain the expected value")
        return tree_index

    @staticmethod
    def verify(
        root: str | bytes, leaf_encoding: Sequence[str], leaf: Sequence[Any], proof: Sequence[str | bytes]
    ) -> bool:
        """What `MerkleProof.verify(proof, root, leafHash)` answers on chain."""
        return process_proof(leaf_hash(leaf_encoding, leaf), proof) == _node(root)

    @staticmethod
    def verify_multi_proof(root: str | bytes, leaf_encoding: Sequence[str], multiproof: dict[str, Any]) -> bool:
        hasher = _leaf_hasher(leaf_encoding)
        stack = [hasher(leaf) for leaf in multiproof["leaves"]]
        proof = [_node(p) for p in multiproof["proof"]]
        flags = list(multiproof["proofFlags"])
        if len(stack) + len(proof) != len(flags) + 1 or len(proof) < flags.count(False):
            raise ValueError("Provided leaves and multiproof are not compatible")
        s = p = 0  # read positions instead of list.pop(0)
        for flag in flags:
            if s >= len(stack) or (flag and s + 1 >= len(stack)):
                raise ValueError("Invalid multiproof format")
            a, s = stack[s], s + 1
            if flag:
                b, s = stack[s], s + 1
            else:
                b, p = proof[p], p + 1
            stack.append(node_hash(a, b))
        if (len(stack) - s) + (len(proof) - p) != 1:
            raise ValueError("Invalid multiproof format")
        result = stack[-1] if s < len(stack) else proof[p]
        return result == _node(root)

    def dump(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "leafEncoding": list(self.leaf_encoding),
            "tree": [_hex(node) for node in self._tree],
            "values": [{"value": _jsonable(value), "treeIndex": ti} for value, ti in self._values],
        }
