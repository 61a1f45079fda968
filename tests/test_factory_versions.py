"""Model versions and adapters trained elsewhere, on a real anvil with the config-built tiny Llama:
a new version records its parent in the manifest and on chain, `verify model` checks both; a peft
adapter trained by a plain script registers with its declared lineage, marked external."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save
from typer.testing import CliRunner

from provenant.chain.keys import dev_accounts
from provenant.factory.external import ExternalAdapterError, check_against_base, read_peft_adapter
from rows_support import write_jsonl

pytestmark = pytest.mark.slow
Q_A = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"


@pytest.fixture(scope="module")
def peft_adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What a builder's own script writes: peft LoRA on the base, a few AdamW steps, save_pretrained."""
    from peft import LoraConfig, get_peft_model

    from provenant.factory.base_models import build_tiny_llama

    torch.manual_seed(0)
    model = get_peft_model(build_tiny_llama(), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                          task_type="CAUSAL_LM"))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.tensor([[256, *b"alice wrote note 1.", 257]])
    for _ in range(3):
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    out = tmp_path_factory.mktemp("peft") / "adapter"
    model.save_pretrained(out)
    return out


@pytest.fixture()
def notes(chain, deployed, tmp_path: Path):  # type: ignore[no-untyped-def]
    from provenant.datanets.service import DatanetService
    from provenant.store import open_store

    home = tmp_path / "home"
    service = DatanetService(chain, deployed, open_store(str(home / "store")))
    curator = dev_accounts()[2]
    text = service.create(curator, {"name": "notes", "task": "text"})
    ids = [service.contribute(dev_accounts()[4 + i], text,
                              write_jsonl(tmp_path / f"n{i}.jsonl", [{"text": f"{w} wrote note {j}."} for j in range(4)])
                              ).contribution_id for i, w in enumerate(("alice", "bob"))]
    service.approve(curator, text, ids)
    classes = service.create(curator, {"name": "c", "task": "classification", "labels": ["a", "b"]})
    labelled = service.contribute(dev_accounts()[4], classes, write_jsonl(tmp_path / "c.jsonl", [
        {"text": "one", "label": "a"}, {"text": "two", "label": "b"}]))
    service.approve(curator, classes, [labelled.contribution_id])
    return {"home": home, "service": service, "text": text, "ids": ids, "classes": classes}


def test_versions_keep_their_parent_and_external_adapters_register_with_lineage(
        anvil, chain, deployed, notes, peft_adapter: Path) -> None:  # type: ignore[no-untyped-def]
    from provenant.cli import app
    from provenant.factory.base_models import load_causal_base_model
    from provenant.factory.builder import ModelFactory
    from provenant.factory.lineage import Manifest
    from provenant.serving.lora import parse_adapter
    from provenant.serving.models import ModelRecord, load_lm_attributor
    from provenant.verify import verify_model

    d, store, cli = notes, notes["service"].store, CliRunner()
    owner, stranger = "3", "6"
    common = ["--rpc-url", anvil.rpc_url, "--home", str(d["home"])]
    train = ["--datanets", str(d["text"]), "--server", dev_accounts()[3].address, "--base-model", "tiny-llama",
             "--epochs", "1", "--batch-size", "8", "--max-length", "24", "--held-out", "0", *common]
    first = cli.invoke(app, ["train", "notes-v1", *train, "--dev-account", owner])
    assert first.exit_code == 0, (first.output, first.exception)

    # Parents the registry would refuse are refused before any training, naming why.
    for account, parent, why in ((stranger, 1, "belongs to"), (owner, 9, "does not exist")):
        bad = cli.invoke(app, ["train", "notes-x", *train, "--dev-account", account, "--parent", str(parent)])
        assert bad.exit_code != 0 and why in str(bad.exception)

    # An adapter from a plain peft script, registered as a new version of model 1 on one declared contribution.
    ext = cli.invoke(app, ["register-adapter", "notes-peft", str(peft_adapter), "--base-model", "tiny-llama",
                           "--datanets", str(d["text"]), "--contributions", str(d["ids"][0]), "--server",
                           dev_accounts()[3].address, "--parent", "1", "--max-length", "24", "--dev-account", owner,
                           *common])
    assert ext.exit_code == 0, (ext.output, ext.exception)
    assert "model 2 (externally trained, a version of model 1)" in ext.output
    record = ModelRecord.fetch(chain, deployed, 2)
    manifest = Manifest.from_bytes(store.get(record.manifest_cid))
    file = (peft_adapter / "adapter_model.safetensors").read_bytes()
    assert record.parent_id == manifest.parent_id == 1 and manifest.external
    assert store.get(record.adapter_cid) == file and record.adapter_hash == "0x" + hashlib.sha256(file).hexdigest()
    assert [e.contribution_id for e in manifest.contributions] == [d["ids"][0]]
    assert manifest.training_config["trained_by"] == "external" and manifest.index_cid and manifest.span_index_cid
    fit = manifest.metrics["declared_rows"]  # the script trained on alice's notes: it fits them better than the base
    assert 0 < fit["loss"] < fit["base_loss"]
    parse_adapter(file, manifest.adapter_config, load_causal_base_model("tiny-llama").model)  # servable as is
    load_lm_attributor(store, record, manifest, {})  # its gradient index fits the adapter: attributable too
    verdict = verify_model(chain, deployed, store, 2)
    assert verdict.ok, verdict.reasons
    assert any("parent model 1 (notes-v1) exists" in c for c in verdict.checks)
    out = cli.invoke(app, ["verify", "model", "2", *common])
    assert out.exit_code == 0 and "not reproduced here" in out.output and "VERIFIED" in out.output
    v1 = Manifest.from_bytes(store.get(ModelRecord.fetch(chain, deployed, 1).manifest_cid))
    assert v1.parent_id == 0 and not v1.external and b"parent_id" not in v1.to_bytes()  # old bytes unchanged
    assert "no parent model" in " ".join(verify_model(chain, deployed, store, 1).checks)

    # A Factory-trained version of the external one.
    third = cli.invoke(app, ["train", "notes-v3", *train, "--dev-account", owner, "--parent", "2"])
    assert third.exit_code == 0 and "a version of model 2" in third.output, (third.output, third.exception)
    assert ModelRecord.fetch(chain, deployed, 3).parent_id == 2 and verify_model(chain, deployed, store, 3).ok

    # A manifest and a chain that disagree on the parent: verify says so.
    factory = ModelFactory(chain, deployed, store, d["service"])
    orphan = replace(manifest, model_name="orphan", parent_id=0)
    request = replace(factory_request(manifest, "orphan"), parent_id=1)
    spec = list(factory._spec(request, orphan, store.put(orphan.to_bytes())))
    spec[9] = 1  # parentId on chain, while the manifest says none
    chain.transact(dev_accounts()[3], deployed.models.functions.registerModel(tuple(spec)))
    wrong = verify_model(chain, deployed, store, 4)
    assert not wrong.ok and "manifest names parent model none, the chain 1" in wrong.reasons

    # External adapters only for causal-LM Datanets, and only on contributions of the named Datanets.
    for datanets, contributions, why in ((str(d["classes"]), None, "hold classification rows"),
                                         (str(d["text"]), "99", "does not exist")):
        args = ["register-adapter", "x", str(peft_adapter), "--base-model", "tiny-llama", "--datanets", datanets,
                "--server", dev_accounts()[3].address, "--dev-account", owner, *common]
        bad = cli.invoke(app, args + (["--contributions", contributions] if contributions else []))
        assert bad.exit_code != 0
        assert why in str(bad.exception), bad.exception
    assert deployed.models.functions.modelCount().call() == 4


def factory_request(manifest, name: str):  # type: ignore[no-untyped-def]
    from provenant.factory.builder import ModelRequest

    return ModelRequest(name=name, datanet_ids=manifest.datanet_ids, server=dev_accounts()[3].address,
                        price_per_call=1, base_model=manifest.base_model)


def _rewrite(adapter: Path, tmp: Path, change) -> Path:  # type: ignore[no-untyped-def]
    state = dict(safetensors_load((adapter / "adapter_model.safetensors").read_bytes()))
    config = json.loads((adapter / "adapter_config.json").read_text())
    change(state, config)
    tmp.mkdir()
    (tmp / "adapter_model.safetensors").write_bytes(safetensors_save(state))
    (tmp / "adapter_config.json").write_text(json.dumps(config))
    return tmp


def test_adapters_that_do_not_fit_the_base_are_refused_naming_the_tensor(peft_adapter: Path, tmp_path: Path) -> None:
    from provenant.factory.base_models import load_causal_base_model

    base = load_causal_base_model("tiny-llama").model
    check_against_base(read_peft_adapter(peft_adapter), base)

    def widen(state, config):  # type: ignore[no-untyped-def]
        state[Q_A] = torch.zeros(4, 640)

    with pytest.raises(ExternalAdapterError, match=rf"tensor {Q_A} has shape \(4, 640\); the base model needs "
                                                   r"\(4, 512\)"):
        check_against_base(read_peft_adapter(_rewrite(peft_adapter, tmp_path / "wide", widen)), base)
    gone = "base_model.model.model.layers.3.self_attn.v_proj"
    with pytest.raises(ExternalAdapterError, match=rf"tensor {gone}.lora_A.weight is missing"):
        check_against_base(read_peft_adapter(_rewrite(
            peft_adapter, tmp_path / "gone", lambda s, c: [s.pop(f"{gone}.lora_A.weight"),
                                                           s.pop(f"{gone}.lora_B.weight")])), base)
    with pytest.raises(ExternalAdapterError, match=rf"tensor {gone}.lora_B.weight is missing \(its lora_A"):
        read_peft_adapter(_rewrite(peft_adapter, tmp_path / "half", lambda s, c: s.pop(f"{gone}.lora_B.weight")))
    with pytest.raises(ExternalAdapterError, match="tensor base_model.model.lm_head.weight: not a LoRA weight"):
        read_peft_adapter(_rewrite(peft_adapter, tmp_path / "head",
                                   lambda s, c: s.update({"base_model.model.lm_head.weight": torch.zeros(2, 2)})))
    with pytest.raises(ExternalAdapterError, match=rf"tensor {Q_A} has shape \(8, 512\); LoRA A must be"):
        read_peft_adapter(_rewrite(peft_adapter, tmp_path / "rank", lambda s, c: s.update({Q_A: torch.zeros(8, 512)})))
    with pytest.raises(ExternalAdapterError, match="lora_alpha must be a whole number"):
        read_peft_adapter(_rewrite(peft_adapter, tmp_path / "inf", lambda s, c: c.update(lora_alpha=float("inf"))))
    with pytest.raises(ExternalAdapterError, match="use_dora is set"):
        read_peft_adapter(_rewrite(peft_adapter, tmp_path / "dora", lambda s, c: c.update(use_dora=True)))
    alone = tmp_path / "alone.safetensors"
    alone.write_bytes((peft_adapter / "adapter_model.safetensors").read_bytes())
    with pytest.raises(ExternalAdapterError, match="no adapter_config.json beside"):
        read_peft_adapter(alone)


def test_jobs_api_refuses_selection_errors_and_foreign_parents_and_registers_external_adapters(
        anvil, chain, deployed, notes, peft_adapter: Path) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from provenant.api.app import AppSettings, create_app
    from test_api_app import _login
    from test_api_jobs import _wait

    d = notes
    with TestClient(create_app(AppSettings(rpc_url=anvil.rpc_url, home=d["home"], follow_chain=False))) as api:
        headers = _login(api, dev_accounts()[6])
        body = {"name": "n", "datanet_ids": [d["text"]], "base_model": "tiny-llama"}
        for extra, problem in (({"filters": {"max_rows": {"7": 3}}}, "name Datanets [7], which are not being"),
                               ({"datanet_ids": [d["text"], d["classes"]]}, "classification and causal-LM"),
                               ({"filters": {"contributors": [dev_accounts()[9].address]}}, "leave no rows"),
                               ({"parent_id": 5}, "parent model 5 does not exist")):
            r = api.post("/v1/jobs", json={**body, **extra}, headers=headers)
            assert r.status_code == 422 and problem in r.json()["detail"], (extra, r.text)

        files = {"adapter": base64.b64encode((peft_adapter / "adapter_model.safetensors").read_bytes()).decode(),
                 "adapter_config": json.loads((peft_adapter / "adapter_config.json").read_text())}
        external = {**body, "name": "peft-notes", "max_length": 24, **files}
        bad = {**files["adapter_config"], "r": 2}
        r = api.post("/v1/jobs/external", json={**external, "adapter_config": bad}, headers=headers)
        assert r.status_code == 422 and "has shape (4, 512); LoRA A must be (r, in_features) with r=2" in r.json()["detail"]
        r = api.post("/v1/jobs/external", json=external, headers=headers)
        assert r.status_code == 202, r.text
        job = _wait(api, r.json()["job_id"], ("succeeded", "failed"), timeout=120)
        assert job["state"] == "succeeded", job["error"]
        assert job["kind"] == "external" and job["result"]["trained_by"] == "external"
        spec = job["result"]["registration"]
        assert spec["contributionIds"] == d["ids"] and spec["parentId"] == 0
        file = (peft_adapter / "adapter_model.safetensors").read_bytes()
        assert spec["adapterHash"] == "0x" + hashlib.sha256(file).hexdigest()
