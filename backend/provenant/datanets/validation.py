"""Validate a JSONL contribution against a Datanet's rules.

A contribution is read as a stream of bytes and never more than ``max_bytes + 1`` of them: the
extra byte is how a file that is exactly at the limit is told apart from one that is over it,
whatever ``stat`` said (a file can grow between stat and read, and pipes report size 0).
Every problem is a ``ContributionError`` whose one-line message names the file, the line and
what is wrong, because that message goes straight back to the contributor.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Sequence

TASKS: tuple[str, ...] = ("classification", "text", "prompt_completion")

# The exact keys each task's rows must have; extra keys are refused so that what is hashed into
# a lineage leaf is exactly what trains the model, with nothing riding along unseen.
_ROW_KEYS: dict[str, tuple[str, ...]] = {
    "classification": ("text", "label"),
    "text": ("text",),
    "prompt_completion": ("prompt", "completion"),
}


@dataclass(frozen=True)
class DatanetRules:
    task: str  # "classification" | "text" | "prompt_completion"
    labels: tuple[str, ...] = ()
    max_rows: int = 1000
    max_bytes: int = 1_048_576
    max_line_bytes: int = 16_384  # bytes before the newline, any "\r" included

    def __post_init__(self) -> None:
        # Rules come from Datanet metadata (JSON lists), so accept any sequence but store a tuple.
        object.__setattr__(self, "labels", tuple(self.labels))
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; expected one of {', '.join(TASKS)}")
        if self.task == "classification":
            if not self.labels:
                raise ValueError("a classification Datanet needs at least one label")
            if len(set(self.labels)) != len(self.labels):
                raise ValueError(f"duplicate labels in {list(self.labels)}")
            if not all(isinstance(x, str) and x.strip() for x in self.labels):
                raise ValueError("labels must be non-empty strings")
        elif self.labels:
            raise ValueError(f"labels only apply to classification, not {self.task!r}")
        for name in ("max_rows", "max_bytes", "max_line_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class ValidatedFile:
    path: Path
    size: int
    rows: tuple[dict[str, Any], ...]
    sha256: str  # hex of the file bytes, no 0x prefix


class ContributionError(ValueError):
    """A contribution broke a rule; ``str()`` is ``<file>:<line>: <problem>`` on one line."""

    def __init__(self, file: str, line: int | None, problem: str) -> None:
        self.file = file
        self.line = line
        # Problems can quote user input; keep the message on one line whatever it contains.
        self.problem = " ".join(problem.splitlines())
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.problem}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.file, self.line, self.problem))


def _show(value: Any, limit: int = 40) -> str:
    """A short repr of a user-supplied value, so a huge label cannot flood an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; Python accepts them by default, other parsers would not.
    raise ValueError(f"{name} is not allowed in JSON")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # With duplicate keys the last one silently wins; refuse, so the hashed row is unambiguous.
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key {_show(key)}")
        obj[key] = value
    return obj


def _check_row(row: dict[str, Any], rules: DatanetRules) -> str | None:
    """The problem with one parsed row, or None if it fits the Datanet's schema."""
    wanted = _ROW_KEYS[rules.task]
    missing = [k for k in wanted if k not in row]
    if missing:
        return f"missing key {', '.join(repr(k) for k in missing)} (a {rules.task} row needs {', '.join(wanted)})"
    extra = sorted(k for k in row if k not in wanted)
    if extra:
        return f"unexpected key {', '.join(_show(k) for k in extra)} (a {rules.task} row has only {', '.join(wanted)})"
    for key in wanted:
        value = row[key]
        if not isinstance(value, str):
            return f"{key!r} must be a string, got {type(value).__name__}"
        if key != "label" and not value.strip():
            return f"{key!r} is empty"
    if rules.task == "classification" and row["label"] not in rules.labels:
        return f"label {_show(row['label'])} is not one of {', '.join(rules.labels)}"
    return None


def _parse_line(raw: bytes, line_no: int, rules: DatanetRules, name: str) -> dict[str, Any]:
    body = raw[:-1] if raw.endswith(b"\n") else raw
    if not body.strip():
        raise ContributionError(name, line_no, "blank line (only one trailing newline is allowed at the end of the file)")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ContributionError(name, line_no, f"invalid UTF-8 (byte 0x{body[exc.start]:02x} at byte {exc.start + 1} of the line)") from None
    if line_no == 1 and text.startswith("\ufeff"):
        raise ContributionError(name, line_no, "file starts with a byte-order mark; save it as UTF-8 without BOM")
    try:
        row = json.loads(text, object_pairs_hook=_unique_object, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ContributionError(name, line_no, f"not valid JSON: {exc.msg} at column {exc.colno}") from None
    except (ValueError, RecursionError) as exc:
        raise ContributionError(name, line_no, f"not valid JSON: {exc}") from None
    if not isinstance(row, dict):
        raise ContributionError(name, line_no, f"each line must be a JSON object, got {type(row).__name__}")
    problem = _check_row(row, rules)
    if problem:
        raise ContributionError(name, line_no, problem)
    return row


def _read_rows(f: BinaryIO, rules: DatanetRules, name: str) -> tuple[int, tuple[dict[str, Any], ...], str]:
    digest = hashlib.sha256()
    budget = rules.max_bytes + 1  # total bytes we are ever willing to read
    consumed = 0
    rows: list[dict[str, Any]] = []
    line_no = 0
    while True:
        # Bounded by both the line limit and what is left of the file budget, so a file without
        # newlines or a never-ending pipe cannot make us buffer more than the limits allow.
        chunk = f.readline(min(rules.max_line_bytes + 1, budget - consumed))
        if not chunk:
            break
        consumed += len(chunk)
        line_no += 1
        if consumed > rules.max_bytes:
            raise ContributionError(name, None, f"file is larger than the limit of {rules.max_bytes} bytes (stopped reading at byte {consumed})")
        digest.update(chunk)
        if not chunk.endswith(b"\n") and len(chunk) > rules.max_line_bytes:
            raise ContributionError(name, line_no, f"line is longer than the limit of {rules.max_line_bytes} bytes")
        if len(rows) >= rules.max_rows:
            raise ContributionError(name, line_no, f"too many rows: the limit is {rules.max_rows} rows per file")
        rows.append(_parse_line(chunk, line_no, rules, name))
    if consumed == 0:
        raise ContributionError(name, None, "file is empty")
    return consumed, tuple(rows), digest.hexdigest()


def validate_contribution(path: Path, rules: DatanetRules, *, name: str | None = None) -> ValidatedFile:
    """Check a JSONL file against ``rules`` and return its rows, size and sha256.

    ``name`` is how the file is called in errors (e.g. the uploaded file's original name rather
    than a server-side temporary path); it defaults to the path's last component.
    """
    path = Path(path)
    shown = name if name is not None else path.name
    try:
        f = path.open("rb")
    except FileNotFoundError:
        raise ContributionError(shown, None, "file not found") from None
    except IsADirectoryError:
        raise ContributionError(shown, None, "is a directory, not a file") from None
    except OSError as exc:
        raise ContributionError(shown, None, f"cannot open file: {exc.strerror or exc}") from None
    with f:
        info = os.fstat(f.fileno())
        # Regular files tell their size up front: refuse an oversized one before reading a byte.
        if stat.S_ISREG(info.st_mode) and info.st_size > rules.max_bytes:
            raise ContributionError(shown, None, f"file is {info.st_size} bytes, over the limit of {rules.max_bytes} bytes; refused without reading")
        try:
            size, rows, sha = _read_rows(f, rules, shown)
        except OSError as exc:
            raise ContributionError(shown, None, f"cannot read file: {exc.strerror or exc}") from None
    return ValidatedFile(path=path, size=size, rows=rows, sha256=sha)


def canonical_rows_bytes(rows: Sequence[dict[str, Any]]) -> bytes:
    """The bytes ``rows_hash`` hashes: each row as canonical JSON followed by one "\\n".

    Canonical means sorted keys, separators (",", ":"), UTF-8 without ASCII escaping and no NaN,
    so any language can rebuild the same bytes from the same rows.
    """
    return b"".join(
        json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8") + b"\n"
        for row in rows
    )


def rows_hash(rows: Sequence[dict[str, Any]]) -> str:
    """0x-prefixed hex sha256 (not keccak) of ``canonical_rows_bytes(rows)``; a lineage leaf's row hash.

    Order matters on purpose: a lineage leaf commits to the exact rows used, in the order used.
    """
    return "0x" + hashlib.sha256(canonical_rows_bytes(rows)).hexdigest()
