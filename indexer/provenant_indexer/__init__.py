"""The Provenant indexer: every event of the project's contracts, mirrored into SQL, reorg- and
crash-proof, with a query API. SQLite by default, PostgreSQL by URL, one code path."""

from provenant_indexer.config import IndexerConfig
from provenant_indexer.db import make_engine, migrate, open_index
from provenant_indexer.dump import diff_tables, dump_tables
from provenant_indexer.indexer import Indexer, IndexerStatus, WrongDatabase
from provenant_indexer.reorg import DeepReorgError

__all__ = ["DeepReorgError", "Indexer", "IndexerConfig", "IndexerStatus", "WrongDatabase", "diff_tables",
           "dump_tables", "make_engine", "migrate", "open_index"]
