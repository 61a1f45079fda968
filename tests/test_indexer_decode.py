"""The generated decoders (abi.py) against eth_abi, on every event of every project contract:
the arguments, and the JSON text of the `events` row (written from the types, not by a JSON
library), for random values at the edges of each type (uint256 above 64 bits, negative ints,
non-ASCII and escaped strings, empty and long arrays)."""

from __future__ import annotations

import json
import random
from typing import Any

import eth_abi
import pytest

from provenant.chain.compile import compile_contracts
from provenant_indexer.abi import CompiledEvent, event_specs


def _value(abi_type: str, rng: random.Random) -> Any:
    if abi_type.endswith("[]"):
        return [_value(abi_type[:-2], rng) for _ in range(rng.choice([0, 1, 3, 17]))]
    if abi_type.startswith("uint"):
        bits = int(abi_type[4:] or 256)
        return rng.choice([0, 1, 2**bits - 1, rng.getrandbits(bits)])
    if abi_type.startswith("int"):
        bits = int(abi_type[3:] or 256)
        return rng.choice([-(2 ** (bits - 1)), -1, 0, 2 ** (bits - 1) - 1])
    if abi_type == "address":
        return "0x" + rng.randbytes(20).hex()
    if abi_type == "bool":
        return rng.random() < 0.5
    if abi_type == "string":
        return rng.choice(["", "ipfs://bafy/x", 'quote " back\\slash\ttab\nnewline', "Ünïcødé ✓ 模型"])
    if abi_type == "bytes":
        return rng.randbytes(rng.choice([0, 5, 40]))
    if abi_type.startswith("bytes"):
        return rng.randbytes(int(abi_type[5:]))
    raise AssertionError(f"no generator for {abi_type}")


def _events() -> list[tuple[str, Any]]:
    return [(f"{name}.{spec.name}", spec) for name, artifact in sorted(compile_contracts().items())
            for spec in event_specs(name, artifact.abi)]


@pytest.mark.parametrize("seed", range(8))
def test_generated_decoders_equal_eth_abi_with_their_json_text(seed: int) -> None:
    rng = random.Random(seed)
    checked = 0
    for _, spec in _events():
        event = CompiledEvent(spec)
        topics, data_types, data_values = [spec.topic0], [], []
        for p in spec.params:
            value = _value(p.abi_type, rng)
            if p.indexed and ("[" in p.abi_type or p.abi_type in ("string", "bytes")):
                topics.append("0x" + rng.randbytes(32).hex())  # an indexed dynamic value: its hash
            elif p.indexed:
                topics.append("0x" + eth_abi.encode([p.abi_type], [value]).hex())
            else:
                data_types.append(p.abi_type)
                data_values.append(value)
        data = "0x" + eth_abi.encode(data_types, data_values).hex()
        args, text = event.decode_json(topics, data)
        reference = event.decode_with_eth_abi(topics, data)
        assert args == reference, spec.signature
        assert json.loads(text) == reference, (spec.signature, text)
        assert list(json.loads(text)) == list(reference)  # indexed first, as the dict (and the stored rows before)
        checked += 1
    assert checked >= 40  # every contract's events, not a few
