"""The bulk write path (issue 13): rows built as tuples by columns.row_maker, written by
bulk.insert_tuples (sqlite3 executemany on SQLite, COPY text on PostgreSQL). Real databases:
a SQLite file and a fresh PostgreSQL database; what is written is read back through SQLAlchemy
and must equal what was meant, escaping-prone text and NULLs included."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from provenant_indexer import schema as s
from provenant_indexer.bulk import copy_text, insert_tuples
from provenant_indexer.columns import ROWS, row_maker
from provenant_indexer.handlers import HANDLERS, Loc

from test_indexer_support import Databases, dbs, pg_dbs  # noqa: F401 - fixtures

NASTY = ["tab\there", "new\nline", "back\\slash", "cr\rhere", "\\N", "N", "", "quote\"'", "unicode é ✓", "None"]


def _status_rows(count: int) -> list[tuple[object, ...]]:
    """contribution_status rows: nullable actor/reason/slashed, every other one NULL."""
    make = ROWS[s.contribution_status]
    return [make(Loc(i // 7, i % 7, "0x"), contribution_id=i, datanet_id=1, contributor=f"0x{i:040x}",
                 status="pending" if i % 2 else "rejected", actor=None if i % 2 else f"0x{i:040x}",
                 reason=None if i % 2 else i, slashed=None if i % 2 else bool(i % 4)) for i in range(count)]


def test_row_maker_builds_tuples_in_column_order_with_uint256_as_text() -> None:
    row = ROWS[s.charges](Loc(5, 3, "0xt"), model_id=1, consumer="0xc", seq=9, amount=2**200,
                          cumulative_amount=7, tx_hash="0xt")
    assert [c.name for c in s.charges.columns][:2] == ["block_number", "log_index"]
    assert dict(zip([c.name for c in s.charges.columns], row)) == {
        "block_number": 5, "log_index": 3, "model_id": 1, "consumer": "0xc", "seq": 9,
        "amount": str(2**200), "cumulative_amount": "7", "tx_hash": "0xt"}
    with pytest.raises(TypeError):  # a missing non-null column is an error, not a NULL
        ROWS[s.charges](Loc(5, 3, "0xt"), model_id=1, consumer="0xc", seq=9, amount=1, tx_hash="0xt")
    with pytest.raises(TypeError):  # so is a misspelt one
        row_maker(s.fee_releases)(Loc(1, 1, "0x"), model_id=1, from_seq=1, to_seq=2, amount=1, amont=2)
    assert ROWS[s.model_datanets](model_id=1, datanet_id=2, position=0, block_number=9) == (1, 2, 0, 9)


def test_every_handled_table_has_a_maker() -> None:
    """Every table a handler appends to builds (the makers are generated from the schema)."""
    for table in s.CHAIN_TABLES:
        assert callable(ROWS[table])
    assert len(HANDLERS) > 20


def test_copy_text_refuses_values_that_need_escaping() -> None:
    clean = _status_rows(50)
    text = copy_text(s.contribution_status, clean)
    assert text is not None and text.count("\n") == 50 and text.count("\\N") == 25 * 3
    for nasty in NASTY:
        rows = [*clean[:3], ROWS[s.contribution_status](Loc(99, 0, "0x"), contribution_id=1, datanet_id=1,
                                                         contributor=nasty, status="pending")]
        text = copy_text(s.contribution_status, rows)
        if any(ch in nasty for ch in "\t\n\r\\"):
            assert text is None, nasty
        else:
            assert text is not None and f"\t{nasty}\tpending\t" in text


def test_rows_round_trip_on_both_databases(dbs: Databases, tmp_path: Path) -> None:  # noqa: F811
    """Clean batches (COPY text / executemany) and batches with every nasty string (the escaping
    fallback on PostgreSQL) read back exactly, NULLs, booleans and uint256 included."""
    engine = dbs.engine()
    status = _status_rows(300)
    nasty = [ROWS[s.agent_uris](Loc(1000 + i, 0, "0x"), agent_id=i, uri=v, cid=None if i % 2 else v,
                                updated_by="0xabc", tx_hash="0xh") for i, v in enumerate(NASTY)]
    money = [ROWS[s.charges](Loc(2000 + i, 1, "0xt"), model_id=i, consumer="0xc", seq=i, amount=2**255 + i,
                             cumulative_amount=i, tx_hash="0xt") for i in range(40)]
    events = [(3000 + i, 0, "0xb", "0xt", 0, "0xa", "C", "E", '{"s":"' + v.replace("\\", "\\\\")
               .replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r") + '"}')
              for i, v in enumerate(NASTY)]
    with engine.begin() as conn:
        insert_tuples(conn, s.contribution_status, status)
        insert_tuples(conn, s.agent_uris, nasty)
        insert_tuples(conn, s.charges, money)
        insert_tuples(conn, s.events, events)
    with engine.connect() as conn:
        table = s.contribution_status
        got = [tuple(r) for r in conn.execute(select(table).order_by(table.c.contribution_id))]
        assert got == status  # NULLs, booleans and the non-null strings as written
        uris = {r.agent_id: (r.uri, r.cid) for r in conn.execute(select(s.agent_uris))}
        assert uris == {i: (v, None if i % 2 else v) for i, v in enumerate(NASTY)}
        amounts = {r.model_id: r.amount for r in conn.execute(select(s.charges))}
        assert amounts == {i: 2**255 + i for i in range(40)}
        args = [r.args["s"] for r in conn.execute(select(s.events).order_by(s.events.c.block_number))]
        assert args == NASTY


def test_copy_mixes_fast_and_escaped_chunks(pg_dbs: Databases) -> None:  # noqa: F811
    """A batch longer than one COPY chunk, with one value needing escaping in its middle chunk:
    that chunk goes through psycopg's write_row, the others as plain text, in one COPY."""
    engine = pg_dbs.engine()
    rows = _status_rows(4_500)
    rows[2_500] = (*rows[2_500][:4], "a\tb\\c\nd", *rows[2_500][5:])
    with engine.begin() as conn:
        insert_tuples(conn, s.contribution_status, rows)
    with engine.connect() as conn:
        table = s.contribution_status
        assert [tuple(r) for r in conn.execute(select(table).order_by(table.c.contribution_id))] == rows
