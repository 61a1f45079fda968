"""Contribution validation: bundled samples, every rule's one-line error, size limits, rows_hash."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from provenant.datanets.validation import (
    ContributionError,
    DatanetRules,
    ValidatedFile,
    rows_hash,
    validate_contribution,
)

SAMPLES = Path(__file__).resolve().parent.parent / "backend" / "provenant" / "demo" / "samples"
LABELS = ("billing", "technical", "shipping", "account")
RULES = DatanetRules(task="classification", labels=LABELS)
ROW = '{"text": "I was charged twice", "label": "billing"}'


def _write(tmp_path: Path, content: str | bytes, name: str = "c.jsonl") -> Path:
    p = tmp_path / name
    p.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return p


def _error(path: Path, rules: DatanetRules = RULES) -> ContributionError:
    with pytest.raises(ContributionError) as info:
        validate_contribution(path, rules)
    err = info.value
    assert "\n" not in str(err) and "\r" not in str(err)
    assert str(err) == (f"{err.file}: {err.problem}" if err.line is None else f"{err.file}:{err.line}: {err.problem}")
    return err


# --- the bundled samples ----------------------------------------------------------------------

@pytest.mark.parametrize("name, count", [
    ("alice_1.jsonl", 120), ("alice_2.jsonl", 100), ("bob_1.jsonl", 120), ("bob_2.jsonl", 100),
    ("carol_1.jsonl", 100), ("dave_1.jsonl", 80), ("erin_1.jsonl", 80), ("mallory_spam.jsonl", 40),
    ("queries.jsonl", 60),
])
def test_good_samples_pass(name: str, count: int) -> None:
    path = SAMPLES / name
    data = path.read_bytes()
    result = validate_contribution(path, RULES)
    assert isinstance(result, ValidatedFile)
    assert len(result.rows) == count
    assert result.size == len(data)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert list(result.rows) == [json.loads(line) for line in data.decode("utf-8").splitlines()]


def test_datanets_json_lists_valid_files() -> None:
    doc = json.loads((SAMPLES / "datanets.json").read_text(encoding="utf-8"))
    assert [d["name"] for d in doc["datanets"]] == ["support-tickets", "forum-posts", "product-faq"]
    for d in doc["datanets"]:
        assert d["license"] == "CC-BY-4.0" and d["task"] == "classification"
        rules = DatanetRules(d["task"], labels=d["labels"], max_rows=d["max_rows_per_file"], max_bytes=d["max_bytes_per_file"])
        for files in d["contributors"].values():
            for f in files:
                validate_contribution(SAMPLES / f, rules)


def test_sample_generator_is_reproducible(tmp_path: Path) -> None:
    from provenant.demo import make_samples

    make_samples.generate(tmp_path)
    for p in sorted(SAMPLES.rglob("*")):
        if p.is_file():
            assert (tmp_path / p.relative_to(SAMPLES)).read_bytes() == p.read_bytes(), p.name


@pytest.mark.parametrize("name, line, problem", [
    ("not_utf8.jsonl", 3, "invalid UTF-8 (byte 0xf6 at byte 28 of the line)"),
    ("bad_json.jsonl", 2, "not valid JSON: Expecting value at column 48"),
    ("missing_label.jsonl", 2, "missing key 'label' (a classification row needs text, label)"),
    ("unknown_label.jsonl", 3, "label 'refunds' is not one of billing, technical, shipping, account"),
    ("empty.jsonl", None, "file is empty"),
])
def test_bad_samples_fail_with_one_line_error(name: str, line: int | None, problem: str) -> None:
    err = _error(SAMPLES / "bad" / name)
    assert (err.file, err.line, err.problem) == (name, line, problem)
    where = name if line is None else f"{name}:{line}"
    assert str(err) == f"{where}: {problem}"


# --- each rule, one file per case -------------------------------------------------------------

@pytest.mark.parametrize("content, line, fragment", [
    (f"{ROW}\n\n{ROW}\n", 2, "blank line"),
    (f"{ROW}\n\n", 2, "blank line"),
    (f"{ROW}\n   \n", 2, "blank line"),
    (f"{ROW}\n[1, 2]\n", 2, "must be a JSON object, got list"),
    ('"just a string"\n', 1, "must be a JSON object, got str"),
    (f"{ROW}\n{ROW}\n42\n", 3, "must be a JSON object, got int"),
    ("null\n", 1, "must be a JSON object, got NoneType"),
    ('{"text": "hi there friend", "label": "billing", "lang": "en"}\n', 1, "unexpected key 'lang'"),
    ('{"text": "   ", "label": "billing"}\n', 1, "'text' is empty"),
    ('{"text": 5, "label": "billing"}\n', 1, "'text' must be a string, got int"),
    ('{"text": "hello there", "label": ["billing"]}\n', 1, "'label' must be a string, got list"),
    ('{"text": "hello there", "label": "Billing"}\n', 1, "label 'Billing' is not one of"),
    ('{"label": "billing"}\n', 1, "missing key 'text'"),
    ('{"text": "a", "text": "b", "label": "billing"}\n', 1, "duplicate key 'text'"),
    ('{"text": "hello", "label": "billing", "x": NaN}\n', 1, "NaN is not allowed"),
    ('\ufeff' + ROW + "\n", 1, "byte-order mark"),
    (f"{ROW}\n{{\"text\": \"unterminated\n", 2, "not valid JSON: Unterminated string"),
])
def test_rule_violations(tmp_path: Path, content: str, line: int, fragment: str) -> None:
    err = _error(_write(tmp_path, content))
    assert err.file == "c.jsonl" and err.line == line
    assert fragment in err.problem


def test_problem_quoting_user_input_stays_one_line_and_short(tmp_path: Path) -> None:
    label = "x\ny" * 500
    err = _error(_write(tmp_path, json.dumps({"text": "hello", "label": label}) + "\n"))
    assert err.line == 1 and len(str(err)) < 200


def test_no_trailing_newline_and_crlf_are_fine(tmp_path: Path) -> None:
    assert len(validate_contribution(_write(tmp_path, f"{ROW}\n{ROW}"), RULES).rows) == 2
    assert len(validate_contribution(_write(tmp_path, f"{ROW}\r\n{ROW}\r\n"), RULES).rows) == 2


def test_too_many_rows_names_the_first_extra_line(tmp_path: Path) -> None:
    rules = DatanetRules("classification", labels=LABELS, max_rows=3)
    assert len(validate_contribution(_write(tmp_path, f"{ROW}\n" * 3), rules).rows) == 3
    err = _error(_write(tmp_path, f"{ROW}\n" * 5), rules)
    assert (err.line, err.problem) == (4, "too many rows: the limit is 3 rows per file")


def test_line_length_limit(tmp_path: Path) -> None:
    rules = DatanetRules("classification", labels=LABELS, max_line_bytes=len(ROW))
    assert len(validate_contribution(_write(tmp_path, f"{ROW}\n{ROW}"), rules).rows) == 2
    long_row = json.dumps({"text": "x" * 100, "label": "billing"})
    err = _error(_write(tmp_path, f"{ROW}\n{long_row}\n{ROW}\n"), rules)
    assert (err.line, err.problem) == (2, f"line is longer than the limit of {len(ROW)} bytes")
    err = _error(_write(tmp_path, f"{ROW}\n{ROW}\n{long_row}"), rules)  # last line, no newline
    assert err.line == 3 and "longer than the limit" in err.problem


@pytest.mark.parametrize("task, good, bad, fragment", [
    ("text", '{"text": "some words"}', '{"text": "w", "label": "billing"}', "unexpected key 'label'"),
    ("text", '{"text": "some words"}', '{"body": "w"}', "missing key 'text'"),
    ("prompt_completion", '{"prompt": "2+2?", "completion": "4"}', '{"prompt": "2+2?"}', "missing key 'completion'"),
    ("prompt_completion", '{"prompt": "2+2?", "completion": "4"}', '{"prompt": "2+2?", "completion": 4}',
     "'completion' must be a string, got int"),
])
def test_other_tasks(tmp_path: Path, task: str, good: str, bad: str, fragment: str) -> None:
    rules = DatanetRules(task)
    assert validate_contribution(_write(tmp_path, good + "\n"), rules).rows == (json.loads(good),)
    err = _error(_write(tmp_path, f"{good}\n{bad}\n"), rules)
    assert err.line == 2 and fragment in err.problem


def test_missing_file_and_directory_and_display_name(tmp_path: Path) -> None:
    err = _error(tmp_path / "nope.jsonl")
    assert str(err) == "nope.jsonl: file not found"
    assert "is a directory" in _error(tmp_path).problem
    with pytest.raises(ContributionError, match=r"^upload\.jsonl:2: blank line"):
        validate_contribution(_write(tmp_path, f"{ROW}\n\n"), RULES, name="upload.jsonl")


def test_error_pickles() -> None:
    err = pickle.loads(pickle.dumps(ContributionError("f.jsonl", 7, "bad")))
    assert (err.file, err.line, err.problem, str(err)) == ("f.jsonl", 7, "bad", "f.jsonl:7: bad")


@pytest.mark.parametrize("kwargs", [
    dict(task="regression"), dict(task="classification"), dict(task="classification", labels=("a", "a")),
    dict(task="text", labels=("a",)), dict(task="text", max_rows=0), dict(task="text", max_bytes=-1),
])
def test_bad_rules_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        DatanetRules(**kwargs)


# --- size limits: refused early, never read past max_bytes + 1 --------------------------------

class _CountingReader:
    """Wraps a binary file and counts the bytes handed out, to prove how much was read."""

    def __init__(self, f: Any, log: list[int]) -> None:
        self._f, self._log = f, log

    def readline(self, size: int = -1) -> bytes:
        data = self._f.readline(size)
        self._log.append(len(data))
        return data

    def read(self, size: int = -1) -> bytes:
        data = self._f.read(size)
        self._log.append(len(data))
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)

    def __enter__(self) -> "_CountingReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()


@pytest.fixture
def bytes_read(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    log: list[int] = []
    real_open = Path.open
    monkeypatch.setattr(Path, "open", lambda self, *a, **k: _CountingReader(real_open(self, *a, **k), log))
    return log


def test_oversized_file_refused_without_reading(tmp_path: Path, bytes_read: list[int]) -> None:
    line = (ROW + "\n").encode()
    path = _write(tmp_path, line * (2 * 1024 * 1024 // len(line) + 1))
    assert path.stat().st_size > 2 * 1024 * 1024
    err = _error(path)
    assert err.line is None
    assert err.problem == f"file is {path.stat().st_size} bytes, over the limit of 1048576 bytes; refused without reading"
    assert sum(bytes_read) == 0


def test_file_at_the_limit_passes(tmp_path: Path) -> None:
    data = (ROW + "\n").encode() * 4
    rules = DatanetRules("classification", labels=LABELS, max_bytes=len(data))
    assert validate_contribution(_write(tmp_path, data), rules).size == len(data)
    err = _error(_write(tmp_path, data + b"\n"), DatanetRules("classification", labels=LABELS, max_bytes=len(data)))
    assert "over the limit" in err.problem


@pytest.mark.skipif(not hasattr(os, "mkfifo") or sys.platform == "win32", reason="needs POSIX named pipes")
def test_stream_without_known_size_stops_at_the_limit(tmp_path: Path, bytes_read: list[int]) -> None:
    # A pipe reports size 0, so only the streaming guard can stop it; the writer offers 2 MB.
    fifo = tmp_path / "upload.jsonl"
    os.mkfifo(fifo)
    line = (ROW + "\n").encode()
    total = 2 * 1024 * 1024
    written: list[int] = []

    def feed() -> None:
        sent = 0
        try:
            with open(fifo, "wb") as w:
                while sent < total:
                    sent += w.write(line * 1000)
        except BrokenPipeError:
            pass
        written.append(sent)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    rules = DatanetRules("classification", labels=LABELS, max_rows=1_000_000)
    err = _error(fifo, rules)
    writer.join(timeout=30)
    assert err.line is None
    assert err.problem == "file is larger than the limit of 1048576 bytes (stopped reading at byte 1048577)"
    assert sum(bytes_read) == 1_048_577
    assert written and written[0] < total  # the reader hung up long before the writer finished


# --- rows_hash --------------------------------------------------------------------------------

def test_rows_hash_known_vector_and_canonical_form() -> None:
    rows = [{"text": "Köln parcel", "label": "shipping"}, {"label": "billing", "text": "a"}]
    encoded = '{"label":"shipping","text":"Köln parcel"}\n{"label":"billing","text":"a"}\n'.encode("utf-8")
    assert rows_hash(rows) == "0x" + hashlib.sha256(encoded).hexdigest()
    assert rows_hash([{"label": "shipping", "text": "Köln parcel"}, rows[1]]) == rows_hash(rows)  # key order
    assert rows_hash([]) == "0x" + hashlib.sha256(b"").hexdigest()


def test_rows_hash_is_order_sensitive_and_stable_across_formatting(tmp_path: Path) -> None:
    rows = validate_contribution(SAMPLES / "alice_1.jsonl", RULES).rows
    assert rows_hash(rows) == rows_hash(list(rows))
    assert rows_hash(rows) != rows_hash(rows[::-1])
    assert rows_hash(rows) != rows_hash(rows[:-1])
    # The same rows written with other whitespace and escaping hash the same: the hash is of rows.
    other = "".join(json.dumps(r, ensure_ascii=True, indent=None, separators=(" , ", " : ")) + "\n" for r in rows)
    assert rows_hash(validate_contribution(_write(tmp_path, other), RULES).rows) == rows_hash(rows)
    h = rows_hash(rows)
    assert h.startswith("0x") and len(h) == 66 and int(h, 16) >= 0


# --- the causal-LM formats: {"text"} and {"prompt", "completion"} ------------------------------

TEXT_RULES = DatanetRules(task="text")
QA_RULES = DatanetRules(task="prompt_completion")


def test_text_and_prompt_completion_rows_pass(tmp_path: Path) -> None:
    text = validate_contribution(_write(tmp_path, '{"text": "a note"}\n{"text": "another"}\n'), TEXT_RULES)
    assert text.rows == ({"text": "a note"}, {"text": "another"})
    qa = validate_contribution(_write(tmp_path, '{"prompt": "2+2?", "completion": " 4"}\n', "qa.jsonl"), QA_RULES)
    assert qa.rows == ({"prompt": "2+2?", "completion": " 4"},)


@pytest.mark.parametrize("rules, content, line, fragment", [
    (TEXT_RULES, '{"text": "ok"}\n{"text": "x", "label": "billing"}\n', 2, "unexpected key 'label' (a text row has only text)"),
    (TEXT_RULES, '{"text": ""}\n', 1, "'text' is empty"),
    (TEXT_RULES, '{"prompt": "a", "completion": "b"}\n', 1, "missing key 'text'"),
    (QA_RULES, '{"prompt": " ", "completion": "b"}\n', 1, "'prompt' is empty"),
    (QA_RULES, '{"text": "a"}\n', 1, "missing key 'prompt', 'completion'"),
    (QA_RULES, b'{"prompt": "a\xff", "completion": "b"}\n', 1, "invalid UTF-8"),
])
def test_causal_lm_rule_violations_name_file_line_and_problem(tmp_path: Path, rules: DatanetRules,
                                                              content: str | bytes, line: int, fragment: str) -> None:
    err = _error(_write(tmp_path, content, "lm.jsonl"), rules)
    assert err.file == "lm.jsonl" and err.line == line
    assert fragment in err.problem


def test_row_and_byte_limits_apply_to_causal_lm_datanets(tmp_path: Path) -> None:
    rows = "".join('{"text": "row"}\n' for _ in range(4))
    err = _error(_write(tmp_path, rows), DatanetRules(task="text", max_rows=3))
    assert err.line == 4 and "too many rows" in err.problem
    err = _error(_write(tmp_path, rows), DatanetRules(task="text", max_bytes=20))
    assert err.line is None and "over the limit of 20 bytes" in err.problem


def test_labels_are_refused_outside_classification() -> None:
    with pytest.raises(ValueError, match="labels only apply to classification"):
        DatanetRules(task="text", labels=("a",))

