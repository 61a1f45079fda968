"""`provenant attribution report <model>`: the model-level valuation of a registered model, on disk.

Loads the model checked against the chain (`serving.models.load_served_model`), takes its held-out
rows from the frozen selection its manifest names (or a JSONL file of {"text", "label"} rows the
caller passes), values every contribution (`valuation`), and writes report.txt (the table),
report.svg (the chart) and report.json (every number) into an output folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from provenant.attribution.chart import render_svg, render_table
from provenant.attribution.valuation import Valuation, ValuationError, value_classifier
from provenant.factory.train import Example


@dataclass(frozen=True)
class ReportFiles:
    table: str
    paths: tuple[Path, ...]
    valuation: Valuation


def write_report(valuation: Valuation, out_dir: Path) -> ReportFiles:
    """report.txt, report.svg and report.json under `out_dir` (created); bytes depend only on the valuation."""
    out_dir.mkdir(parents=True, exist_ok=True)
    table = render_table(valuation)
    paths = (out_dir / "report.txt", out_dir / "report.svg", out_dir / "report.json")
    paths[0].write_text(table)
    paths[1].write_text(render_svg(valuation))
    paths[2].write_text(json.dumps(valuation.to_json(), indent=1, sort_keys=True) + "\n")
    return ReportFiles(table=table, paths=paths, valuation=valuation)


def read_eval_file(path: Path) -> list[Example]:
    """Held-out rows from a JSONL file of {"text": ..., "label": ...} objects."""
    rows = []
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rows.append(Example(text=str(row["text"]), label=str(row["label"]), contribution_id=0, row_index=line_no))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValuationError(f"{path}:{line_no}: expected a JSON object with text and label ({exc})") from exc
    return rows


def report_model(client: object, contracts: object, store: object, model_id: int, out_dir: Path,
                 eval_file: Path | None = None) -> ReportFiles:
    """Value a registered classifier's training data on its held-out rows and write the report."""
    from provenant.datanets.service import DatanetService
    from provenant.factory.builder import ModelFactory
    from provenant.serving.models import load_served_model

    served = load_served_model(client, contracts, store, model_id)  # type: ignore[arg-type]
    if served.classifier is None or served.index is None:
        raise ValuationError(f"model {model_id} is a {served.task} model without a gradient index; "
                             "valuation covers classifiers")
    if eval_file is not None:
        held = read_eval_file(eval_file)
    else:
        selection_cid = served.manifest.selection.get("cid")
        if not selection_cid or not served.manifest.selection.get("held_out"):
            raise ValuationError(f"model {model_id} was trained without held-out rows; pass an evaluation file")
        factory = ModelFactory(client, contracts, store, DatanetService(client, contracts, store))  # type: ignore[arg-type]
        held = factory.load_frozen(selection_cid).examples(held_out=True)
    name = f"model {model_id} ({served.record.name})"
    valuation = value_classifier(served.classifier, served.index, held, served.meta, model=name)
    return write_report(valuation, out_dir)
