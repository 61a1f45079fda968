"""The backend's HTTP API: one FastAPI app that mounts serving, the indexer's queries, claims and
the authenticated write endpoints (each router lives with the package whose job it is)."""
