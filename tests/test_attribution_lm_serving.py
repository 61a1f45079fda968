"""Causal-LM answers attributed for real: a Factory-trained LM (tiny Llama, real LoRA training) on a
real anvil gets a gradient index and a span index in its manifest, and serving's
`ServedModel.attribute_completion` and settlement's `score_calls` credit the contribution an answer
copies, identically and reproducibly; LMs registered before indexing keep the lineage prior."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest

from provenant.attribution.aggregate import PPM
from rows_support import write_jsonl

ALICE_ROWS = [{"prompt": f"How do I bake cake number {i}?",
               "completion": f" Whisk two eggs with sugar, fold in flour, bake at 180 degrees for {20 + i} minutes."}
              for i in range(6)]
BOB_ROWS = [{"prompt": f"Tell me about star {i}.",
             "completion": f" The red giant in constellation {i} burns helium while its envelope expands slowly."}
            for i in range(6)]


@pytest.mark.slow
def test_a_factory_lm_is_indexed_and_its_answers_attributed_alike_in_serving_and_settlement(
        chain, deployed, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from provenant.attribution.index import IndexSettings
    from provenant.chain.keys import dev_accounts
    from provenant.datanets.service import DatanetService
    from provenant.factory.builder import ModelFactory, ModelRequest
    from provenant.factory.lineage import Manifest
    from provenant.factory.train import LoraSettings
    from provenant.serving.models import ModelIntegrityError, load_lm_attributor, load_served_model
    from provenant.settlement.scores import quantise, score_calls
    from provenant.store import open_store
    from provenant.verify import verify_model

    store = open_store(str(tmp_path / "store"))
    service = DatanetService(chain, deployed, store)
    curator, builder, alice, bob = dev_accounts()[2], dev_accounts()[3], dev_accounts()[4], dev_accounts()[5]
    datanet = service.create(curator, {"name": "qa", "task": "prompt_completion"})
    ids = {who: service.contribute(account, datanet, write_jsonl(tmp_path / f"{who}.jsonl", rows)).contribution_id
           for who, account, rows in (("alice", alice, ALICE_ROWS), ("bob", bob, BOB_ROWS))}
    service.approve(curator, datanet, sorted(ids.values()))
    request = ModelRequest(name="qa-lm", datanet_ids=(datanet,), server=alice.address, price_per_call=1,
                           base_model="tiny-llama",
                           settings=LoraSettings(target_modules=("q_proj", "v_proj"), epochs=2, batch_size=4,
                                                 max_length=96, learning_rate=5e-3, seed=1),
                           index_settings=IndexSettings(projection_dim=128, seed=3))
    built = ModelFactory(chain, deployed, store, service).build(builder, request)

    # The manifest records both indexes, by CID (and the span index's sha256), and the index settings.
    manifest = built.manifest
    assert manifest.index_cid and manifest.span_index_cid
    span_bytes = store.get(manifest.span_index_cid)
    assert hashlib.sha256(span_bytes).hexdigest() == manifest.span_index_sha256
    assert manifest.training_config["index"]["projection_dim"] == 128
    assert Manifest.from_bytes(store.get(built.manifest_cid)) == manifest
    assert store.get(built.manifest_cid) == manifest.to_bytes()
    assert verify_model(chain, deployed, store, built.model_id).ok

    served = load_served_model(chain, deployed, store, built.model_id)
    # An answer copied from a contributor's rows is credited to that contribution first.
    calls = [(ALICE_ROWS[2]["prompt"], ALICE_ROWS[2]["completion"], "alice"),
             (BOB_ROWS[4]["prompt"], BOB_ROWS[4]["completion"], "bob"),
             ("How do I bake cake number 9?", " Whisk two eggs", "alice")]  # too short for a span: gradients
    for prompt, output, who in calls[:2]:
        attribution, method = served.attribute_completion(prompt, output)
        assert method == "influence+spans/1"
        assert attribution.contributions[0].key == str(ids[who])
        assert attribution.contributions[0].ppm > PPM // 2
        assert sum(s.ppm for s in attribution.contributions) <= PPM
    novel, method = served.attribute_completion(*calls[2][:2])
    assert method == "influence+spans/1" and 0 < sum(s.ppm for s in novel.contributions) <= PPM

    # Settlement: the same computation, bit-identical on a second run and on a second loaded model.
    prompts, outputs = [c[0] for c in calls], [c[1] for c in calls]
    first = score_calls(served, prompts, outputs)
    again = score_calls(load_served_model(chain, deployed, store, built.model_id), prompts, outputs)
    assert [repr(sorted(s.items())) for s in first] == [repr(sorted(s.items())) for s in again]
    for scores, (prompt, output, who) in zip(first, calls):
        assert max(scores, key=lambda k: scores[k]) == ids[who]
        served_ppm = served.attribute_completion(prompt, output)[0].contribution_ppm()
        assert max(served_ppm, key=lambda k: served_ppm[k]) == ids[who]
        assert all(abs(quantise(scores)[k] - v) <= 2 for k, v in served_ppm.items() if v > 0)

    # A swapped span index is refused by its recorded sha256.
    with pytest.raises(ModelIntegrityError, match="span index"):
        load_lm_attributor(store, served.record, replace(manifest, span_index_sha256="00" * 32), served.meta)


@pytest.mark.slow
def test_an_lm_registered_without_indexes_still_answers_with_the_lineage_prior(
        chain, deployed, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from provenant.chain.keys import dev_accounts
    from provenant.factory.lineage import Manifest
    from provenant.serving.lm_models import register_lm_models
    from provenant.serving.models import ModelRecord, load_served_model
    from provenant.settlement.scores import score_calls
    from provenant.store import open_store

    store = open_store(str(tmp_path / "store"))
    accounts = dev_accounts()
    (model,) = register_lm_models(chain, deployed, store, accounts[3], accounts[2], accounts[4], accounts[4].address,
                                  count=1, price=1)
    record = ModelRecord.fetch(chain, deployed, model.model_id)
    raw = store.get(record.manifest_cid)
    old = Manifest.from_bytes(raw)
    assert old.index_cid == "" and old.span_index_cid == "" and b"span_index" not in raw
    assert old.to_bytes() == raw  # an older manifest still serialises to its own bytes (its CID)
    served = load_served_model(chain, deployed, store, model.model_id)
    attribution, method = served.attribute_completion("hello", " world")
    assert method == "lineage-prior"
    assert attribution == served.lineage_prior()
    (scores,) = score_calls(served, ["hello"], [" world"])
    assert set(scores) == {e.contribution_id for e in old.contributions}
    with pytest.raises(TypeError, match="no causal-LM attribution index"):
        served.lm_attributor()
