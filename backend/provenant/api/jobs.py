"""Model Factory jobs over HTTP: launch, list, follow and cancel trainings (factory/jobs.py).

Launching and cancelling need a SIWE session; a job belongs to whoever launched it and only
they may cancel it. A finished job's result holds the `registerModel` fields for the owner's
wallet (the server never registers models on anyone's behalf).

A job may name a `parent_id`: the caller's own model that the new one is a version of. Adapters
trained elsewhere (peft's `adapter_model.safetensors`, base64, with its `adapter_config.json`) are
registered through `POST /v1/jobs/external` as jobs that train nothing (factory/external.py).
Anything that would make the job fail at selection (filters naming other Datanets, filters that
leave no rows, Datanets of mixed tasks), an adapter that is not a peft LoRA one, or a parent the
caller does not own is refused at launch with 422 and the problem.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, Any, Callable

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, Field

from provenant.api.auth import Session
from provenant.factory.jobs import JobRunner

if TYPE_CHECKING:
    from provenant.factory.builder import ModelRequest

ADDRESS = r"^0x[0-9a-fA-F]{40}$"
MAX_ADAPTER_BYTES = 700_000  # decoded; base64 of it fits the API's 1 MiB body limit (api/limits.py)


class LoraIn(BaseModel):
    rank: int = Field(8, ge=1, le=256)
    alpha: int = Field(16, ge=1, le=1024)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] | None = Field(None, min_length=1, max_length=16,
                                             description="default: the base model's usual attention projections")
    learning_rate: float = Field(1e-3, gt=0.0, le=1.0)
    epochs: int = Field(3, ge=1, le=100)
    batch_size: int = Field(16, ge=1, le=1024)
    max_length: int = Field(64, ge=2, le=4096)
    seed: int = Field(0, ge=0, le=2**32 - 1)


class FiltersIn(BaseModel):
    """Which approved rows train: all of them unless filtered (factory/selection.py)."""

    contributors: list[str] = Field(default_factory=list, max_length=1000, description="only these contributors")
    exclude_contributors: list[str] = Field(default_factory=list, max_length=1000)
    from_block: int | None = Field(None, ge=0, description="contributions recorded at or after this block")
    to_block: int | None = Field(None, ge=0)
    from_time: int | None = Field(None, ge=0, description="unix seconds of the recording block, inclusive")
    to_time: int | None = Field(None, ge=0)
    max_rows: dict[int, int] = Field(default_factory=dict, description="Datanet id -> at most this many rows")
    weights: dict[int, float] = Field(default_factory=dict, description="Datanet id -> sampling weight")
    held_out: float = Field(0.1, ge=0.0, lt=1.0, description="fraction of each Datanet held out for evaluation")
    dedup: bool = Field(True, description="train each distinct row once: later exact repeats, and classification "
                                          "rows near-copying an earlier contribution's row, are dropped")


class JobIn(BaseModel):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[\w.\-/]+$")
    datanet_ids: list[int] = Field(min_length=1, max_length=64)
    base_model: str = Field("minilm", max_length=200)
    lora: LoraIn = Field(default_factory=LoraIn)
    filters: FiltersIn = Field(default_factory=FiltersIn)
    server: str | None = Field(None, pattern=ADDRESS, description="serving key; default the caller")
    price_per_call: int = Field(10**15, ge=0, le=10**30)
    load_in_4bit: bool = Field(False, description="QLoRA-style 4-bit base; needs CUDA and bitsandbytes")
    parent_id: int = Field(0, ge=0, le=2**63 - 1,
                           description="register as a new version of this model (the caller's); 0: none")


class ExternalIn(BaseModel):
    """An adapter trained elsewhere: peft's files, the base, and the contributions it was trained on."""

    name: str = Field(min_length=1, max_length=100, pattern=r"^[\w.\-/]+$")
    base_model: str = Field(max_length=200, description="the causal base it was trained on")
    datanet_ids: list[int] = Field(min_length=1, max_length=64)
    contribution_ids: list[Annotated[int, Field(ge=1, le=2**63 - 1)]] | None = Field(
        None, min_length=1, max_length=100_000, description="default: every approved contribution of the Datanets")
    adapter: str = Field(description="adapter_model.safetensors, base64", max_length=4 * MAX_ADAPTER_BYTES // 3 + 4)
    adapter_config: dict[str, Any] = Field(description="adapter_config.json as peft wrote it")
    max_length: int = Field(64, ge=2, le=4096, description="tokens per row for the attribution indexes")
    server: str | None = Field(None, pattern=ADDRESS, description="serving key; default the caller")
    price_per_call: int = Field(10**15, ge=0, le=10**30)
    parent_id: int = Field(0, ge=0, le=2**63 - 1,
                           description="register as a new version of this model (the caller's); 0: none")


def create_jobs_router(runner: JobRunner, require_session: Callable[..., Session]) -> APIRouter:
    router = APIRouter(prefix="/v1/jobs", tags=["factory"])
    store = runner.store

    def refuse_early(request: ModelRequest, owner: str) -> None:
        """422 now for what would only fail the job later (before any torch work is queued)."""
        from provenant.factory.builder import ParentError
        from provenant.factory.selection import SelectionError

        try:
            runner.factory.check_parent(owner, request.parent_id)
            runner.factory.preflight(request.datanet_ids, request.filters, request.settings.seed)
        except (ParentError, SelectionError) as exc:
            raise HTTPException(422, str(exc)) from None

    def get(job_id: str) -> dict[str, Any]:
        try:
            return asdict(store.get(job_id))
        except KeyError:
            raise HTTPException(404, f"no training job {job_id!r}") from None

    @router.post("", status_code=202, responses={401: {"description": "no SIWE session"},
                                                 422: {"description": "bad settings"}})
    def launch(body: JobIn, session: Session = Depends(require_session)) -> dict[str, Any]:
        """Queue a training job on the approved contributions of the chosen Datanets."""
        if body.load_in_4bit:  # refused here, before a job exists, when this machine cannot run it
            from provenant.factory.devices import DeviceError, resolve_device
            from provenant.factory.qlora import QuantizationUnavailable, check_available

            try:  # a malformed PROVENANT_DEVICE on the server is named too, not a 500
                check_available(resolve_device(None))
            except (QuantizationUnavailable, DeviceError) as exc:
                raise HTTPException(422, str(exc)) from None
        from provenant.factory.base_models import default_target_modules
        from provenant.factory.builder import ModelRequest  # torch loads here, not at server start
        from provenant.factory.selection import SelectionFilters
        from provenant.factory.train import LoraSettings

        lora = body.lora.model_dump()
        lora["target_modules"] = tuple(lora["target_modules"] or default_target_modules(body.base_model))
        lora["quantize_base"] = "nf4" if body.load_in_4bit else "none"
        try:
            settings = LoraSettings(**lora)
            filters = SelectionFilters(**body.filters.model_dump())
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        request = ModelRequest(name=body.name, datanet_ids=tuple(body.datanet_ids), server=body.server or session.address,
                               price_per_call=body.price_per_call, base_model=body.base_model, settings=settings,
                               filters=filters, parent_id=body.parent_id)
        refuse_early(request, session.address)
        return asdict(runner.submit(owner=session.address, request=request))

    @router.post("/external", status_code=202, responses={401: {"description": "no SIWE session"},
                                                          413: {"description": "adapter too large for this route"},
                                                          422: {"description": "not a peft LoRA adapter, bad "
                                                                "selection or parent"}})
    def register_external(body: ExternalIn, session: Session = Depends(require_session)) -> dict[str, Any]:
        """Queue the registration of a LoRA adapter trained elsewhere: the job checks it against the
        base model (naming any tensor that does not fit), indexes the declared rows and stores it;
        its result carries the `registerModel` fields, its manifest marks it externally trained."""
        from provenant.factory.builder import ModelRequest
        from provenant.factory.external import ExternalAdapterError, parse_peft_adapter
        from provenant.factory.train import LoraSettings

        try:
            data = base64.b64decode(body.adapter, validate=True)
        except (binascii.Error, ValueError):
            raise HTTPException(422, "adapter: not base64") from None
        if len(data) > MAX_ADAPTER_BYTES:
            raise HTTPException(413, f"adapter: {len(data)} bytes, over the {MAX_ADAPTER_BYTES} this route takes; "
                                     "register larger ones with `provenant register-adapter`")
        try:
            parse_peft_adapter(data, body.adapter_config)  # structure only; the job checks it against the base
        except ExternalAdapterError as exc:
            raise HTTPException(422, str(exc)) from None
        request = ModelRequest(name=body.name, datanet_ids=tuple(body.datanet_ids),
                               server=body.server or session.address, price_per_call=body.price_per_call,
                               base_model=body.base_model, settings=LoraSettings(max_length=body.max_length),
                               parent_id=body.parent_id)
        refuse_early(request, session.address)
        external = {"adapter_cid": runner.factory.store.put(data), "peft_config": body.adapter_config,
                    "contribution_ids": body.contribution_ids}
        return asdict(runner.submit(owner=session.address, request=request, external=external))

    @router.get("")
    def jobs() -> list[dict[str, Any]]:
        """Every job, oldest first, with its state and latest progress."""
        return [asdict(j) for j in store.list()]

    @router.get("/{job_id}", responses={404: {"description": "no such job"}})
    def job(job_id: str) -> dict[str, Any]:
        """One job: state, live progress (step, epoch, loss, examples/s, ETA) and result (with the
        held-out metrics per Datanet under `result.per_datanet`)."""
        return get(job_id)

    @router.post("/{job_id}/cancel", responses={401: {"description": "no SIWE session"},
                                                403: {"description": "not the job's owner"},
                                                404: {"description": "no such job"}})
    def cancel(job_id: str, session: Session = Depends(require_session)) -> dict[str, Any]:
        """Cancel a queued job, or stop a running one at its next training step."""
        if get(job_id)["owner"] != session.address:
            raise HTTPException(403, "only the account that launched a job may cancel it")
        return asdict(store.cancel(job_id))

    return router
