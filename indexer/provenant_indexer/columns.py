"""Column types and table helpers shared by the schema modules.

Token amounts are uint256: NUMERIC(78, 0) on PostgreSQL, decimal text on SQLite (its INTEGER is
64-bit and its NUMERIC silently becomes a float); both read back as Python ints, and sums are
done in Python so they are exact on both.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Callable

from sqlalchemy import BigInteger, Column, Dialect, Integer, MetaData, Numeric, PrimaryKeyConstraint, String, Table
from sqlalchemy.types import TypeDecorator, TypeEngine

class Uint256(TypeDecorator[int]):
    """An exact unsigned 256-bit integer on every dialect."""

    impl = Numeric(78, 0)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(78))
        return dialect.type_descriptor(Numeric(78, 0))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        return str(int(value)) if dialect.name == "sqlite" else int(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:
        if value is None:
            return None
        return int(value) if not isinstance(value, Decimal) else int(value.to_integral_value())


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _located() -> list[Column[Any]]:
    """Where a fact came from: its block and its position in the block."""
    return [
        Column("block_number", BigInteger, nullable=False),
        Column("log_index", Integer, nullable=False),
    ]


def _fact(name: str, *columns: Any) -> Table:
    """An append-only table keyed by the log that produced the row."""
    return Table(
        name,
        metadata,
        *_located(),
        *columns,
        PrimaryKeyConstraint("block_number", "log_index"),
    )



def row_maker(table: Table) -> Callable[..., tuple[Any, ...]]:
    """A function taking the table's columns as keywords (nullable ones default to None) and
    returning the row as the bulk writers take it: a tuple in column order, uint256 values as
    decimal text (how SQLite stores them; PostgreSQL's COPY reads NUMERIC from that text too).
    Tables that start with (block_number, log_index) take the log's location first, positionally
    (anything indexable: handlers.Loc). Handlers build their rows with it: no dict per row, and a
    misspelt or missing column is a TypeError, as it was a KeyError before."""
    columns = list(table.columns)
    located = [c.name for c in columns[:2]] == ["block_number", "log_index"]
    params, values = (["loc", "/"] if located else []), (["loc[0]", "loc[1]"] if located else [])
    keywords = []
    for column in columns[2:] if located else columns:
        name = column.name
        keywords.append(f"{name}=None" if column.nullable else name)
        if isinstance(column.type, Uint256):
            values.append(f"(None if {name} is None else str({name}))" if column.nullable else f"str({name})")
        else:
            values.append(name)
    params += ["*", *keywords]
    source = f"def make({', '.join(params)}):\n    return ({', '.join(values)},)\n"
    scope: dict[str, Any] = {}
    exec(compile(source, f"<row {table.name}>", "exec"), scope)  # noqa: S102 - our own schema's text
    return scope["make"]  # type: ignore[no-any-return]


class RowMakers(dict):  # type: ignore[type-arg]
    """Table -> its row_maker, made on first use."""

    def __missing__(self, table: Table) -> Callable[..., tuple[Any, ...]]:
        maker = self[table] = row_maker(table)
        return maker


ROWS = RowMakers()
