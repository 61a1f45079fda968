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

from provenant_indexer.schema import Uint256

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
    with driver.cursor() as cursor:  # type: ignore[union-attr]
        with cursor.copy(f'COPY "{table.name}" ({", ".join(names)}) FROM STDIN') as copy:
            for values in tuples:
                copy.write_row(values)


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
        with driver.cursor() as cursor:  # type: ignore[union-attr]
            with cursor.copy(f'COPY "{table.name}" ({", ".join(names)}) FROM STDIN') as copy:
                for values in tuples:
                    copy.write_row(values)
        return
    # Another dialect: through SQLAlchemy, with JSON columns parsed back (it encodes them itself).
    is_json = [isinstance(c.type, JSON) for c in table.columns]
    conn.execute(table.insert(), [{n: (json.loads(v) if j and v is not None else v)
                                   for n, v, j in zip(names, t, is_json)} for t in tuples])
