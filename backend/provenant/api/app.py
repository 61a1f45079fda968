"""The backend: one FastAPI process for the web app and API clients.

It mounts, each from the package whose job it is:
- `/v1/config`: chain id, contract addresses and the SIWE domain the web app needs;
- `/v1/auth/*`: Sign-In with Ethereum sessions (api/auth.py);
- `/v1/datanets/{id}/uploads`: contribution uploads, signed-in only (api/uploads.py);
- `/v1/datanets/{id}`, `/v1/datanets/metadata`, `/v1/content/{cid}`: records and public content;
- `/v1/jobs`: Model Factory training jobs with live progress (api/jobs.py, factory/jobs.py);
- `/v1/index/*`: the indexer's query API over an index it keeps following in a background thread;
- `/v1/settlement/*`: claimable amounts with proofs, claim history, epoch results (settlement/api.py);
- with a serving key, the serving API's `/v1` routes (models, completions, chat, classifications,
  receipts; serving/api.py); any extra routers the caller passes; the built web app at `/`.

Writes to the chain are never made here: the user's wallet signs them. The server only checks,
stores and answers; every state-changing route depends on a SIWE session.
"""

from __future__ import annotations

import logging
import threading
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Sequence

from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from provenant.api.auth import SiweSessions, create_auth_router, session_dependency
from provenant.api.datanets import create_datanets_router
from provenant.api.jobs import create_jobs_router
from provenant.api.limits import RequestLimits
from provenant.api.uploads import UploadDeps, create_uploads_router
from provenant.chain.bindings import DatanetView, decode
from provenant.chain.client import ChainClient
from provenant.chain.deploy import Contracts
from provenant.chain.errors import TransactionReverted
from provenant.datanets.service import DatanetInfo, DatanetService
from provenant.factory.jobs import JobRunner, JobStore
from provenant.store import open_store

if TYPE_CHECKING:
    from provenant.factory.builder import ModelFactory

log = logging.getLogger("provenant.api")
REPO_WEB_DIST = Path(__file__).resolve().parents[3] / "web" / "dist"


@dataclass
class AppSettings:
    rpc_url: str
    home: Path
    domain: str = "localhost:8000"  # what SIWE messages must name: the host[:port] users open
    index_db: str | None = None  # SQLAlchemy URL or SQLite path; default <home>/index.sqlite
    follow_chain: bool = True  # keep the index at the chain head in a background thread
    run_jobs: bool = True  # run queued training jobs in a background thread
    web_dist: Path | None = None  # the built web app; default web/dist of this checkout when built
    serving: Any = None  # a provenant.serving.service.ServingService: mount the model-serving routes
    extra_routers: Sequence[APIRouter] = field(default_factory=tuple)


class Problem(BaseModel):
    """A 4xx answer: `detail` is a sentence naming the problem, or FastAPI's list of field errors."""

    detail: str | list[Any] | dict[str, Any]


class _Index:
    """The indexer running beside the API, stopped with the app."""

    def __init__(self, settings: AppSettings, manifest_path: Path) -> None:
        from provenant_indexer.config import IndexerConfig
        from provenant_indexer.db import open_index
        from provenant_indexer.indexer import Indexer

        from provenant_indexer.indexer import WrongDatabase

        config = IndexerConfig.from_manifest(settings.rpc_url, manifest_path)
        own_file = settings.home / "index.sqlite"
        self.engine = open_index(settings.index_db or str(own_file))
        try:
            self.indexer = Indexer(self.engine, config)
        except WrongDatabase as exc:
            if settings.index_db is not None:  # a database the operator named: theirs to replace
                raise
            # Our own SQLite file is a cache of the chain, made for another set of contracts (an
            # older release): rebuild it from the chain rather than serve half an index.
            log.warning("rebuilding %s: %s", own_file, exc)
            self.engine.dispose()
            own_file.unlink()
            self.engine = open_index(str(own_file))
            self.indexer = Indexer(self.engine, config)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        def follow() -> None:
            try:
                self.indexer.follow(self._stop)
            except Exception:  # a deep reorg halts indexing loudly; /v1/index/health reports it
                log.exception("indexer stopped")

        self._thread = threading.Thread(target=follow, name="indexer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


def _mount_serving(app: FastAPI, service: Any, sessions: SiweSessions) -> None:
    """The serving API's /v1 routes (OpenAI-compatible calls, classifications, receipts, admin, API
    keys minted by signed-in consumers) in this app, with its handlers for its own errors (402
    payment required, 429, ...); the generic handlers stay this app's."""
    from provenant.serving.api import create_serving_router
    from provenant.serving.errors import install_serving_error_handlers

    app.include_router(create_serving_router(service, sessions))
    install_serving_error_handlers(app)


def create_app(settings: AppSettings) -> FastAPI:
    client = ChainClient(settings.rpc_url)
    contracts = Contracts.load(client, settings.home)
    store = open_store(str(settings.home / "store"))
    datanets = DatanetService(client, contracts, store)
    sessions = SiweSessions(domain=settings.domain, chain_id=client.chain_id, path=settings.home / "sessions.sqlite")
    require_session = session_dependency(sessions)
    index = _Index(settings, contracts.manifest.path_for(settings.home, client.chain_id))
    def factory() -> "ModelFactory":
        from provenant.factory.builder import ModelFactory  # torch and peft load with the first job

        return ModelFactory(client, contracts, store, datanets)

    runner = JobRunner(JobStore(settings.home / "jobs"), factory)

    spool_dir = settings.home / "uploads"

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # No upload is in flight before the app serves: any spooled body left is from a killed
        # process, whose client got no answer and will retry (the same bytes give the same CID).
        for leftover in spool_dir.glob("upload-*"):
            leftover.unlink(missing_ok=True)
        if settings.follow_chain:
            index.start()
        if settings.run_jobs:
            runner.start()  # resumes any training a previous process left running
        yield
        runner.stop()
        index.stop()

    app = FastAPI(title="Provenant", version="0.1.0", lifespan=lifespan,
                  description="Datanets, attributed LoRA models, receipts and settlement.")
    app.add_middleware(RequestLimits)

    @app.get("/v1/config", tags=["config"])
    def config() -> dict[str, Any]:
        """What a wallet-connected client needs: the chain, the contracts, the SIWE domain."""
        return {"chain_id": client.chain_id, "domain": settings.domain,
                "contracts": {"token": contracts.token.address, "datanets": contracts.datanets.address,
                              "models": contracts.models.address, "escrow": contracts.escrow.address,
                              "settlement": contracts.settlement.address},
                "deployment_block": contracts.manifest.block_number}

    def datanet(datanet_id: int) -> DatanetInfo | None:
        if datanet_id > datanets.count():
            return None
        return datanets.get(datanet_id)

    def may_contribute(datanet_id: int, address: str) -> bool:
        view = decode(DatanetView, client.call(contracts.datanets.functions.getDatanet(datanet_id)))
        if not view.allowlisted:
            return True
        try:
            return bool(client.call(contracts.datanets.functions.isAllowedContributor(datanet_id, address)))
        except TransactionReverted:
            return False

    app.include_router(create_auth_router(sessions))
    app.include_router(create_datanets_router(datanets, store, require_session))
    app.include_router(create_jobs_router(runner, require_session))
    from provenant.settlement.api import create_claims_router
    from provenant.settlement.claims_index import ClaimsIndex

    app.include_router(create_claims_router(client, contracts, store, ClaimsIndex.in_home(settings.home, client,
                                                                                         contracts, store)),
                       prefix="/v1", responses={404: {"model": Problem, "description": "no such settled epoch"},
                                                422: {"model": Problem, "description": "a malformed or mistyped "
                                                      "address, or a bad epoch number"}})
    app.include_router(create_uploads_router(
        UploadDeps(datanet=datanet, may_contribute=may_contribute, duplicates=datanets.duplicate_index, store=store,
                   spool_dir=spool_dir),
        require_session))
    from provenant_indexer.api import create_router as create_index_router

    app.include_router(create_index_router(index.engine, status=index.indexer.status,
                                           chain_head=lambda: client.w3.eth.block_number, results=store.get),
                       prefix="/v1/index",
                       responses={404: {"description": "no such record in the index"}})
    from provenant.api.agents import create_agents_router

    app.include_router(create_agents_router(client, contracts, store, settings.home))
    if settings.serving is not None:
        _mount_serving(app, settings.serving, sessions)
    for router in settings.extra_routers:
        app.include_router(router)
    web = settings.web_dist or (REPO_WEB_DIST if (REPO_WEB_DIST / "index.html").exists() else None)
    if web is not None:
        app.mount("/", StaticFiles(directory=web, html=True), name="web")
    return app
