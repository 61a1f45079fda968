"""`attribution.report.report_model` on a real chain: a classifier built by the Model Factory with a
held-out split, valued on those held-out rows, written as a table, an SVG chart and JSON."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest

from provenant.factory.synthetic import synthetic_examples
from rows_support import write_jsonl


@pytest.mark.slow
def test_a_registered_classifier_is_valued_on_its_held_out_rows(chain, deployed, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from provenant.attribution.report import report_model
    from provenant.attribution.valuation import ValuationError
    from provenant.chain.keys import dev_accounts
    from provenant.datanets.service import DatanetService
    from provenant.factory.builder import ModelFactory, ModelRequest
    from provenant.factory.selection import SelectionFilters
    from provenant.factory.train import LoraSettings
    from provenant.store import open_store

    store = open_store(str(tmp_path / "store"))
    service = DatanetService(chain, deployed, store)
    curator, builder, alice, bob, mallory = (dev_accounts()[i] for i in (2, 3, 4, 5, 6))
    labels = ["finance", "sports", "weather"]
    news = service.create(curator, {"name": "news", "task": "classification", "labels": labels})
    rows = synthetic_examples(60, seed=4)
    good_a = [{"text": r.text, "label": r.label} for r in rows[:30]]
    good_b = [{"text": r.text, "label": r.label} for r in rows[30:]]
    # mallory's rows: real sentences, every label wrong
    bad = [{"text": r.text, "label": labels[(labels.index(r.label) + 1) % 3]} for r in synthetic_examples(18, seed=9)]
    ids = [service.contribute(who, news, write_jsonl(tmp_path / f"{name}.jsonl", data)).contribution_id
           for who, name, data in ((alice, "a", good_a), (bob, "b", good_b), (mallory, "m", bad))]
    service.approve(curator, news, ids)

    factory = ModelFactory(chain, deployed, store, service)
    request = ModelRequest(name="news-router", datanet_ids=(news,), server=builder.address, price_per_call=1,
                           settings=LoraSettings(epochs=2, max_length=32, seed=2),
                           filters=SelectionFilters(held_out=0.25))
    built = factory.build(builder, request)

    files = report_model(chain, deployed, store, built.model_id, tmp_path / "report")
    value = {s.key: s.score for s in files.valuation.attribution.contributors}
    assert value[alice.address] > 0 and value[bob.address] > 0
    assert value[mallory.address] < 0  # wrong labels raise the held-out loss
    assert files.valuation.eval_rows >= 15
    assert "news-router" in files.table and mallory.address in files.table
    svg = ET.fromstring(files.paths[1].read_text())
    assert svg.tag.endswith("svg")
    report = json.loads(files.paths[2].read_text())
    assert {r["id"] for r in report["contributions"]} == {str(i) for i in ids}

    plain = replace(request, name="no-split", filters=SelectionFilters())
    other = factory.build(builder, plain)
    with pytest.raises(ValuationError, match="without held-out rows"):
        report_model(chain, deployed, store, other.model_id, tmp_path / "none")
    eval_file = write_jsonl(tmp_path / "eval.jsonl", [{"text": r.text, "label": r.label} for r in synthetic_examples(9, seed=5)])
    assert report_model(chain, deployed, store, other.model_id, tmp_path / "file", eval_file).valuation.eval_rows == 9
