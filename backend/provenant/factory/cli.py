"""`provenant train` and `provenant register-adapter`: the Model Factory's commands.

`train` runs as one process, or once per GPU under torchrun (`torchrun --nproc_per_node 8 -m provenant
train ...`): every process trains its share of each batch, and rank 0 alone stores and registers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from provenant.cli_options import (DEFAULT_HOME, DEFAULT_RPC, DevOpt, HomeOpt, KeyEnvOpt, KeystoreOpt, RpcOpt,
                                   open_session, signer_for)

console = Console()
err = Console(stderr=True)


def _per_datanet(pairs: list[str], option: str, kind: type) -> dict[int, object]:
    """["3=500", "4=0.5"] -> {3: 500, 4: 0.5}; a malformed pair is one clear error."""
    out: dict[int, object] = {}
    for pair in pairs:
        datanet, sep, value = pair.partition("=")
        try:
            if not sep:
                raise ValueError
            out[int(datanet)] = kind(value)
        except ValueError:
            raise typer.BadParameter(f"{option} wants DATANET={kind.__name__.upper()}, got {pair!r}") from None
    return out


def train(name: str, datanets: Annotated[str, typer.Option(help="comma-separated Datanet ids")],
          server: Annotated[str, typer.Option(help="serving key address")],
          price: Annotated[int, typer.Option(help="price per call, wei")] = 10**18,
          base_model: Annotated[str, typer.Option(help="minilm, tiny-encoder, tiny-llama, or a Hugging Face "
                                                       "model id / local folder (causal LMs for text Datanets)")] = "minilm",
          epochs: int = 3, seed: int = 0, rank: int = 8, alpha: int = 16, dropout: float = 0.0,
          learning_rate: Annotated[float, typer.Option("--lr", help="learning rate")] = 1e-3,
          batch_size: int = 16, max_length: int = 64,
          target_modules: Annotated[Optional[str], typer.Option(help="comma-separated; default: the base's "
                                                                     "attention projections")] = None,
          contributor: Annotated[Optional[list[str]], typer.Option(help="only this contributor (repeatable)")] = None,
          exclude_contributor: Annotated[Optional[list[str]], typer.Option(help="leave out (repeatable)")] = None,
          from_block: Annotated[Optional[int], typer.Option(help="contributions recorded at or after")] = None,
          to_block: Annotated[Optional[int], typer.Option(help="contributions recorded at or before")] = None,
          from_time: Annotated[Optional[int], typer.Option(help="unix seconds of the recording block")] = None,
          to_time: Annotated[Optional[int], typer.Option(help="unix seconds of the recording block")] = None,
          max_rows: Annotated[Optional[list[str]], typer.Option(help="DATANET=N row cap (repeatable)")] = None,
          weight: Annotated[Optional[list[str]], typer.Option(help="DATANET=W sampling weight (repeatable)")] = None,
          held_out: Annotated[float, typer.Option(help="fraction of each Datanet held out for evaluation")] = 0.1,
          keep_repeats: Annotated[bool, typer.Option(help="train a row as often as it was submitted (default: each "
                                                          "distinct row once, its earliest copy; a classification "
                                                          "row near-copying an earlier contribution's row is a "
                                                          "repeat too)")] = False,
          parent: Annotated[int, typer.Option(help="register as a new version of this model id (yours)")] = 0,
          quantize_base: Annotated[str, typer.Option(help="none, or nf4: QLoRA over a 4-bit base (causal LMs; "
                                                         "needs a CUDA GPU and bitsandbytes)")] = "none",
          device: Annotated[str, typer.Option(help="auto (a CUDA GPU when present), cpu, cuda or cuda:N; "
                                                   "$PROVENANT_DEVICE sets auto's choice")] = "auto",
          rpc_url: RpcOpt = DEFAULT_RPC, home: HomeOpt = DEFAULT_HOME,
          key_env: KeyEnvOpt = "PROVENANT_KEY", keystore: KeystoreOpt = None, dev_account: DevOpt = None) -> None:
    """Train a LoRA model (a classifier, or a causal LM for text / prompt-completion Datanets) on the
    approved contributions of Datanets, with a progress bar, and register it with its lineage."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from provenant.datanets.service import DatanetService
    from provenant.factory.base_models import default_target_modules
    from provenant.factory.builder import ModelFactory, ModelRequest
    from provenant.factory.replicas import ReplicaFinished
    from provenant.factory.selection import SelectionFilters
    from provenant.factory.train import LoraSettings

    targets = tuple(t.strip() for t in target_modules.split(",") if t.strip()) if target_modules else \
        default_target_modules(base_model)
    settings = LoraSettings(rank=rank, alpha=alpha, dropout=dropout, target_modules=targets,
                            learning_rate=learning_rate, epochs=epochs, batch_size=batch_size, max_length=max_length,
                            seed=seed, quantize_base=quantize_base)
    filters = SelectionFilters(contributors=tuple(contributor or ()), exclude_contributors=tuple(exclude_contributor or ()),
                               from_block=from_block, to_block=to_block, from_time=from_time, to_time=to_time,
                               max_rows=_per_datanet(max_rows or [], "--max-rows", int),  # type: ignore[arg-type]
                               weights=_per_datanet(weight or [], "--weight", float),  # type: ignore[arg-type]
                               held_out=held_out, dedup=not keep_repeats)
    session = open_session(rpc_url, home)
    signer = signer_for(session, key_env, keystore, dev_account)
    contracts, store = session.contracts, session.store
    factory = ModelFactory(session.client, contracts, store, DatanetService(session.client, contracts, store))  # type: ignore[arg-type]
    request = ModelRequest(name=name, datanet_ids=tuple(int(d) for d in datanets.split(",")), server=server,
                           price_per_call=price, base_model=base_model, settings=settings, filters=filters,
                           parent_id=parent, device=device)
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                  TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=err, transient=False) as bar:
        task = bar.add_task("training", total=None, info="")

        def progress(p: dict) -> None:
            if p.get("stage") == "train":
                bar.update(task, total=p["epochs"] * p["steps"], completed=(p["epoch"] - 1) * p["steps"] + p["step"],
                           description=f"epoch {p['epoch']}/{p['epochs']}",
                           info=f"loss {p['loss']:.4f} · {p['examples_per_second']:.1f} ex/s")
            else:
                bar.console.print({k: round(v, 4) if isinstance(v, float) else v for k, v in p.items()})

        try:
            model = factory.build(signer, request, progress=progress)
        except ReplicaFinished:  # a non-zero torchrun rank: its share of the training is done
            return
    for datanet_id, m in sorted(model.manifest.metrics.get("per_datanet", {}).items()):
        shown = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in m.items())
        console.print(f"Datanet {datanet_id}: {shown}")
    version = f", a version of model {model.manifest.parent_id}" if model.manifest.parent_id else ""
    console.print(f"model {model.model_id} ({model.manifest.task}{version}): manifest {model.manifest_cid}, "
                  f"lineage root {model.manifest.lineage_root}")


def register_adapter(name: str,
                     adapter: Annotated[Path, typer.Argument(help="peft save_pretrained folder, or its "
                                                                  "adapter_model.safetensors")],
                     base_model: Annotated[str, typer.Option(help="the causal base it was trained on: tiny-llama, "
                                                                  "a Hugging Face id or a local folder")],
                     datanets: Annotated[str, typer.Option(help="comma-separated Datanet ids")],
                     server: Annotated[str, typer.Option(help="serving key address")],
                     contributions: Annotated[Optional[str], typer.Option(
                         help="comma-separated contribution ids it was trained on (default: every approved "
                              "contribution of the Datanets)")] = None,
                     price: Annotated[int, typer.Option(help="price per call, wei")] = 10**18,
                     max_length: Annotated[int, typer.Option(help="tokens per row for the attribution "
                                                                  "indexes")] = 64,
                     parent: Annotated[int, typer.Option(help="register as a new version of this model id")] = 0,
                     rpc_url: RpcOpt = DEFAULT_RPC, home: HomeOpt = DEFAULT_HOME, key_env: KeyEnvOpt = "PROVENANT_KEY",
                     keystore: KeystoreOpt = None, dev_account: DevOpt = None) -> None:
    """Register a LoRA adapter trained elsewhere (e.g. a Hugging Face Trainer + peft script) with its
    lineage; the manifest marks it as externally trained."""
    from provenant.datanets.service import DatanetService
    from provenant.factory.builder import ModelFactory, ModelRequest
    from provenant.factory.external import ExternalAdapterError, make_external, read_peft_adapter
    from provenant.factory.train import LoraSettings

    try:
        parsed = read_peft_adapter(adapter)
    except ExternalAdapterError as exc:
        raise typer.BadParameter(str(exc), param_hint="ADAPTER") from None
    session = open_session(rpc_url, home)
    signer = signer_for(session, key_env, keystore, dev_account)
    contracts, store = session.contracts, session.store
    factory = ModelFactory(session.client, contracts, store, DatanetService(session.client, contracts, store))  # type: ignore[arg-type]
    request = ModelRequest(name=name, datanet_ids=tuple(int(d) for d in datanets.split(",")), server=server,
                           price_per_call=price, base_model=base_model, settings=LoraSettings(max_length=max_length),
                           parent_id=parent)
    factory.check_parent(signer.address, parent)
    declared = tuple(int(c) for c in contributions.split(",")) if contributions else None
    manifest, manifest_cid = make_external(factory, request, parsed, declared, progress=lambda p: err.print(p))
    model_id = factory.register(signer, request, manifest, manifest_cid)
    version = f", a version of model {parent}" if parent else ""
    console.print(f"model {model_id} (externally trained{version}): manifest {manifest_cid}, adapter "
                  f"{manifest.adapter_hash}, lineage root {manifest.lineage_root} over "
                  f"{len(manifest.contributions)} contributions")
    fit = manifest.metrics["declared_rows"]
    console.print(f"loss on the declared rows {fit['loss']:.4f} (bare base {fit['base_loss']:.4f})")
