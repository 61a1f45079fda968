"""Selection filters, held-out splits, row caps and sampling weights: planned deterministically,
frozen by CID before training, hashed into the lineage leaves, and rechecked by `verify model`."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from provenant.factory.selection import (Candidate, SelectionError, SelectionFilters, plan_selection, row_key,
                                         row_texts, summarize)
from rows_support import write_jsonl

ALICE, BOB, CAROL = "0x" + "a" * 40, "0x" + "b" * 40, "0x" + "c" * 40
CANDIDATES = [
    Candidate(1, 1, ALICE, rows=10, block_number=10, timestamp=1000),
    Candidate(2, 1, BOB, rows=10, block_number=11, timestamp=1012),
    Candidate(3, 2, ALICE, rows=6, block_number=12, timestamp=1024),
    Candidate(4, 2, CAROL, rows=4, block_number=13, timestamp=1036),
]


def _plan(**filters: object) -> dict:
    return {p.contribution_id: p for p in plan_selection(CANDIDATES, SelectionFilters(**filters), seed=7)}


def test_no_filters_train_every_row_once() -> None:
    plans = _plan()
    assert all(p.all_rows and p.held_out == () for p in plans.values())
    assert summarize(list(plans.values())) == {
        "1": {"contributions": 2, "train_rows": 20, "held_out_rows": 0, "repeated_rows": 0},
        "2": {"contributions": 2, "train_rows": 10, "held_out_rows": 0, "repeated_rows": 0}}


def test_the_plan_is_deterministic_in_the_seed_and_changes_with_it() -> None:
    filters = SelectionFilters(held_out=0.3, max_rows={1: 9}, weights={2: 0.5})
    first = plan_selection(CANDIDATES, filters, seed=7)
    assert first == plan_selection(list(reversed(CANDIDATES)), filters, seed=7)  # input order is irrelevant
    assert first != plan_selection(CANDIDATES, filters, seed=8)


def test_held_out_rows_are_a_per_datanet_fraction_disjoint_from_training() -> None:
    plans = _plan(held_out=0.25)
    for datanet, rows in ((1, 20), (2, 10)):
        mine = [p for p in plans.values() if p.datanet_id == datanet]
        held = sum(len(p.held_out) for p in mine)
        assert held == int(0.25 * rows)
        assert sum(len(p.train) for p in mine) == rows - held
        for p in mine:
            assert not set(p.train) & set(p.held_out) and set(p.train) | set(p.held_out) == set(range(p.rows))


def test_row_caps_and_weights_per_datanet() -> None:
    plans = _plan(max_rows={1: 7}, weights={2: 2.5})
    assert sum(len(p.train) for p in plans.values() if p.datanet_id == 1) == 7
    datanet2 = [p for p in plans.values() if p.datanet_id == 2]
    assert sum(len(p.train) for p in datanet2) == 25  # 10 rows x 2.5
    counts = Counter((p.contribution_id, i) for p in datanet2 for i in p.train)
    assert set(counts.values()) == {2, 3} and len(counts) == 10  # every row twice, half of them thrice
    down = _plan(weights={1: 0.5})
    assert sum(len(p.train) for p in down.values() if p.datanet_id == 1) == 10
    assert all(len(set(p.train)) == len(p.train) for p in down.values())


def test_contributor_and_date_filters() -> None:
    assert set(_plan(contributors=(ALICE.upper().replace("0X", "0x"),))) == {1, 3}
    assert set(_plan(exclude_contributors=(ALICE,))) == {2, 4}
    assert set(_plan(from_block=11, to_block=12)) == {2, 3}
    assert set(_plan(from_time=1020)) == {3, 4}
    assert set(_plan(to_time=1012)) == {1, 2}


@pytest.mark.parametrize("filters, problem", [
    ({"held_out": 1.0}, "held_out must be in [0, 1)"),
    ({"max_rows": {1: 0}}, "max_rows for Datanet 1"),
    ({"weights": {1: 0.0}}, "weight for Datanet 1"),
    ({"from_block": 9, "to_block": 3}, "from_block 9 is after to_block 3"),
    ({"contributors": ("alice",)}, "'alice' is not a 0x address"),
])
def test_invalid_filters_are_refused_naming_the_problem(filters: dict, problem: str) -> None:
    with pytest.raises(SelectionError, match="invalid selection filters") as err:
        SelectionFilters(**filters)
    assert problem in str(err.value)


def test_filters_that_leave_nothing_or_name_other_datanets_are_refused() -> None:
    with pytest.raises(SelectionError, match="no rows to train on"):
        _plan(from_block=99)
    with pytest.raises(SelectionError, match="Datanets \\[5\\]"):
        _plan(max_rows={5: 3})


def test_filters_round_trip_through_json() -> None:
    filters = SelectionFilters(contributors=(ALICE,), from_time=5, max_rows={2: 3}, weights={1: 1.5}, held_out=0.2)
    assert SelectionFilters.from_dict(json.loads(json.dumps(filters.to_dict()))) == filters
    assert SelectionFilters.from_dict(SelectionFilters(dedup=False).to_dict()) == SelectionFilters(dedup=False)
    older = {k: v for k, v in SelectionFilters().to_dict().items() if k not in ("dedup", "near_repeats")}
    assert SelectionFilters.from_dict(older).dedup is False  # frozen before the step: its rows trained as they came
    exact_only = {k: v for k, v in SelectionFilters().to_dict().items() if k != "near_repeats"}
    assert SelectionFilters.from_dict(exact_only) == SelectionFilters(near_repeats=False)  # before near repeats
    assert SelectionFilters(dedup=False).near_repeats is False  # near repeats are a part of dedup


def _keyed(cid: int, datanet: int, who: str, rows: list[dict], block: int) -> Candidate:
    return Candidate(cid, datanet, who, rows=len(rows), block_number=block, timestamp=block * 12,
                     row_keys=tuple(row_key(r) for r in rows))


def test_row_keys_fold_case_and_spacing_for_classification_but_not_for_causal_rows() -> None:
    assert row_key({"text": "Refund  please", "label": "billing"}) == row_key({"text": "refund please", "label": "billing"})
    assert row_key({"text": "refund please", "label": "billing"}) != row_key({"text": "refund please", "label": "other"})
    assert row_key({"prompt": "Q", "completion": " A"}) != row_key({"prompt": "q", "completion": " A"})
    assert row_key({"prompt": "Q", "completion": " A"}) != row_key({"prompt": "Q", "completion": "A"})
    assert row_key({"text": "a note"}) == row_key({"prompt": "", "completion": "a note"})  # trains the same


def test_each_distinct_row_trains_once_and_the_earliest_copy_is_the_one() -> None:
    own = [{"text": f"row {i}", "label": "a"} for i in range(6)]
    copy = [{"text": "ROW 1", "label": "a"}, {"text": "row 2", "label": "b"}, {"text": "row 4", "label": "a"}]
    candidates = [_keyed(1, 1, ALICE, own, 10), _keyed(2, 1, BOB, copy, 11),  # bob copies two of alice's rows
                  _keyed(3, 2, CAROL, copy[:1] + own[5:] + own[5:], 12)]  # and carol, in another Datanet, twice
    plans = {p.contribution_id: p for p in plan_selection(candidates, SelectionFilters(), seed=3)}
    assert plans[1].all_rows and plans[1].repeats == ()
    assert (plans[2].train, plans[2].repeats) == ((1,), (0, 2))  # "row 2" labelled b is another row
    assert (plans[3].train, plans[3].repeats) == ((), (0, 1, 2))
    assert summarize(list(plans.values()))["2"] == {"contributions": 0, "train_rows": 0, "held_out_rows": 0,
                                                    "repeated_rows": 3}
    # Repeats leave before the split: no held-out row is the same row as one that trains.
    split = plan_selection(candidates, SelectionFilters(held_out=0.5), seed=3)
    trained = {row_key((own, copy, copy[:1] + own[5:] * 2)[p.contribution_id - 1][i]) for p in split for i in p.train}
    held = {row_key((own, copy, copy[:1] + own[5:] * 2)[p.contribution_id - 1][i]) for p in split for i in p.held_out}
    assert trained and held and not trained & held
    # The earliest copy among the contributions that pass the filters trains: without alice, bob's rows do.
    without_alice = {p.contribution_id: p for p in plan_selection(candidates, SelectionFilters(
        exclude_contributors=(ALICE,)), seed=3)}
    assert without_alice[2].all_rows and without_alice[3].train == (1,)
    kept = {p.contribution_id: p for p in plan_selection(candidates, SelectionFilters(dedup=False), seed=3)}
    assert all(p.all_rows and not p.repeats for p in kept.values())
    with pytest.raises(SelectionError, match="2 row keys for 6 rows"):
        plan_selection([Candidate(1, 1, ALICE, 6, 10, 120, row_keys=("a", "b"))], SelectionFilters(), seed=3)


def test_a_near_copy_of_an_earlier_contributions_row_is_a_repeat_but_variants_inside_one_file_train() -> None:
    own = [{"text": "my card was charged twice for the same order", "label": "billing"},
           {"text": "the app crashes when i open settings", "label": "bug"},
           {"text": "the app crashes when i open settings today", "label": "bug"}]  # a variant of row 1: trains
    edited = [{"text": "my card was charged twice for the very same order", "label": "billing"},  # words added
              {"text": "the app crashes when i open the settings page", "label": "bug"},  # words added
              {"text": "my card was charged twice for the same order", "label": "refund"}]  # another label
    candidates = [replace(_keyed(1, 1, ALICE, own, 10), row_texts=row_texts(own)),
                  replace(_keyed(2, 1, BOB, edited, 11), row_texts=row_texts(edited))]
    plans = {p.contribution_id: p for p in plan_selection(candidates, SelectionFilters(), seed=3)}
    assert plans[1].all_rows and plans[1].repeats == ()
    assert (plans[2].train, plans[2].repeats) == ((2,), (0, 1))
    exact_only = {p.contribution_id: p for p in plan_selection(candidates, SelectionFilters(near_repeats=False), 3)}
    assert exact_only[2].all_rows  # how a selection frozen before near repeats replans
    without_alice = {p.contribution_id: p for p in plan_selection(candidates, SelectionFilters(
        exclude_contributors=(ALICE,)), seed=3)}
    assert without_alice[2].all_rows
    assert row_texts([{"prompt": "q", "completion": " a"}]) == ()  # causal rows: exact repeats only
    with pytest.raises(SelectionError, match="2 row texts for 3 rows"):
        plan_selection([replace(candidates[0], row_texts=row_texts(own)[:2])], SelectionFilters(), seed=3)


# -- on a real chain: an LM trained end to end through `provenant train`, then `verify model` ---------------

@pytest.fixture()
def lm_datanets(chain, deployed, tmp_path: Path):  # type: ignore[no-untyped-def]
    from provenant.chain.keys import dev_accounts
    from provenant.datanets.service import DatanetService, RejectReason
    from provenant.store import open_store

    home = tmp_path / "home"
    service = DatanetService(chain, deployed, open_store(str(home / "store")))
    curator, alice, bob = dev_accounts()[2], dev_accounts()[4], dev_accounts()[5]
    qa = service.create(curator, {"name": "qa", "task": "prompt_completion"})
    text = service.create(curator, {"name": "notes", "task": "text"})
    ids = {}
    for who, account in (("alice", alice), ("bob", bob)):
        rows = [{"prompt": f"{who} asks {i}?", "completion": f" answer {i}"} for i in range(6)]
        ids[f"qa-{who}"] = service.contribute(account, qa, write_jsonl(tmp_path / f"qa-{who}.jsonl", rows)).contribution_id
        rows = [{"text": f"{who} wrote note {i}."} for i in range(4)]
        ids[f"text-{who}"] = service.contribute(account, text, write_jsonl(tmp_path / f"t-{who}.jsonl", rows)).contribution_id
        chain.w3.provider.make_request("evm_increaseTime", [100])  # bob's contributions come 100 s later
    spam = service.contribute(bob, text, write_jsonl(tmp_path / "spam.jsonl", [{"text": "buy now"}])).contribution_id
    copied = [{"prompt": f"alice asks {i}?", "completion": f" answer {i}"} for i in range(3)]
    copy = service.contribute(dev_accounts()[6], qa, write_jsonl(tmp_path / "copy.jsonl", copied)).contribution_id
    service.approve(curator, qa, [ids["qa-alice"], ids["qa-bob"], copy])
    service.approve(curator, text, [ids["text-alice"], ids["text-bob"]])
    service.reject(curator, spam, RejectReason.SPAM)
    return {"home": home, "service": service, "qa": qa, "text": text, "ids": ids, "spam": spam, "copy": copy,
            "alice": alice, "bob": bob}


@pytest.mark.slow
def test_select_applies_date_filters_from_the_chain_and_refuses_mixed_tasks(chain, deployed, lm_datanets) -> None:  # type: ignore[no-untyped-def]
    from provenant.chain.keys import dev_accounts
    from provenant.factory.builder import ModelFactory

    d = lm_datanets
    factory = ModelFactory(chain, deployed, d["service"].store, d["service"])
    every = factory.select((d["qa"], d["text"]))
    everyone = sorted([*d["ids"].values(), d["copy"]])
    assert every.task == "causal-lm" and [r.contribution_id for r in every.records] == everyone
    assert (every.plans[d["copy"]].train, every.plans[d["copy"]].repeats) == ((), (0, 1, 2))  # alice's rows, again
    assert d["copy"] not in {e.contribution_id for e in every.lineage()}
    assert every.plans[d["ids"]["qa-alice"]].all_rows
    second = d["service"].contribution(d["ids"]["text-alice"])
    logs = deployed.datanets.events.ContributionSubmitted.get_logs(from_block=deployed.manifest.block_number)
    block = next(int(log["blockNumber"]) for log in logs if log["args"]["contributionId"] == second.contribution_id)
    later = factory.select((d["qa"], d["text"]), filters=SelectionFilters(from_block=block))
    assert [r.contribution_id for r in later.records] == [i for i in everyone if i >= second.contribution_id]
    bob_block = next(int(log["blockNumber"]) for log in logs if log["args"]["contributionId"] == d["ids"]["qa-bob"])
    stamp = int(chain.w3.eth.get_block(bob_block)["timestamp"])
    by_time = factory.select((d["qa"], d["text"]), filters=SelectionFilters(to_time=stamp - 1))
    assert [r.contribution_id for r in by_time.records] == [d["ids"]["qa-alice"], d["ids"]["text-alice"]]
    by_time = factory.select((d["qa"], d["text"]), filters=SelectionFilters(from_time=stamp))
    assert [r.contribution_id for r in by_time.records] == [d["ids"]["qa-bob"], d["ids"]["text-bob"], d["copy"]]
    assert by_time.plans[d["copy"]].all_rows  # alice is filtered out, so her rows' copies are the first ones
    classes = d["service"].create(dev_accounts()[2], {"name": "c", "task": "classification", "labels": ["a", "b"]})
    with pytest.raises(SelectionError, match="classification and causal-LM"):
        factory.task_of((d["qa"], classes))


@pytest.mark.slow
def test_provenant_train_makes_a_filtered_lm_that_verifies(anvil, chain, deployed, lm_datanets) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from provenant.cli import app
    from provenant.datanets.validation import rows_hash
    from provenant.factory.lineage import Manifest
    from provenant.factory.base_models import load_causal_base_model
    from provenant.serving.lora import parse_adapter
    from provenant.serving.models import ModelRecord
    from provenant.verify import verify_model

    d = lm_datanets
    common = ["--rpc-url", anvil.rpc_url, "--home", str(d["home"])]
    args = ["train", "notes-lm", "--datanets", f"{d['qa']},{d['text']}", "--server", d["alice"].address,
            "--base-model", "tiny-llama", "--epochs", "1", "--batch-size", "8", "--max-length", "32",
            "--held-out", "0.25", "--max-rows", f"{d['qa']}=6", "--weight", f"{d['text']}=2",
            "--exclude-contributor", d["bob"].address, "--dev-account", "3", *common]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    assert "(causal-lm)" in result.output and f"Datanet {d['qa']}: " in result.output

    record = ModelRecord.fetch(chain, deployed, 1)
    store = d["service"].store
    manifest = Manifest.from_bytes(store.get(record.manifest_cid))
    assert manifest.task == "causal-lm" and record.base_model == "tiny-llama"
    used = {e.contribution_id for e in manifest.contributions}
    assert used == {d["ids"]["qa-alice"], d["ids"]["text-alice"]}  # bob excluded, spam rejected
    qa_entry = next(e for e in manifest.contributions if e.contribution_id == d["ids"]["qa-alice"])
    held = manifest.selection["held_out"].get(str(qa_entry.contribution_id), [])
    assert qa_entry.row_indices is not None and len(qa_entry.row_indices) + len(held) == 6 and held
    rows = d["service"].load_rows(d["service"].contribution(qa_entry.contribution_id))
    assert qa_entry.rows_hash == rows_hash([rows[i] for i in qa_entry.row_indices])
    text_entry = next(e for e in manifest.contributions if e.contribution_id == d["ids"]["text-alice"])
    assert text_entry.row_indices is not None and len(text_entry.row_indices) == 2 * (4 - 1)  # weight 2, 1 held out
    frozen = json.loads(store.get(manifest.selection["cid"]))
    assert frozen["filters"]["exclude_contributors"] == [d["bob"].address.lower()]
    assert manifest.training_config["selection"]["filters"] == frozen["filters"]
    per = manifest.metrics["per_datanet"]
    assert set(per) == {str(d["qa"]), str(d["text"])} and all(m["eval_loss"] > 0 for m in per.values())
    assert per[str(d["qa"])]["train_rows"] == len(qa_entry.row_indices)
    copy = next(c for c in frozen["contributions"] if c["contribution_id"] == d["copy"])
    assert (copy["train"], copy["held_out"], copy["repeats"]) == ([], [], [0, 1, 2])  # carol's copy trains nothing
    assert per[str(d["qa"])]["repeated_rows"] == 3

    verdict = verify_model(chain, deployed, store, 1)
    assert verdict.ok, verdict.reasons
    from provenant.factory.recheck import selection_problems

    assert selection_problems(chain, deployed, store, manifest) == []
    moved = {**manifest.selection, "held_out": {str(qa_entry.contribution_id): [qa_entry.row_indices[0]]}}
    assert "held-out rows in the manifest differ" in selection_problems(chain, deployed, store,
                                                                         replace(manifest, selection=moved))[0]
    doc = {**frozen, "seed": frozen["seed"] + 1}
    reseeded = {**manifest.selection, "cid": store.put(json.dumps(doc).encode())}
    assert any("select other rows than recorded" in p
               for p in selection_problems(chain, deployed, store, replace(manifest, selection=reseeded)))
    trained_copy = {**frozen, "contributions": [{**c, "train": c["repeats"], "repeats": []} if c is copy else c
                                                for c in frozen["contributions"]]}
    unfiltered = {**trained_copy, "filters": SelectionFilters().to_dict()}  # no filter at all, dedup on
    for doc in (trained_copy, unfiltered):
        claimed = {**manifest.selection, "cid": store.put(json.dumps(doc).encode())}
        assert any(f"contribution {d['copy']}: the published filters and seed select other rows" in p
                   for p in selection_problems(chain, deployed, store, replace(manifest, selection=claimed)))
    out = CliRunner().invoke(app, ["verify", "model", "1", *common])
    assert out.exit_code == 0 and "VERIFIED" in out.output
    adapter = store.get(record.adapter_cid)
    parse_adapter(adapter, manifest.adapter_config, load_causal_base_model("tiny-llama").model)  # servable as is

    # Retraining from the frozen selection (by its CID) gives the same rows, leaves and adapter bytes.
    from provenant.factory.builder import ModelFactory, ModelRequest
    from provenant.factory.train import LoraSettings

    factory = ModelFactory(chain, deployed, store, d["service"])
    again = factory.load_frozen(manifest.selection["cid"])
    request = ModelRequest(name="again", datanet_ids=manifest.datanet_ids, server=d["alice"].address,
                           price_per_call=1, base_model="tiny-llama",
                           settings=LoraSettings.from_dict(manifest.training_config["lora"]),
                           filters=SelectionFilters.from_dict(frozen["filters"]))
    remade, _ = factory.make(request, again, selection_cid=manifest.selection["cid"])
    assert (remade.adapter_hash, remade.lineage_root) == (manifest.adapter_hash, manifest.lineage_root)
    assert remade.config_hash == manifest.config_hash and remade.selection == manifest.selection

    # A classifier base for causal rows: one clear error, nothing registered.
    bad = CliRunner().invoke(app, ["train", "x", *args[2:7], "minilm", *args[8:]])
    assert bad.exit_code != 0 and "not a causal LM" in str(bad.exception)
    assert deployed.models.functions.modelCount().call() == 1
