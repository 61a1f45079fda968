"""Registering a LoRA adapter trained elsewhere (a plain Hugging Face Trainer + peft script, say).

The builder brings what `PeftModel.save_pretrained` writes (`adapter_model.safetensors` and
`adapter_config.json`), names the base model and the contributions the adapter was trained on
(all approved contributions of some Datanets, or exactly a list of them), and gets a model
registered with the same lineage a Factory-trained one has: the contributions' Merkle root (every
row of each), the adapter's hash, the manifest's CID, the parent model. The manifest says plainly
that the training happened outside the Factory (`trained_by: "external"`), so `verify model` can
recheck the root, the approvals and the adapter's hash, and says that it cannot recheck how the
adapter was trained: the declared contributions are the builder's word.

Only causal-LM adapters in peft's LoRA format are taken (the serving format is the same one:
`base_model.model.<module path>.lora_{A,B}.weight`); every tensor is checked against the base
model's linear layers, and a mismatch names the tensor. The stored adapter is the builder's file,
byte for byte, so its sha256 on chain is the one they can compute themselves.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from provenant.factory.lineage import TRAINED_EXTERNALLY, Manifest, config_hash, lineage_root, sha256_0x
from provenant.factory.train import LoraSettings
from provenant.serving.lora import CAUSAL_ADAPTER_FORMAT, CAUSAL_TASK

if TYPE_CHECKING:
    from torch import nn

    from provenant.factory.builder import ModelFactory, ModelRequest

PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_CONFIG = "adapter_config.json"
MAX_RANK, MAX_ALPHA = 4096, 1 << 20
_KEY = re.compile(r"^base_model\.model\.(?P<path>.+)\.lora_(?P<ab>[AB])\.weight$")


class ExternalAdapterError(ValueError):
    """An adapter that is not a peft LoRA adapter for causal LMs, or that does not fit the base."""


@dataclass(frozen=True)
class ExternalAdapter:
    adapter_bytes: bytes  # the builder's safetensors file, unchanged
    rank: int
    alpha: int
    dropout: float
    target_modules: tuple[str, ...]  # the module names the tensors cover (last path component)
    shapes: dict[str, tuple[int, ...]]  # tensor name -> shape
    peft_config: dict[str, Any]  # adapter_config.json as given (recorded in the training config)

    def settings(self, max_length: int) -> LoraSettings:
        """The LoRA settings the serving and attribution code reads (rank, alpha, targets); the
        optimisation fields keep their defaults: they were the builder's, and are not known here."""
        return LoraSettings(rank=self.rank, alpha=self.alpha, dropout=self.dropout,
                            target_modules=self.target_modules, max_length=max_length)


def read_peft_adapter(path: Path) -> ExternalAdapter:
    """A peft adapter from a `save_pretrained` folder, or a safetensors file with adapter_config.json
    beside it."""
    path = Path(path)
    weights, config = (path / PEFT_WEIGHTS, path / PEFT_CONFIG) if path.is_dir() else (path, path.parent / PEFT_CONFIG)
    if not weights.is_file():
        raise ExternalAdapterError(f"no adapter weights at {weights} (peft's save_pretrained writes {PEFT_WEIGHTS})")
    if not config.is_file():
        raise ExternalAdapterError(f"no {PEFT_CONFIG} beside {weights}: it says the rank, alpha and targets")
    try:
        peft_config = json.loads(config.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExternalAdapterError(f"{config} is not JSON: {exc}") from None
    return parse_peft_adapter(weights.read_bytes(), peft_config)


def parse_peft_adapter(adapter_bytes: bytes, peft_config: dict[str, Any]) -> ExternalAdapter:
    """Check the structure (without the base): a LoRA config this Factory serves as is, and tensors
    named and shaped as peft saves them, A (r, in) and B (out, r) for every adapted module."""
    from safetensors.torch import load as safetensors_load

    if not isinstance(peft_config, dict):
        raise ExternalAdapterError("adapter_config.json must be a JSON object")
    problems = []
    if peft_config.get("peft_type", "LORA") != "LORA":
        problems.append(f"peft_type is {peft_config.get('peft_type')!r}, only LORA adapters are taken")
    if peft_config.get("task_type") not in (None, "CAUSAL_LM"):
        problems.append(f"task_type is {peft_config.get('task_type')!r}: only causal-LM adapters are taken")
    for flag in ("use_dora", "use_rslora"):  # both change what the weights mean; serving computes plain LoRA
        if peft_config.get(flag):
            problems.append(f"{flag} is set: only plain LoRA (scale alpha / r) is served")
    if peft_config.get("bias", "none") != "none":
        problems.append(f"bias is {peft_config.get('bias')!r}: only bias='none' adapters are taken")
    if peft_config.get("modules_to_save"):
        problems.append(f"modules_to_save {peft_config['modules_to_save']} would replace base weights")
    rank, alpha = peft_config.get("r"), peft_config.get("lora_alpha")
    dropout = peft_config.get("lora_dropout", 0.0)
    if not _number(rank) or isinstance(rank, float) or not 1 <= rank <= MAX_RANK:
        problems.append(f"r must be an integer in [1, {MAX_RANK}], got {rank!r}")
    if not _number(alpha) or not 1 <= alpha <= MAX_ALPHA or int(alpha) != alpha:
        problems.append(f"lora_alpha must be a whole number in [1, {MAX_ALPHA}], got {alpha!r}")
    if dropout is not None and (not _number(dropout) or not 0.0 <= dropout < 1.0):
        problems.append(f"lora_dropout must be in [0, 1), got {dropout!r}")
    if problems:
        raise ExternalAdapterError("adapter_config.json: " + "; ".join(problems))
    try:
        state = safetensors_load(adapter_bytes)
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise ExternalAdapterError(f"adapter weights are not a safetensors file: {exc}") from None
    if not state:
        raise ExternalAdapterError("adapter weights hold no tensor")
    halves: dict[str, set[str]] = {}
    for name, tensor in sorted(state.items()):
        match = _KEY.match(name)
        if match is None:
            raise ExternalAdapterError(f"tensor {name}: not a LoRA weight in peft's naming "
                                       "(base_model.model.<module>.lora_A.weight / .lora_B.weight)")
        want = (rank, None) if match["ab"] == "A" else (None, rank)
        if tensor.dim() != 2 or any(w is not None and w != s for w, s in zip(want, tensor.shape)):
            side = "(r, in_features)" if match["ab"] == "A" else "(out_features, r)"
            raise ExternalAdapterError(f"tensor {name} has shape {tuple(tensor.shape)}; LoRA {match['ab']} must be "
                                       f"{side} with r={rank}")
        if not tensor.is_floating_point():
            raise ExternalAdapterError(f"tensor {name} is {tensor.dtype}, not floating point")
        halves.setdefault(match["path"], set()).add(match["ab"])
    for module, got in sorted(halves.items()):
        if got != {"A", "B"}:
            missing = ({"A", "B"} - got).pop()
            raise ExternalAdapterError(f"tensor base_model.model.{module}.lora_{missing}.weight is missing "
                                       f"(its lora_{got.pop()} is there)")
    targets = tuple(sorted({m.rsplit(".", 1)[-1] for m in halves}))
    declared = peft_config.get("target_modules")
    if isinstance(declared, list) and not set(targets) <= set(declared):
        raise ExternalAdapterError(f"tensors adapt modules {sorted(set(targets) - set(declared))} that "
                                   f"target_modules {declared} does not name")
    return ExternalAdapter(adapter_bytes=adapter_bytes, rank=int(rank), alpha=int(alpha),
                           dropout=float(dropout or 0.0), target_modules=targets,
                           shapes={k: tuple(v.shape) for k, v in state.items()}, peft_config=peft_config)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_against_base(adapter: ExternalAdapter, base: nn.Module) -> None:
    """Every linear layer of the base named by the targets has its A and B, shaped for it, and no
    tensor names anything else; the error names the first tensor that does not fit."""
    from torch import nn

    targets = set(adapter.target_modules)
    linears = {name: m for name, m in base.named_modules()
               if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] in targets}
    expected: dict[str, tuple[int, int]] = {}
    for path, linear in linears.items():
        expected[f"base_model.model.{path}.lora_A.weight"] = (adapter.rank, linear.in_features)
        expected[f"base_model.model.{path}.lora_B.weight"] = (linear.out_features, adapter.rank)
    for name in sorted(adapter.shapes):
        if name not in expected:
            raise ExternalAdapterError(f"tensor {name} names no linear layer of the base model")
        if adapter.shapes[name] != expected[name]:
            raise ExternalAdapterError(f"tensor {name} has shape {adapter.shapes[name]}; the base model needs "
                                       f"{expected[name]}")
    missing = sorted(set(expected) - set(adapter.shapes))
    if missing:
        more = f" ({len(missing)} tensors missing in all)" if len(missing) > 1 else ""
        raise ExternalAdapterError(f"tensor {missing[0]} is missing: the base model has that layer, and the adapter "
                                   f"adapts every other {'/'.join(adapter.target_modules)} layer{more}")


def make_external(factory: ModelFactory, request: ModelRequest, adapter: ExternalAdapter,
                  contribution_ids: tuple[int, ...] | None = None,
                  progress: Callable[[dict], None] | None = None) -> tuple[Manifest, str]:
    """Check the adapter against the base and the declared contributions against the chain, build the
    attribution indexes over the declared rows at the adapter's weights, store everything; (manifest,
    its CID). `contribution_ids` None: every approved contribution of the request's Datanets."""
    from provenant.attribution.lm import build_lm_index, build_lm_span_index
    from provenant.factory.base_models import BaseModelError, is_causal_base, load_causal_base_model
    from provenant.factory.train_lm import build_lora_lm, evaluate_lm, load_lm_module

    if not is_causal_base(request.base_model):
        raise BaseModelError(f"base model {request.base_model!r} is not a causal LM: external adapters are "
                             "registered for causal LMs only")
    selection = _declared_selection(factory, request.datanet_ids, contribution_ids)
    if selection.task != CAUSAL_TASK:
        raise ExternalAdapterError(f"Datanets {list(request.datanet_ids)} hold {selection.task} rows: external "
                                   "adapters are registered for causal-LM (text, prompt/completion) Datanets only")
    base = load_causal_base_model(request.base_model)
    check_against_base(adapter, base.model)
    settings = adapter.settings(request.settings.max_length)
    if settings.max_length > base.max_positions:
        raise ExternalAdapterError(f"max_length {settings.max_length} exceeds the base's {base.max_positions} positions")
    config = {"format": CAUSAL_ADAPTER_FORMAT, "task": CAUSAL_TASK, "base_model": request.base_model,
              "lora": settings.to_dict()}
    model, _ = load_lm_module(adapter.adapter_bytes, config)
    examples = selection.lm_examples()
    if progress is not None:
        progress({"stage": "index", "examples": len(examples)})
    # Not a verification (these rows trained it, by the builder's word), a plausibility signal: an
    # adapter trained on the declared rows should fit them better than the bare base does.
    fit = {"loss": evaluate_lm(model, base, examples, settings)["eval_loss"],
           "base_loss": evaluate_lm(build_lora_lm(base, settings), base, examples, settings)["eval_loss"]}
    index_settings = replace(request.index_settings, snapshots=1)  # an external adapter comes without its run
    index = build_lm_index(model, base, examples, settings.max_length, index_settings)
    span_bytes = build_lm_span_index(base, examples, settings.max_length).to_bytes()
    entries = selection.lineage()
    summary = selection.summary()
    training_config = {
        "base_model": request.base_model,
        "task": CAUSAL_TASK,
        "labels": [],
        "trained_by": TRAINED_EXTERNALLY,
        "lora": {"rank": adapter.rank, "alpha": adapter.alpha, "target_modules": list(adapter.target_modules)},
        "peft_config": adapter.peft_config,
        "datanet_ids": list(request.datanet_ids),
        "selection": "declared contributions, every row",
        "index": {**asdict(index_settings), "max_length": settings.max_length},
    }
    manifest = Manifest(
        model_name=request.name, base_model=request.base_model, task=CAUSAL_TASK, labels=(),
        datanet_ids=tuple(request.datanet_ids), training_config=training_config,
        config_hash=config_hash(training_config), contributions=entries, lineage_root=lineage_root(entries),
        adapter_cid=factory.store.put(adapter.adapter_bytes), adapter_hash=sha256_0x(adapter.adapter_bytes),
        adapter_config=config, index_cid=factory.store.put(index.to_bytes()),
        metrics={"per_datanet": summary, "declared_rows": fit},  # no training ran here: no losses, no speed
        selection={"cid": factory.freeze(selection), "held_out": {}, "per_datanet": summary},
        span_index_cid=factory.store.put(span_bytes), span_index_sha256=sha256_0x(span_bytes)[2:],
        parent_id=request.parent_id, trained_by=TRAINED_EXTERNALLY,
    )
    return manifest, factory.store.put(manifest.to_bytes())


def _declared_selection(factory: ModelFactory, datanet_ids: tuple[int, ...],
                        contribution_ids: tuple[int, ...] | None) -> Any:
    """Every row of the declared contributions, each approved and inside the named Datanets."""
    if contribution_ids is not None:
        if not contribution_ids:
            raise ExternalAdapterError("name at least one contribution the adapter was trained on")
        total = int(factory.client.call(factory.contracts.datanets.functions.contributionCount()))
        for cid in sorted(set(contribution_ids)):
            if not 0 < cid <= total:
                raise ExternalAdapterError(f"contribution {cid} does not exist")
            record = factory.datanets.contribution(cid)
            if record.datanet_id not in datanet_ids:
                raise ExternalAdapterError(f"contribution {cid} belongs to Datanet {record.datanet_id}, not to "
                                           f"Datanets {list(datanet_ids)}")
            if record.status.name != "APPROVED":
                raise ExternalAdapterError(f"contribution {cid} is {record.status.name.lower()}, not approved: "
                                           "only approved contributions can be part of a lineage")
        return factory.select(datanet_ids, only=tuple(sorted(set(contribution_ids))))
    return factory.select(datanet_ids)

