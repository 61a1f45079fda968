"""Every table's rows, normalised and sorted: what "the index equals a fresh index" compares."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, select

from provenant_indexer import schema as s


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)  # JSON columns compare by content
    return value


def dump_tables(engine: Engine, *, include_history: bool = False) -> dict[str, list[tuple[Any, ...]]]:
    """{table name: sorted rows} for every table; the reorg log (`reorgs`) only when asked, since
    an index that lived through reorgs remembers them and a fresh one does not."""
    skip = set() if include_history else {t.name for t in s.HISTORY_TABLES}
    out: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as conn:
        for table in s.metadata.sorted_tables:
            if table.name in skip:
                continue
            rows = [tuple(_plain(v) for v in row) for row in conn.execute(select(table))]
            out[table.name] = sorted(rows, key=repr)
    return out


def diff_tables(a: dict[str, list[tuple[Any, ...]]], b: dict[str, list[tuple[Any, ...]]], limit: int = 5) -> str:
    """A readable account of how two dumps differ ('' when equal), for assertion messages."""
    lines = []
    for name in sorted(set(a) | set(b)):
        left, right = a.get(name, []), b.get(name, [])
        if left == right:
            continue
        only_a = [r for r in left if r not in set(right)]
        only_b = [r for r in right if r not in set(left)]
        lines.append(f"{name}: {len(left)} vs {len(right)} rows; only left {only_a[:limit]}; only right {only_b[:limit]}")
    return "\n".join(lines)
