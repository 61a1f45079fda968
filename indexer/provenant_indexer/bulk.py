"""Bulk inserts: the one place where the write path looks at the dialect.

SQLAlchemy's executemany costs ~20 µs of Python per row (parameter processing, type binding),
and on PostgreSQL psycopg sends one statement per row. Rows here are plain dicts with every
column, written in the caller's transaction, so they can go straight to the driver: COPY on
PostgreSQL, the sqlite3 module's executemany on SQLite. The values are bound exactly as the
column types would bind them (Uint256, JSON), so what reads them back cannot tell the difference;
other dialects take SQLAlchemy's generic executemany.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Callable

import orjson
from sqlalchemy import JSON, Connection, Table

from provenant_indexer.columns import Uint256

Converter = Callable[[Any], Any]
_SMALL = 20  # below this many rows the generic path is as fast


def _identity(value: Any) -> Any:
    return value


def json_text(value: Any) -> str | None:
    """JSON text as the JSON column stores it; orjson is ~10x faster than json.dumps, but
    refuses integers above 64 bits (uint256 values), which take the standard library's path."""
    if value is None:
        return None
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value)


def _converters(table: Table, dialect: str) -> list[Converter]:
    out: list[Converter] = []
    for column in table.columns:
        if isinstance(column.type, Uint256):
            out.append((lambda v: None if v is None else str(v)) if dialect == "sqlite" else _identity)
        elif isinstance(column.type, JSON):
            out.append(json_text)
        else:
            out.append(_identity)
    return out


# -- COPY text on PostgreSQL ---------------------------------------------------------------------
# psycopg's write_row dumps value by value, through a Python call per row. Rows are instead
# formatted in one `str.join` over `fmt % row` (the per-value work in C; bools print as
# True/False, which PostgreSQL's boolean input takes) and sent as COPY text, a chunk at a time.
# That text is right only when no value holds a character COPY text would need escaped (tab,
# newline, carriage return, backslash): checked on the whole chunk by counting (every tab and
# newline must be a separator we wrote, every backslash one of our NULL markers); when the check
# fails the chunk goes through write_row, which escapes everything. Same rows, same transaction.
_NULL = "\\N"


def _copy_formatter(table: Table) -> Callable[[tuple[Any, ...]], str]:
    fmt = "\t".join(["%s"] * len(table.columns)) + "\n"
    nullable = [i for i, c in enumerate(table.columns) if c.nullable]
    if not nullable:
        return fmt.__mod__
    values = ", ".join(f"(N if r[{i}] is None else r[{i}])" if i in nullable else f"r[{i}]"
                       for i in range(len(table.columns)))
    source = f"def line(r):\n    return F % ({values},)\n"
    scope: dict[str, Any] = {"F": fmt, "N": _NULL}
    exec(compile(source, f"<copy line {table.name}>", "exec"), scope)  # noqa: S102 - our own schema's text
    return scope["line"]  # type: ignore[no-any-return]


_formatters: dict[str, tuple[Callable[[tuple[Any, ...]], str], list[int]]] = {}


def copy_text(table: Table, tuples: list[tuple[Any, ...]]) -> str | None:
    """The COPY text of `tuples` (column order, values as bound: ints, decimal or JSON text,
    bools), or None when some value would need escaping."""
    if table.name not in _formatters:
        _formatters[table.name] = (_copy_formatter(table), [i for i, c in enumerate(table.columns) if c.nullable])
    line, nullable = _formatters[table.name]
    text = "".join(map(line, tuples))
    rows, columns = len(tuples), len(table.columns)
    markers = sum(list(map(itemgetter(i), tuples)).count(None) for i in nullable)
    if (text.count("\n") != rows or text.count("\t") != rows * (columns - 1)
            or text.count("\\") != markers or "\r" in text):
        return None
    return text


_COPY_CHUNK = 2_000  # rows formatted per write: the server parses one chunk while we format the next


def copy_rows(driver: Any, table: Table, tuples: list[tuple[Any, ...]]) -> None:
    """COPY `tuples` into `table` on a psycopg 3 connection, in its current transaction."""
    names = ", ".join(c.name for c in table.columns)
    with driver.cursor() as cursor:
        with cursor.copy(f'COPY "{table.name}" ({names}) FROM STDIN') as copy:
            for start in range(0, len(tuples), _COPY_CHUNK):
                chunk = tuples[start : start + _COPY_CHUNK]
                text = copy_text(table, chunk)
                if text is not None:
                    copy.write(text)
                    continue
                for values in chunk:  # some value needs escaping: psycopg escapes each one
                    copy.write_row(values)


@dataclass(frozen=True)
class _Plan:
    names: list[str]
    convert: list[tuple[str, Converter]]  # only the columns whose values need converting
    getter: Callable[[dict[str, Any]], tuple[Any, ...]]


_plans: dict[tuple[str, str], _Plan] = {}


def _plan(table: Table, dialect: str) -> _Plan:
    key = (table.name, dialect)
    if key not in _plans:
        names = [c.name for c in table.columns]
        convert = [(n, c) for n, c in zip(names, _converters(table, dialect)) if c is not _identity]
        getter = itemgetter(*names)
        _plans[key] = _Plan(names, convert, getter if len(names) > 1 else (lambda row: (getter(row),)))
    return _plans[key]


def _tuples(plan: _Plan, rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Rows as tuples in column order (itemgetter: the per-row work stays in C). The values
    needing conversion are converted in the caller's dicts, in place: rows are written once
    and dropped (copying 200,000 dicts first cost more than the conversion itself)."""
    for name, convert in plan.convert:
        for row in rows:
            row[name] = convert(row.get(name))
    try:
        return [plan.getter(row) for row in rows]
    except KeyError:  # a row without some optional column: fill it with NULL
        return [tuple(row.get(n) for n in plan.names) for row in rows]


def insert_rows(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    dialect = conn.dialect.name
    if len(rows) < _SMALL or dialect not in ("sqlite", "postgresql"):
        conn.execute(table.insert(), rows)
        return
    plan = _plan(table, dialect)
    names, tuples = plan.names, _tuples(plan, rows)
    driver = conn.connection.driver_connection
    if dialect == "sqlite":
        marks = ", ".join("?" * len(names))
        driver.executemany(f'INSERT INTO "{table.name}" ({", ".join(names)}) VALUES ({marks})', tuples)  # type: ignore[union-attr]
        return
    copy_rows(driver, table, tuples)


def insert_tuples(conn: Connection, table: Table, tuples: list[tuple[Any, ...]]) -> None:
    """Rows already in the driver's form: tuples in column order, values bound as the column
    types bind them (JSON as text, Uint256 as the dialect wants it). Skips the dict-to-tuple step,
    for the one table every log writes to."""
    if not tuples:
        return
    dialect = conn.dialect.name
    names = [c.name for c in table.columns]
    driver = conn.connection.driver_connection
    if dialect == "sqlite":
        marks = ", ".join("?" * len(names))
        driver.executemany(f'INSERT INTO "{table.name}" ({", ".join(names)}) VALUES ({marks})', tuples)  # type: ignore[union-attr]
        return
    if dialect == "postgresql":
        copy_rows(driver, table, tuples)
        return
    # Another dialect: through SQLAlchemy, with JSON columns parsed back (it encodes them itself).
    is_json = [isinstance(c.type, JSON) for c in table.columns]
    conn.execute(table.insert(), [{n: (json.loads(v) if j and v is not None else v)
                                   for n, v, j in zip(names, t, is_json)} for t in tuples])
