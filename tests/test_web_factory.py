"""The Model Factory page (web/src/pages/factory*.tsx, issue 5) in real headless Chromium against a
real anvil and the real backend (`provenant app`).

The stack, browser and page fixtures are web_support's, as in test_web_app (imported: this module
gets its own anvil and backend). On top of its classification Datanet #1 this module creates a
plain-text Datanet (task "text") with approved contributions from two contributors, so that a filter
visibly changes what trains: the page launches a tiny-llama job that leaves one contributor out,
caps the rows and holds a quarter out, follows its progress, then shows the held-out metrics per
Datanet. A bad filter is stopped by the page (nothing sent) or refused by the server (its 422
message shown next to the filters). Screenshots go to docs/screenshots/factory-*.png.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from pathlib import Path

import pytest

from provenant.chain.keys import dev_accounts
from provenant.datanets.service import DatanetService
from provenant.store import open_store
from web_support import CURATOR, DESKTOP, PHONE, ROOT, USER, Stack, browser, connect, get, open_page, page, \
    page_overflow, playwright_sync, stack  # noqa: F401 - fixtures used by name

SHOTS = ROOT / "docs" / "screenshots"
OTHER = dev_accounts()[4]
TEXT_METADATA = {"name": "Shop FAQ", "description": "Plain-text answers from a shop's help centre.", "license": "CC0-1.0",
                 "task": "text", "max_rows_per_file": 100, "max_bytes_per_file": 65536}
USER_ROWS = [f"Question {i}: how long does shipping take to zone {i}? Answer: about {i + 2} working days." for i in range(12)]
OTHER_ROWS = [f"Note {i}: returns are free within {i + 14} days of delivery." for i in range(6)]
REFUSED_422 = "console.error: Failed to load resource: the server responded with a status of 422 (Unprocessable Entity)"


def _jobs(stack: Stack) -> list[dict]:
    return json.loads(get(f"{stack.url}/v1/jobs"))


@pytest.fixture(scope="module")
def text_datanet(stack: Stack) -> int:  # noqa: F811 - the imported fixture
    """A text Datanet with two approved contributions: USER's 12 rows, then OTHER's 6."""
    service = DatanetService(stack.client, stack.contracts, open_store(str(stack.home / "store")))
    datanet_id = service.create(CURATOR, TEXT_METADATA, curators=[CURATOR.address])
    ids = []
    with tempfile.TemporaryDirectory() as tmp:
        for who, rows in ((USER, USER_ROWS), (OTHER, OTHER_ROWS)):
            path = Path(tmp) / f"{who.address}.jsonl"
            path.write_text("".join(json.dumps({"text": r}) + "\n" for r in rows))
            ids.append(service.contribute(who, datanet_id, path).contribution_id)
    service.approve(CURATOR, datanet_id, ids)
    stack.wait_indexed(lambda: all(stack.index(f"/contributions/{c}")["status"] == "approved" for c in ids))
    return datanet_id


def _fill_job(pg, datanet_id: int, name: str) -> None:  # type: ignore[no-untyped-def]
    pg.get_by_test_id("job-name").fill(name)
    pg.get_by_test_id(f"job-datanet-{datanet_id}").check()
    pg.get_by_test_id("base-model").select_option("tiny-llama")
    pg.get_by_test_id("lora-epochs").fill("4")
    pg.get_by_test_id("lora-batch_size").fill("1")
    pg.get_by_test_id("lora-max_length").fill("32")


def test_a_filtered_tiny_llama_job_shows_live_progress_then_metrics_per_datanet(page, stack: Stack, text_datanet: int) -> None:  # noqa: F811
    SHOTS.mkdir(parents=True, exist_ok=True)
    d = text_datanet
    open_page(page, stack, "factory")
    connect(page)
    assert page.get_by_test_id("lora-target_modules").input_value() == ""  # the server picks the base's modules
    _fill_job(page, d, "faq-lm")
    page.get_by_test_id("filter-exclude").fill(OTHER.address.lower())
    page.get_by_test_id("filter-held-out").fill("0.25")
    page.get_by_test_id(f"filter-max-rows-{d}").fill("8")
    page.get_by_test_id("launch-job").click()
    page.get_by_test_id("job").wait_for(timeout=30_000)
    job_id = page.evaluate("() => location.hash.split('/').pop()")

    # Live progress: the step within the epoch out of 8 (8 training rows, batch size 1), epoch of 4.
    page.wait_for_function(
        "() => /^[1-8] \\/ 8$/.test(document.querySelector('[data-testid=job-step]')?.textContent.trim() ?? '')"
        " && document.querySelector('[data-testid=job]')?.dataset.state === 'running'", timeout=120_000)
    assert page.get_by_test_id("job-epoch").inner_text().strip().endswith("/ 4")
    assert re.fullmatch(r"\d+ / 32", page.get_by_test_id("job-total-steps").inner_text().strip())
    float(page.get_by_test_id("job-loss").inner_text())
    page.screenshot(path=str(SHOTS / "factory-job-running-filtered-desktop.png"), full_page=True)

    page.locator("[data-testid=job][data-state=succeeded]").wait_for(timeout=180_000)
    assert "task causal-lm" in page.get_by_test_id("job-facts").inner_text()
    shown = page.get_by_test_id("job-filters").inner_text()
    assert "25 % held out" in shown and f"leaving out {OTHER.address.lower()[:6]}…{OTHER.address.lower()[-4:]}" in shown
    assert "at most 8 rows of #" in shown
    assert int(page.locator("[data-testid=loss-chart] path.curve").get_attribute("data-points")) >= 2
    row = page.get_by_test_id(f"per-datanet-{d}")
    # OTHER left out; USER's 12 rows: int(0.25 x 12) = 3 held out, the other 9 capped to 8.
    assert row.get_attribute("data-train-rows") == "8" and row.get_attribute("data-held-out-rows") == "3"
    cells = [c.strip() for c in row.locator("td").all_inner_texts()]
    assert cells[0].startswith(f"#{d}") and cells[1:5] == ["1", "8", "3", "0"], cells
    held_loss = float(cells[5])
    assert held_loss > 0 and float(cells[6]) > 1.0  # perplexity of a causal LM

    job = json.loads(get(f"{stack.url}/v1/jobs/{job_id}"))
    assert job["filters"]["exclude_contributors"] == [OTHER.address.lower()] and job["filters"]["held_out"] == 0.25
    assert job["filters"]["max_rows"] == {str(d): 8}
    assert job["settings"]["target_modules"] == ["q_proj", "v_proj"]  # the server's default for Llama bases
    assert abs(job["result"]["per_datanet"][str(d)]["eval_loss"] - held_loss) < 1e-4
    page.screenshot(path=str(SHOTS / "factory-job-metrics-desktop.png"), full_page=True)
    page.set_viewport_size(PHONE)
    assert page_overflow(page) <= 1, "the job view is wider than the phone viewport"
    page.screenshot(path=str(SHOTS / "factory-job-metrics-phone.png"), full_page=True)
    assert page.console.errors == []


def test_bad_filters_are_stopped_by_the_page_or_refused_by_the_server_with_its_message(page, stack: Stack, text_datanet: int) -> None:  # noqa: F811
    d = text_datanet
    before = len(_jobs(stack))
    open_page(page, stack, "factory")
    connect(page)
    _fill_job(page, d, "bad-filters")
    # Caught in the page: nothing is sent.
    page.get_by_test_id("filter-contributors").fill("0x1234")
    page.get_by_test_id("filter-range").select_option("block")
    page.get_by_test_id("filter-from").fill("9")
    page.get_by_test_id("filter-to").fill("3")
    page.get_by_test_id("filter-held-out").fill("1")
    page.get_by_test_id("launch-job").click()
    problems = page.get_by_test_id("filter-problems").inner_text()
    assert "not addresses: 0x1234" in problems and "block range starts after it ends" in problems
    assert "held-out fraction" in problems
    assert len(_jobs(stack)) == before

    # Well-formed but beyond the server's limit (a sampling weight is at most 100): its 422 message.
    page.get_by_test_id("filter-contributors").fill("")
    page.get_by_test_id("filter-range").select_option("none")
    page.get_by_test_id("filter-held-out").fill("0.2")
    page.get_by_test_id(f"filter-weight-{d}").fill("500")
    page.get_by_test_id("launch-job").click()
    refused = page.get_by_test_id("filter-server-error")
    playwright_sync.expect(refused).to_contain_text(f"weight for Datanet {d} must be in (0, 100]", timeout=30_000)
    assert page.get_by_test_id("filter-problems").count() == 0
    assert len(_jobs(stack)) == before
    assert "#/factory/" not in page.url
    page.screenshot(path=str(SHOTS / "factory-filters-refused-desktop.png"), full_page=True)

    # The form with its filters open fits a phone.
    page.get_by_test_id("filter-range").select_option("time")
    page.set_viewport_size(PHONE)
    time.sleep(0.2)
    assert page_overflow(page) <= 1, "the factory form is wider than the phone viewport"
    page.screenshot(path=str(SHOTS / "factory-filters-phone.png"), full_page=True)
    page.set_viewport_size(DESKTOP)
    # Chromium logs the refused launch's HTTP 422 itself; nothing else may appear.
    assert page.console.errors == [REFUSED_422]


@pytest.fixture(scope="module")
def labelled_rows(stack: Stack) -> int:  # noqa: F811 - the imported fixture
    """Datanet #1 (classification, test_web_app's) with USER's 12 labelled rows, approved."""
    service = DatanetService(stack.client, stack.contracts, open_store(str(stack.home / "store")))
    texts = {"billing": "I was charged twice this month", "technical": "the app crashes on start",
             "shipping": "my parcel has not arrived", "account": "I cannot log in to my account"}
    rows = [{"text": f"{t} ({i})", "label": label} for i in range(3) for label, t in texts.items()]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tickets.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        cid = service.contribute(USER, 1, path).contribution_id
    service.approve(CURATOR, 1, [cid])
    stack.wait_indexed(lambda: stack.index(f"/contributions/{cid}")["status"] == "approved")
    return 1


def test_a_classifier_shows_held_out_accuracy_and_an_uncached_hub_id_fails_with_its_reason(page, stack: Stack, labelled_rows: int) -> None:  # noqa: F811
    d = labelled_rows
    open_page(page, stack, "factory")
    connect(page)
    page.get_by_test_id("job-name").fill("ticket-router")
    page.get_by_test_id(f"job-datanet-{d}").check()
    page.get_by_test_id("base-model").select_option("tiny-encoder")
    page.get_by_test_id("lora-epochs").fill("2")
    page.get_by_test_id("filter-held-out").fill("0.25")
    page.get_by_test_id("launch-job").click()
    page.locator("[data-testid=job][data-state=succeeded]").wait_for(timeout=120_000)
    job_id = page.evaluate("() => location.hash.split('/').pop()")
    job = json.loads(get(f"{stack.url}/v1/jobs/{job_id}"))
    metrics = job["result"]["per_datanet"][str(d)]
    assert metrics["held_out_rows"] == 3 and metrics["train_rows"] == 9
    assert job["settings"]["target_modules"] == ["query", "value"]
    table = page.get_by_test_id("per-datanet")
    assert table.locator("th").all_inner_texts()[-1].strip() == "accuracy"
    cells = [c.strip() for c in page.get_by_test_id(f"per-datanet-{d}").locator("td").all_inner_texts()]
    assert cells[1:5] == ["1", "9", "3", "0"], cells  # contributions, rows used, held out, repeats dropped
    assert cells[6] == f"{metrics['eval_accuracy'] * 100:.1f} %" and abs(float(cells[5]) - metrics["eval_loss"]) < 1e-4
    page.screenshot(path=str(SHOTS / "factory-job-classifier-desktop.png"), full_page=True)

    # A typed Hugging Face id: sent as is; the server loads only from its local cache, and says so.
    open_page(page, stack, "factory")
    page.get_by_test_id("job-name").fill("hub-model")
    page.get_by_test_id(f"job-datanet-{d}").check()
    page.get_by_test_id("base-model").select_option("hf")
    page.get_by_test_id("base-model-id").fill("no-such-org/no-such-model")
    page.get_by_test_id("launch-job").click()
    page.locator("[data-testid=job][data-state=failed]").wait_for(timeout=60_000)
    assert "no-such-org/no-such-model" in page.get_by_test_id("job-facts").inner_text()
    failed = page.locator("[data-testid=job] [role=alert]").inner_text()
    assert "Training failed" in failed and "no-such-org/no-such-model" in failed, failed
    assert page.console.errors == []
