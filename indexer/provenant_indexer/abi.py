"""topic0 -> event table built from the contracts' ABIs, and a fast log decoder.

web3.py spends ~80% of an indexer's time formatting each log (see TOOLCHAIN.md); here a log is
decoded straight from the JSON-RPC hex strings: every ABI word is 64 hex characters, so static
values are one slice and one `int(..., 16)` each. Dynamic values the project's events use
(string, bytes, T[] of static T) are followed through their offsets; anything else (tuples,
nested arrays) falls back to eth_abi. tests/test_indexer_decode.py checks the fast path against
eth_abi on every event the project emits.

Decoded values are JSON-ready: integers as Python ints (exact in JSON), addresses lowercase
0x-hex, bytes as 0x-hex, bools as bools.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import eth_abi
import orjson
from eth_utils import keccak

from provenant_indexer.bulk import json_text

Decoder = Callable[[str, int], Any]  # (hex data without 0x, word offset in hex chars) -> value


def orjson_text(value: Any) -> str:
    return orjson.dumps(value).decode()


class UnknownEvent(LookupError):
    """A log from an indexed contract whose topic0 matches no event in its ABI."""


@dataclass(frozen=True)
class Param:
    name: str
    abi_type: str
    indexed: bool


@dataclass(frozen=True)
class EventSpec:
    contract: str
    name: str
    signature: str
    topic0: str  # 0x-hex, lowercase
    params: tuple[Param, ...]


def _canonical_type(item: Mapping[str, Any]) -> str:
    abi_type = str(item["type"])
    if abi_type.startswith("tuple"):
        inner = ",".join(_canonical_type(c) for c in item["components"])
        return f"({inner}){abi_type[5:]}"
    return abi_type


def event_specs(contract: str, abi: Sequence[Mapping[str, Any]]) -> list[EventSpec]:
    specs = []
    for item in abi:
        if item.get("type") != "event" or item.get("anonymous"):
            continue
        params = tuple(Param(str(i["name"]), _canonical_type(i), bool(i["indexed"])) for i in item["inputs"])
        signature = f"{item['name']}({','.join(p.abi_type for p in params)})"
        topic0 = "0x" + keccak(text=signature).hex()
        specs.append(EventSpec(contract, str(item["name"]), signature, topic0, params))
    return specs


# -- word decoders (hex text) ----------------------------------------------------------------
def _word(h: str, at: int) -> str:
    return h[at : at + 64]


def _word_expression(abi_type: str, src: str, lo: int, name: str, helpers: dict[str, Any]) -> str:
    """Python source decoding one static 32-byte ABI word at hex offset `lo` of `src`: a slice and
    at most one int(); intN needs two's complement, so it becomes a call of helper `name`."""
    if abi_type.startswith("uint"):
        return f"int({src}[{lo}:{lo + 64}], 16)"
    if abi_type == "address":
        return f"'0x' + {src}[{lo + 24}:{lo + 64}]"
    if abi_type == "bool":
        return f"int({src}[{lo}:{lo + 64}], 16) != 0"
    if abi_type.startswith("bytes") and abi_type != "bytes":
        return f"'0x' + {src}[{lo}:{lo + 2 * int(abi_type[5:])}]"
    helpers[name] = _static_decoder(abi_type)
    return f"{name}({src}[{lo}:{lo + 64}])"


def _static_decoder(abi_type: str) -> Callable[[str], Any] | None:
    """A decoder of one 64-hex-char word, or None when the type is not a single static word."""
    if "[" in abi_type or "(" in abi_type:
        return None
    if abi_type.startswith("uint"):
        return lambda w: int(w, 16)
    if abi_type.startswith("int"):
        bits = int(abi_type[3:] or 256)

        def signed(w: str) -> int:
            v = int(w, 16)
            v &= (1 << bits) - 1
            return v - (1 << bits) if v >> (bits - 1) else v

        return signed
    if abi_type == "address":
        return lambda w: "0x" + w[24:]
    if abi_type == "bool":
        return lambda w: int(w, 16) != 0
    if abi_type.startswith("bytes") and abi_type != "bytes":
        size = int(abi_type[5:])
        return lambda w: "0x" + w[: 2 * size]
    return None


def _dynamic_decoder(abi_type: str) -> Decoder | None:
    """A decoder for a head slot holding an offset to dynamic data, or None if unsupported."""
    if abi_type in ("string", "bytes"):
        as_text = abi_type == "string"

        def blob(h: str, at: int) -> Any:
            start = int(_word(h, at), 16) * 2
            length = int(_word(h, start), 16) * 2
            raw = h[start + 64 : start + 64 + length]
            return bytes.fromhex(raw).decode("utf-8", errors="replace") if as_text else "0x" + raw

        return blob
    if abi_type.endswith("[]") and "(" not in abi_type and abi_type.count("[") == 1:
        element = _static_decoder(abi_type[:-2])
        if element is None:
            return None

        def array(h: str, at: int) -> list[Any]:
            start = int(_word(h, at), 16) * 2
            count = int(_word(h, start), 16)
            base = start + 64
            return [element(h[base + 64 * i : base + 64 * (i + 1)]) for i in range(count)]

        return array
    return None


def _json_ready(value: Any) -> Any:
    """eth_abi output as the fast path writes it (for the fallback and for cross-checks)."""
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if isinstance(value, str) and value.startswith("0x") and len(value) == 42:
        return value.lower()
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


class CompiledEvent:
    """Decodes one event's logs: topics for indexed params, the data words for the rest."""

    def __init__(self, spec: EventSpec) -> None:
        self.spec = spec
        self.contract = spec.contract
        self.name = spec.name
        self._topic_decoders: list[tuple[str, int, Callable[[str], Any]]] = []
        data_params = [p for p in spec.params if not p.indexed]
        topic = 1
        for p in spec.params:
            if p.indexed:
                static = _static_decoder(p.abi_type)
                # Indexed dynamic values are stored as their keccak hash: keep the topic.
                self._topic_decoders.append((p.name, topic, static or (lambda w: "0x" + w)))
                topic += 1
        self._data_names = [p.name for p in data_params]
        self._data_types = [p.abi_type for p in data_params]
        fast: list[tuple[str, int, Decoder]] = []
        for i, p in enumerate(data_params):
            static = _static_decoder(p.abi_type)
            if static is not None:
                fast.append((p.name, i * 64, (lambda s: lambda h, at: s(h[at : at + 64]))(static)))
                continue
            dynamic = _dynamic_decoder(p.abi_type)
            if dynamic is None:
                fast = []
                break
            fast.append((p.name, i * 64, dynamic))
        self._fast = fast if len(fast) == len(data_params) else None
        self._generated = self._generate(spec, data_params) if self._fast is not None else None
        self._generated_json = self._generate_json(spec, data_params) if self._fast is not None else None
        self._generated_text: Callable[[Sequence[str], str], tuple[dict[str, Any] | None, str]] | None = None

    @staticmethod
    def _generate(spec: EventSpec, data_params: list[Param]) -> Callable[[Sequence[str], str], dict[str, Any]]:
        """One straight-line function per event: every value is one slice and at most one
        int(), with no per-parameter call; 2-3x faster than looping over decoder closures, and
        decoding is most of an indexer's per-event Python work."""
        helpers: dict[str, Any] = {}
        items = []

        def word(abi_type: str, src: str, lo: int, name: str) -> str:
            return _word_expression(abi_type, src, lo, name, helpers)

        topic = 1
        for p in spec.params:
            if p.indexed:
                if _static_decoder(p.abi_type) is None:
                    items.append(f"{p.name!r}: t[{topic}]")  # an indexed dynamic value: its hash
                else:
                    items.append(f"{p.name!r}: " + word(p.abi_type, f"t[{topic}]", 2, f"_t{topic}"))
                topic += 1
        for i, p in enumerate(data_params):
            if _static_decoder(p.abi_type) is not None:
                items.append(f"{p.name!r}: " + word(p.abi_type, "h", i * 64, f"_d{i}"))
            else:
                helpers[f"_d{i}"] = _dynamic_decoder(p.abi_type)
                items.append(f"{p.name!r}: _d{i}(h, {i * 64})")
        source = "def decode(t, data):\n    h = data[2:]\n    return {" + ", ".join(items) + "}\n"
        exec(compile(source, f"<decoder {spec.signature}>", "exec"), helpers)  # noqa: S102 - our own ABI's text
        return helpers["decode"]  # type: ignore[no-any-return]

    @staticmethod
    def _generate_json(spec: EventSpec, data_params: list[Param],
                       with_args: bool = True) -> Callable[[Sequence[str], str], tuple[dict[str, Any] | None, str]]:
        """Like _generate, returning the JSON text of the arguments too, written from the types
        as one f-string (one allocation; a chain of `+` made a string per part): orjson refuses
        integers above 64 bits (most token amounts), and json.dumps of a dict cost more than the
        decoding itself. Without `with_args` the dict is not built (None in its place): the raw
        `events` row is all an event no handler reads needs."""
        helpers: dict[str, Any] = {"_json": json_text, "_str": orjson_text}
        lines, items, fields = [], [], []

        def word(abi_type: str, src: str, lo: int, name: str) -> str:
            return _word_expression(abi_type, src, lo, f"_s{name}", helpers)

        def text(abi_type: str, var: str) -> str:  # an f-string field
            if abi_type.startswith(("uint", "int")) and "[" not in abi_type:
                return "{" + var + "}"
            if abi_type == "bool":
                return '{("true" if ' + var + ' else "false")}'
            if abi_type == "address" or (abi_type.startswith("bytes") and "[" not in abi_type):
                return '"{' + var + '}"'  # 0x-hex: nothing to escape
            if abi_type == "string":
                return "{_str(" + var + ")}"
            return "{_json(" + var + ")}"  # arrays: orjson, or json for integers above 64 bits

        values: list[tuple[Param, str]] = []
        topic = 1
        for p in spec.params:
            if p.indexed:
                var = f"v{len(values)}"
                if _static_decoder(p.abi_type) is None:
                    lines.append(f"    {var} = t[{topic}]")  # an indexed dynamic value: its hash
                    values.append((Param(p.name, "bytes32", True), var))
                else:
                    lines.append(f"    {var} = " + word(p.abi_type, f"t[{topic}]", 2, var))
                    values.append((p, var))
                topic += 1
        for i, p in enumerate(data_params):
            var = f"v{len(values)}"
            if _static_decoder(p.abi_type) is not None:
                lines.append(f"    {var} = " + word(p.abi_type, "h", i * 64, var))
            else:
                helpers[f"_d{var}"] = _dynamic_decoder(p.abi_type)
                lines.append(f"    {var} = _d{var}(h, {i * 64})")
            values.append((p, var))
        for n, (p, var) in enumerate(values):
            items.append(f"{p.name!r}: {var}")
            key = orjson_text(p.name).replace("{", "{{").replace("}", "}}")
            fields.append(("{{" if n == 0 else ",") + key + ":" + text(p.abi_type, var))
        body = "f" + repr("".join(fields) + "}}") if fields else "'{}'"
        args = "{" + ", ".join(items) + "}" if with_args else "None"
        source = ("def decode(t, data):\n    h = data[2:]\n" + "".join(line + "\n" for line in lines)
                  + f"    return {args}, {body}\n")
        exec(compile(source, f"<json decoder {spec.signature}>", "exec"), helpers)  # noqa: S102 - our own ABI's text
        return helpers["decode"]  # type: ignore[no-any-return]

    def json_decoder(self, with_args: bool = True) -> Callable[[Sequence[str], str], tuple[dict[str, Any] | None, str]]:
        """decode_json itself, or the generated function it would call (one call less per log);
        without `with_args`, one that returns None for the arguments (only their JSON text)."""
        if self._generated_json is None:
            return self.decode_json
        if with_args:
            return self._generated_json
        if self._generated_text is None:
            self._generated_text = self._generate_json(self.spec, [p for p in self.spec.params if not p.indexed],
                                                       with_args=False)
        return self._generated_text

    def decode_json(self, topics: Sequence[str], data: str) -> tuple[dict[str, Any], str]:
        """(arguments, their JSON text as the events table stores it)."""
        if self._generated_json is not None:
            return self._generated_json(topics, data)
        args = self.decode(topics, data)
        return args, json_text(args)  # type: ignore[return-value]

    def decode(self, topics: Sequence[str], data: str) -> dict[str, Any]:
        if self._generated is not None:
            return self._generated(topics, data)
        args: dict[str, Any] = {}
        for name, position, decode in self._topic_decoders:
            args[name] = decode(topics[position][2:])
        if self._fast is not None:
            h = data[2:]
            for name, at, decode in self._fast:
                args[name] = decode(h, at)
        else:
            values = eth_abi.decode(self._data_types, bytes.fromhex(data[2:]))
            args.update(zip(self._data_names, (_json_ready(v) for v in values)))
        return args

    def decode_with_eth_abi(self, topics: Sequence[str], data: str) -> dict[str, Any]:
        """The reference decoding, for tests."""
        args: dict[str, Any] = {}
        for (name, position, _), p in zip(self._topic_decoders, [p for p in self.spec.params if p.indexed]):
            if _static_decoder(p.abi_type) is None:
                args[name] = topics[position]
            else:
                (value,) = eth_abi.decode([p.abi_type], bytes.fromhex(topics[position][2:]))
                args[name] = _json_ready(value)
        values = eth_abi.decode(self._data_types, bytes.fromhex(data[2:]))
        args.update(zip(self._data_names, (_json_ready(v) for v in values)))
        return args


class EventTable:
    """(contract address, topic0) -> CompiledEvent for the indexed contracts."""

    def __init__(self, abis: Mapping[str, Sequence[Mapping[str, Any]]], addresses: Mapping[str, str]) -> None:
        self.address_names = {a.lower(): name for name, a in addresses.items()}
        # What another process needs to build the same table (compiled decoders do not pickle).
        self.sources = ({n: list(abis[n]) for n in addresses}, dict(addresses))
        by_contract: dict[str, dict[str, CompiledEvent]] = {}
        for name in addresses:
            by_contract[name] = {s.topic0: CompiledEvent(s) for s in event_specs(name, abis[name])}
        self._by_address = {a: by_contract[n] for a, n in self.address_names.items()}

    @property
    def addresses(self) -> list[str]:
        return sorted(self.address_names)

    def lookup(self, address: str, topic0: str) -> CompiledEvent:
        try:
            return self._by_address[address][topic0]
        except KeyError:
            raise UnknownEvent(f"log at {address} with topic0 {topic0} matches no event in its ABI") from None

    @classmethod
    def from_artifacts(cls, addresses: Mapping[str, str]) -> "EventTable":
        from provenant.chain.compile import compile_contracts

        artifacts = compile_contracts()
        return cls({n: a.abi for n, a in artifacts.items()}, addresses)
