"""Opening the index database (SQLite file by default, PostgreSQL by URL) and migrating it.

The schema is managed by Alembic (migrations/); `open_index` brings any database to the newest
revision before the indexer or the API touches it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def database_url(value: str) -> str:
    """A SQLAlchemy URL; a plain path means a SQLite file."""
    if "://" in value:
        if value.startswith("postgresql://"):
            return "postgresql+psycopg://" + value[len("postgresql://"):]  # psycopg 3, not psycopg2
        return value
    return f"sqlite:///{Path(value).expanduser().resolve()}"


def make_engine(url: str, **kwargs: Any) -> Engine:
    url = database_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            # WAL: the API reads while the indexer writes. synchronous=NORMAL keeps every commit
            # across a process crash (kill -9); only an OS crash may lose the last commits, which
            # the indexer then simply re-indexes from its checkpoint.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            # 64 MB of page cache (the default is 2 MB): the events table's secondary indexes take
            # random keys (tx hashes), and with a small cache every batch re-reads their pages.
            cursor.execute("PRAGMA cache_size=-65536")
            # Checkpoint the WAL into the database every 256 MB instead of every 4 MB: a backfill
            # rewrites the same index pages batch after batch, and each checkpoint copied them
            # again (a third of the write time on the bench's chain). The indexer checkpoints
            # itself when it reaches the head (Indexer._checkpoint_wal), and the WAL file is cut
            # back to 64 MB after each checkpoint. Atomicity and kill -9 safety are WAL's either way.
            cursor.execute("PRAGMA wal_autocheckpoint=65536")
            cursor.execute("PRAGMA journal_size_limit=67108864")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


def alembic_config(engine: Engine | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if engine is not None:
        config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return config


def migrate(engine: Engine) -> None:
    """Upgrade the database to the newest schema revision (a no-op when it is there)."""
    config = alembic_config(engine)
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "head")


def open_index(url: str, **kwargs: Any) -> Engine:
    engine = make_engine(url, **kwargs)
    migrate(engine)
    return engine
