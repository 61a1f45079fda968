"""Fixtures and helpers shared by the indexer tests (imported by tests/test_indexer*.py).

Every indexer test runs against a real anvil (the session's, reverted after each test) and a
fresh database: a SQLite file, or a new PostgreSQL database on 127.0.0.1:5432. When PostgreSQL
does not answer, the PostgreSQL tests FAIL with the reason: they are never skipped.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator

import pytest
from sqlalchemy import Engine

from provenant.chain.deploy import Contracts
from provenant.chain.devnet import Devnet
from provenant_indexer import Indexer, IndexerConfig, diff_tables, dump_tables, open_index
from provenant_indexer.rpc import JsonRpc
from provenant_indexer.workload import World

PG_ADMIN_URL = os.environ.get("PROVENANT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
DIALECTS = ["sqlite", "postgresql"]


def _pg_admin() -> Any:
    import psycopg

    try:
        return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except Exception as exc:  # noqa: BLE001 - any failure to connect is the same verdict
        pytest.fail(f"PostgreSQL does not answer at {PG_ADMIN_URL} ({type(exc).__name__}: {exc}); the indexer must be "
                    f"tested on PostgreSQL too: start one (see shared/TOOLCHAIN.md, Databases) or point "
                    f"PROVENANT_TEST_PG at one", pytrace=False)


class Databases:
    """Makes fresh databases of one dialect for a test, and drops them after it."""

    def __init__(self, dialect: str, tmp_path: Path) -> None:
        self.dialect, self.tmp_path = dialect, tmp_path
        self._engines: list[Engine] = []
        self._pg: list[str] = []

    def url(self) -> str:
        if self.dialect == "sqlite":
            return str(self.tmp_path / f"index-{uuid.uuid4().hex[:8]}.sqlite")
        name = f"provenant_idx_{uuid.uuid4().hex[:12]}"
        with _pg_admin() as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        self._pg.append(name)
        base = PG_ADMIN_URL.rsplit("/", 1)[0]
        return f"{base}/{name}"

    def engine(self, url: str | None = None) -> Engine:
        engine = open_index(url or self.url())
        self._engines.append(engine)
        return engine

    def close(self) -> None:
        for engine in self._engines:
            engine.dispose()
        if self._pg:
            with _pg_admin() as admin:
                for name in self._pg:
                    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=DIALECTS)
def dbs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Databases]:
    made = Databases(request.param, tmp_path)
    yield made
    made.close()


@pytest.fixture()
def sqlite_dbs(tmp_path: Path) -> Iterator[Databases]:
    made = Databases("sqlite", tmp_path)
    yield made
    made.close()


@pytest.fixture()
def pg_dbs(tmp_path: Path) -> Iterator[Databases]:
    made = Databases("postgresql", tmp_path)
    yield made
    made.close()


@pytest.fixture()
def rpc(anvil: Devnet) -> Iterator[JsonRpc]:
    client = JsonRpc(anvil.rpc_url)
    yield client
    client.close()


@pytest.fixture()
def world(deployed: Contracts, rpc: JsonRpc) -> World:
    w = World(rpc, deployed, seed=7)
    w.setup()
    return w


def config_for(contracts: Contracts, rpc_url: str, **overrides: Any) -> IndexerConfig:
    """From the whole manifest, as the CLI and the backend read it: the agent contracts included."""
    return IndexerConfig.from_manifest(rpc_url, asdict(contracts.manifest), **overrides)


def fresh_dump(dbs: Databases, contracts: Contracts, rpc_url: str, **overrides: Any) -> dict[str, list[Any]]:
    """The tables of a fresh index of the chain as it is now."""
    engine = dbs.engine()
    Indexer(engine, config_for(contracts, rpc_url, **overrides)).run_until_head()
    return dump_tables(engine)


def assert_equals_fresh(engine: Engine, dbs: Databases, contracts: Contracts, rpc_url: str, **overrides: Any) -> None:
    mine, fresh = dump_tables(engine), fresh_dump(dbs, contracts, rpc_url, **overrides)
    assert mine == fresh, "index differs from a fresh index of the chain:\n" + diff_tables(mine, fresh)


def act(world: World, n: int) -> None:
    for _ in range(n):
        world.random_action()


def mine(rpc: JsonRpc, blocks: int = 1) -> None:
    for _ in range(blocks):
        rpc.call("evm_mine")
