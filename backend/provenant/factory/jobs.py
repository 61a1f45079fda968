"""Training jobs: create, list, follow, cancel; persisted on disk and resumed after a crash.

A job lives in `<home>/jobs/<id>/`: `job.json` (spec, state, progress, result; replaced
atomically on every update) and `checkpoint.pt` (the training state after the last finished
epoch). The runner trains one job at a time in a background thread (trainings share the
process-global dropout RNG, see factory/train.py). When the process dies mid-training, the next
runner finds the job still `running`, and resumes it from its checkpoint with the selection that
was frozen before training began (the rows that train and the held-out rows, stored by CID as
`selection_cid`), ending with the adapter an uninterrupted run would give.

When the runner holds a builder key (the CLI), a finished job registers its model on chain;
otherwise (the web app) the result carries the registration fields for the owner's wallet.

A job of kind "external" trains nothing: it checks an adapter trained elsewhere (stored by CID
before the job is queued) against its base model and declared contributions, and indexes and
stores it like a trained one (factory/external.py); it runs in the same queue because loading
models and building indexes must not race a training's process-global RNG.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # torch, transformers and peft load on the first job, not at server start
    from eth_account.signers.local import LocalAccount

    from provenant.factory.builder import ModelFactory, ModelRequest

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
TRAIN, EXTERNAL = "train", "external"  # job kinds
PROGRESS_EVERY_S = 0.5  # job.json is rewritten at most this often while training
LOSS_HISTORY_MAX = 512  # loss points kept per job (~25 KB of job.json)


@dataclass
class Job:
    job_id: str
    owner: str
    name: str
    datanet_ids: list[int]
    settings: dict[str, Any]
    base_model: str
    server: str
    price_per_call: int
    state: str = "queued"
    contribution_ids: list[int] | None = None  # the frozen selection, once made
    filters: dict[str, Any] = field(default_factory=dict)  # SelectionFilters.to_dict(); empty: none
    selection_cid: str | None = None  # the frozen selection document (rows that train / are held out)
    progress: dict[str, Any] = field(default_factory=dict)
    # Every training step's (epoch, step, loss), thinned to at most LOSS_HISTORY_MAX points by
    # dropping every other one when full: the UI's loss chart, whatever its polling rate.
    progress_history: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    cancel_requested: bool = False
    parent_id: int = 0  # the model this job's model is a new version of (0: none)
    kind: str = TRAIN
    # Kind "external": {"adapter_cid", "peft_config", "contribution_ids" (None: all approved of the Datanets)}
    external: dict[str, Any] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)

    def request(self) -> ModelRequest:
        from provenant.factory.builder import ModelRequest
        from provenant.factory.selection import SelectionFilters
        from provenant.factory.train import LoraSettings

        return ModelRequest(name=self.name, datanet_ids=tuple(self.datanet_ids), server=self.server,
                            price_per_call=self.price_per_call, base_model=self.base_model,
                            settings=LoraSettings.from_dict(self.settings),
                            filters=SelectionFilters.from_dict(self.filters) if self.filters else SelectionFilters(),
                            parent_id=self.parent_id)


class JobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()

    def _file(self, job_id: str) -> Path:
        if not job_id.isalnum():
            raise KeyError(job_id)
        return self.root / job_id / "job.json"

    def create(self, *, owner: str, request: ModelRequest, external: dict[str, Any] | None = None) -> Job:
        job = Job(job_id=secrets.token_hex(8), owner=owner, name=request.name, datanet_ids=list(request.datanet_ids),
                  settings=request.settings.to_dict(), base_model=request.base_model, server=request.server,
                  price_per_call=request.price_per_call,
                  filters={} if request.filters.is_default else request.filters.to_dict(),
                  parent_id=request.parent_id, kind=EXTERNAL if external is not None else TRAIN,
                  external=dict(external or {}))
        self.save(job)
        return job

    def save(self, job: Job) -> None:
        job.updated = time.time()
        path = self._file(job.job_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with self._lock:
            tmp.write_text(json.dumps(asdict(job)))  # insertion order: the registration fields stay in ABI order
            os.replace(tmp, path)  # a reader, or a crash, sees the old or the new record, never half

    def get(self, job_id: str) -> Job:
        try:
            job = Job(**json.loads(self._file(job_id).read_text()))
        except FileNotFoundError:
            raise KeyError(job_id) from None
        job.cancel_requested = self.cancel_requested(job_id)
        return job

    def _cancel_marker(self, job_id: str) -> Path:
        return self._file(job_id).parent / "cancel"

    def cancel_requested(self, job_id: str) -> bool:
        # A marker file, not a field of job.json: the runner rewrites job.json with progress all
        # the time and would race a read-modify-write of the flag.
        return self._cancel_marker(job_id).exists()

    def list(self) -> list[Job]:
        jobs = [Job(**json.loads(p.read_text())) for p in self.root.glob("*/job.json")] if self.root.exists() else []
        return sorted(jobs, key=lambda j: j.created)

    def cancel(self, job_id: str) -> Job:
        """Mark a job cancelled: a queued one never starts, a running one stops at its next step."""
        job = self.get(job_id)
        if job.state in ("queued", "running"):
            self._cancel_marker(job_id).touch()
        return self.get(job_id)


class FileCheckpoints:
    """factory.train.Checkpoints in a job's folder; `cancelled` reads the job's cancel flag."""

    def __init__(self, store: JobStore, job_id: str) -> None:
        self.store, self.job_id = store, job_id
        self.path = store.root / job_id / "checkpoint.pt"

    def load(self) -> dict[str, Any] | None:
        import torch

        # Our own file, written by `save` below (optimizer state and RNG tensors need pickle).
        return torch.load(self.path, weights_only=False) if self.path.exists() else None

    def save(self, state: dict[str, Any]) -> None:
        import torch

        tmp = self.path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.path)

    def cancelled(self) -> bool:
        return self.store.cancel_requested(self.job_id)


class JobRunner:
    """Runs queued jobs one at a time in a daemon thread; resumes jobs a crash left running."""

    def __init__(self, store: JobStore, factory: Callable[[], ModelFactory], builder: LocalAccount | None = None) -> None:
        self.store, self.builder = store, builder
        self._make_factory = factory
        self._factory: ModelFactory | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def factory(self) -> ModelFactory:
        if self._factory is None:
            self._factory = self._make_factory()
        return self._factory

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="training-jobs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def submit(self, *, owner: str, request: ModelRequest, external: dict[str, Any] | None = None) -> Job:
        """Queue a training, or with `external` ({"adapter_cid", "peft_config", "contribution_ids"}) the
        registration of an adapter trained elsewhere."""
        job = self.store.create(owner=owner, request=request, external=external)
        self._wake.set()
        return job

    def _loop(self) -> None:
        while not self._stop.is_set():
            pending = [j for j in self.store.list() if j.state in ("running", "queued")]
            pending.sort(key=lambda j: (j.state != "running", j.created))  # interrupted ones first
            if pending:
                self.run(pending[0].job_id)
            else:
                self._wake.wait(timeout=1.0)
                self._wake.clear()

    def run(self, job_id: str) -> Job:
        """Run (or resume) one job to an end state."""
        from provenant.factory.train import TrainingCancelled

        job = self.store.get(job_id)
        if job.cancel_requested:
            job.state, job.error = "cancelled", "cancelled before it started"
            self.store.save(job)
            return job
        job.state = "running"
        self.store.save(job)
        last_write = 0.0
        history = list(job.progress_history)

        def progress(p: dict[str, Any]) -> None:
            nonlocal last_write
            if p.get("stage") == "train":
                history.append({k: p[k] for k in ("epoch", "epochs", "step", "steps", "loss") if k in p})
                if len(history) > LOSS_HISTORY_MAX:
                    del history[1::2]
            if time.monotonic() - last_write >= PROGRESS_EVERY_S or p.get("stage") != "train":
                last_write = time.monotonic()
                current = self.store.get(job_id)
                current.progress, current.progress_history = p, list(history)
                self.store.save(current)

        try:
            request = job.request()
            make = self._make_external if job.kind == EXTERNAL else self._make_trained
            manifest, manifest_cid = make(job, request, progress)
            job = self.store.get(job_id)
            job.result = {"manifest_cid": manifest_cid, "adapter_cid": manifest.adapter_cid,
                          "adapter_hash": manifest.adapter_hash, "lineage_root": manifest.lineage_root,
                          "task": manifest.task, "parent_id": manifest.parent_id,
                          "trained_by": manifest.trained_by or "factory", "metrics": manifest.metrics,
                          "per_datanet": manifest.metrics.get("per_datanet", {}),
                          "registration": self.factory.registration(job.request(), manifest, manifest_cid)}
            if self.builder is not None:
                job.result["model_id"] = self.factory.register(self.builder, job.request(), manifest, manifest_cid)
            job.state = "succeeded"
        except TrainingCancelled as exc:
            job = self.store.get(job_id)
            job.state, job.error = "cancelled", str(exc)
        except Exception as exc:  # the job fails with its reason; the runner goes on
            job = self.store.get(job_id)
            job.state, job.error = "failed", f"{type(exc).__name__}: {exc}"
        job.progress_history = history
        self.store.save(job)
        return job

    def _make_trained(self, job: Job, request: ModelRequest, progress: Callable[[dict], None]) -> tuple[Any, str]:
        if job.selection_cid is None and job.contribution_ids is None:
            selection = self.factory.select(tuple(job.datanet_ids), filters=request.filters, seed=request.settings.seed)
            job.selection_cid = self.factory.freeze(selection)
            job.contribution_ids = [r.contribution_id for r in selection.records]
            job.progress = {"stage": "selected", "selection_cid": job.selection_cid, "task": selection.task,
                            "per_datanet": selection.summary()}
            self.store.save(job)  # frozen before training: a resume trains on exactly these rows
        elif job.selection_cid is not None:
            selection = self.factory.load_frozen(job.selection_cid)
        else:  # a job frozen before selections were stored by CID: every row of those contributions
            selection = self.factory.select(tuple(job.datanet_ids), only=tuple(job.contribution_ids or ()))
        return self.factory.make(request, selection, progress=progress,
                                 checkpoints=FileCheckpoints(self.store, job.job_id), selection_cid=job.selection_cid)

    def _make_external(self, job: Job, request: ModelRequest, progress: Callable[[dict], None]) -> tuple[Any, str]:
        from provenant.factory.external import make_external, parse_peft_adapter

        adapter = parse_peft_adapter(self.factory.store.get(job.external["adapter_cid"]), job.external["peft_config"])
        declared = job.external.get("contribution_ids")
        return make_external(self.factory, request, adapter, None if declared is None else tuple(declared),
                             progress=progress)
