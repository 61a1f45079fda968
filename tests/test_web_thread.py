"""The whole thread through the web app, each role with its own wallet in real headless Chromium:
the curator creates the Datanet (metadata stored, then createDatanet from the wallet), a contributor
uploads a file and records it, the curator approves it, a builder trains a tiny model on the Model
Factory page (live progress, then registerModel from the wallet), a consumer deposits with a permit and calls the model in the playground (voucher
signed by the wallet, receipt verified in the page), the epoch is settled, and the contributor
claims in one transaction and sees the balance change.

The backend is the real app (provenant.api.app.create_app) with the serving routes mounted, as
`provenant app --serve` runs it, with the serving key of a dev account; see _LAUNCHER.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Iterator

import pytest

from provenant.chain.devnet import free_port
from provenant.chain.keys import dev_accounts
from provenant.payments.vouchers import Voucher
from provenant.serving.calllog import CallLog
from provenant.settlement.attributor import Attributor
from provenant.store import open_store
from web_support import DESKTOP, PHONE, ROOT, SHOTS, Stack, browser, connect, deployed_chain, get, new_page, \
    open_page, page_overflow, require_browser_tools, serve_backend, shots_on_failure  # noqa: F401 - fixture used by name

SAMPLES = ROOT / "backend" / "provenant" / "demo" / "samples"
ADMIN, SERVER, CONTRIBUTOR, CONSUMER, ATTRIBUTOR = (dev_accounts()[i] for i in (0, 2, 3, 4, 5))
CURATOR = ADMIN
PRICE = 10**17  # 0.1 PVN per call

# The backend app with serving mounted (receipts signed by SERVER's dev key; chain 31337 only).
_LAUNCHER = r"""
import sys
from pathlib import Path

import uvicorn

from provenant.api.app import AppSettings, create_app
from provenant.chain.client import ChainClient
from provenant.chain.deploy import Contracts
from provenant.chain.keys import dev_accounts
from provenant.serving.calllog import CallLog
from provenant.serving.service import ServingService
from provenant.serving.settings import ServingSettings
from provenant.store import open_store

rpc, home, port, server = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
client = ChainClient(rpc)
contracts = Contracts.load(client, home)
store = open_store(str(home / "store"))
service = ServingService(client, contracts, store, dev_accounts()[server], CallLog(home / "calls"),
                         ServingSettings.from_env())
app = create_app(AppSettings(rpc_url=rpc, home=home, domain=f"127.0.0.1:{port}", serving=service))
uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
"""


@pytest.fixture(scope="module")
def thread_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_browser_tools()
    base = tmp_path_factory.mktemp("web-thread")
    with deployed_chain(base, ADMIN) as (devnet, client, contracts):
        client.transact(ADMIN, contracts.token.functions.transfer(CONSUMER.address, 10 * 10**18))
        role = client.call(contracts.settlement.functions.ATTRIBUTOR_ROLE())
        client.transact(ADMIN, contracts.settlement.functions.grantRole(role, ATTRIBUTOR.address))
        port = free_port()
        argv = [sys.executable, "-c", _LAUNCHER, devnet.rpc_url, str(base / "home"), str(port), "2"]
        with serve_backend(argv, port, base / "app.log", "the backend") as url:
            yield Stack(devnet, base / "home", contracts, client, url)


class Roles:
    """One browser context (own wallet, own session) per role; screenshots of every one on failure."""

    def __init__(self, browser, stack: Stack) -> None:  # type: ignore[no-untyped-def]
        self.browser, self.stack, self.pages = browser, stack, {}

    def page(self, name: str, account: str):  # type: ignore[no-untyped-def]
        if name not in self.pages:
            self.pages[name] = new_page(self.browser, timeout_ms=20_000, rpc_url=self.stack.devnet.rpc_url,
                                        account=account)
        return self.pages[name]

    def console_errors(self) -> dict[str, list[str]]:
        return {n: p.console.errors for n, p in self.pages.items() if p.console.errors}


@pytest.fixture()
def roles(browser, thread_stack: Stack, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    r = Roles(browser, thread_stack)
    with shots_on_failure(request, r.pages, prefix="thread-"):
        yield r
    for pg in r.pages.values():
        pg.context.close()


def _balance(stack: Stack, account: str) -> int:
    return int(stack.client.call(stack.contracts.token.functions.balanceOf(account)))


def test_full_thread_in_the_browser(roles: Roles, thread_stack: Stack) -> None:
    s = thread_stack

    # 0. The curator creates the Datanet on its page: metadata stored by CID, then createDatanet.
    spec = json.loads((SAMPLES / "datanets.json").read_text())["datanets"][0]
    curator = roles.page("curator", CURATOR.address)
    open_page(curator, s, "datanets/new")
    connect(curator)
    curator.get_by_test_id("dn-name").fill(spec["name"])
    curator.get_by_test_id("dn-description").fill(spec["description"])
    curator.get_by_test_id("dn-task").select_option(spec["task"])
    curator.get_by_test_id("dn-labels").fill(", ".join(spec["labels"]))
    curator.get_by_test_id("dn-license").fill(spec["license"])
    assert curator.get_by_test_id("dn-curators").input_value() == CURATOR.address  # defaults to the wallet
    curator.get_by_test_id("create-datanet").click()
    curator.get_by_test_id("datanet-created").wait_for(timeout=30_000)
    curator.locator("[data-testid=tx][data-status=confirmed]", has_text=f"Create Datanet {spec['name']}").wait_for()
    assert "Datanet #1 created" in curator.get_by_test_id("datanet-created").inner_text()
    record = json.loads(get(f"{s.url}/v1/datanets/1"))
    assert record["metadata"]["name"] == spec["name"] and record["metadata"]["labels"] == spec["labels"]
    assert s.client.call(s.contracts.datanets.functions.isCurator(1, CURATOR.address))
    s.wait_indexed(lambda: s.index("/datanets")["total"] == 1)

    # 1. The contributor drops a file on the Contribute page; the wallet records it on chain.
    contributor = roles.page("contributor", CONTRIBUTOR.address)
    open_page(contributor, s, "contribute/1")
    connect(contributor)
    contributor.get_by_test_id("file-input").set_input_files(str(SAMPLES / "alice_1.jsonl"))
    contributor.get_by_test_id("validation-ok").wait_for()
    contributor.get_by_test_id("submit-contribution").click()
    contributor.get_by_test_id("contribution-done").wait_for(timeout=30_000)
    s.wait_indexed(lambda: s.index("/contributions?datanet_id=1&status=pending")["total"] == 1)

    # 2. The curator approves it from the review queue, in one wallet transaction.
    open_page(curator, s, "curate/1")
    curator.get_by_test_id("pick-1").check()
    curator.get_by_test_id("approve").click()
    curator.locator("[data-testid=tx][data-status=confirmed]", has_text="Approve 1 contribution").wait_for()
    s.wait_indexed(lambda: s.index("/contributions/1")["status"] == "approved")

    # 3. A builder launches a tiny training on the Model Factory page, watches it, and registers
    #    the model from the wallet (the serving key is the builder's account: SERVER's dev key).
    started = time.monotonic()
    builder = roles.page("builder", SERVER.address)
    open_page(builder, s, "factory")
    connect(builder)
    builder.get_by_test_id("job-name").fill("support-router")
    builder.get_by_test_id("job-datanet-1").check()
    builder.get_by_test_id("lora-epochs").fill("1")
    builder.get_by_test_id("lora-max_length").fill("16")
    builder.get_by_test_id("job-price").fill(str(PRICE / 10**18))
    builder.get_by_test_id("launch-job").click()
    builder.get_by_test_id("job").wait_for(timeout=30_000)
    assert "#/factory/" in builder.url
    builder.locator("[data-testid=job][data-state=succeeded]").wait_for(timeout=240_000)
    print(f"trained in {time.monotonic() - started:.1f} s")
    builder.get_by_test_id("loss-chart").wait_for()
    assert int(builder.locator("[data-testid=loss-chart] path.curve").get_attribute("data-points")) >= 1
    assert "lineage root" in builder.get_by_test_id("job-result").inner_text()
    builder.get_by_test_id("register-model").click()
    builder.locator("[data-testid=tx][data-status=confirmed]", has_text="Register model support-router").wait_for()
    builder.get_by_test_id("model-registered").get_by_role("link", name="model #1").wait_for()
    model = s.client.call(s.contracts.models.functions.getModel(1))
    assert "support-router" in str(model) and SERVER.address in str(model)
    s.wait_indexed(lambda: s.index("/models")["total"] == 1)
    job_route = builder.evaluate("() => location.hash.slice(2)")
    builder.get_by_test_id("model-registered").get_by_role("link", name="model #1").click()
    builder.wait_for_function("() => location.hash === '#/models/1'")
    SHOTS.mkdir(parents=True, exist_ok=True)
    for route in (job_route, "factory"):
        open_page(builder, s, route)
        for size_name, size in (("desktop", DESKTOP), ("phone", PHONE)):
            builder.set_viewport_size(size)
            overflow = page_overflow(builder)
            assert overflow <= 1, f"#/{route} is {overflow}px wider than the {size_name} viewport"
            name = "factory-job" if route == job_route else "factory-jobs"
            builder.screenshot(path=str(SHOTS / f"{name}-{size_name}.png"), full_page=True)
    builder.set_viewport_size(DESKTOP)

    # A longer training shows live progress (loss curve over steps, epoch, examples/s, ETA) and
    # is cancelled from the page by the account that launched it.
    builder.get_by_test_id("job-name").fill("too-long")
    builder.get_by_test_id("job-datanet-1").check()
    builder.get_by_test_id("lora-epochs").fill("100")
    builder.get_by_test_id("lora-max_length").fill("16")
    builder.get_by_test_id("launch-job").click()
    builder.locator("[data-testid=job][data-state=running]").wait_for(timeout=60_000)
    builder.wait_for_function("() => Number(document.querySelector('[data-testid=loss-chart] path.curve')?.dataset.points) >= 3",
                              timeout=60_000)
    assert "/ 100" in builder.get_by_test_id("job-epoch").inner_text()
    # The ETA appears with the first progress point that has a rate (the loss history can already
    # hold several steps by then: the server keeps every step, the page polls every 0.5 s).
    builder.wait_for_function("() => /\\d+ s$/.test(document.querySelector('[data-testid=job-eta]')?.textContent.trim())",
                              timeout=60_000)
    float(builder.get_by_test_id("job-speed").inner_text())
    builder.screenshot(path=str(SHOTS / "factory-job-running-desktop.png"), full_page=True)
    builder.get_by_test_id("cancel-job").click()
    builder.locator("[data-testid=job][data-state=cancelled]").wait_for(timeout=60_000)
    assert builder.get_by_test_id("register-model").count() == 0

    # The model page draws its lineage: model -> Datanet 1 -> contribution 1 -> the contributor.
    open_page(contributor, s, "models/1")
    assert "1 Datanet ← 1 contributions ← 1 contributors" in contributor.locator("figure.lineage figcaption").inner_text()
    SHOTS.mkdir(parents=True, exist_ok=True)
    for size_name, size in (("desktop", DESKTOP), ("phone", PHONE)):
        contributor.set_viewport_size(size)
        overflow = page_overflow(contributor)
        assert overflow <= 1, f"the model page is {overflow}px wider than the {size_name} viewport"
        contributor.screenshot(path=str(SHOTS / f"models-1-{size_name}.png"), full_page=True)
    contributor.set_viewport_size(DESKTOP)

    # 4. The consumer deposits with a permit and calls the model in the playground.
    consumer = roles.page("consumer", CONSUMER.address)
    open_page(consumer, s, "playground")
    connect(consumer)
    consumer.get_by_test_id("deposit-amount").fill("1")
    consumer.get_by_test_id("deposit").click()
    consumer.locator("[data-testid=tx][data-status=confirmed]", has_text="Deposit 1 PVN").wait_for()
    assert int(s.client.call(s.contracts.escrow.functions.depositOf(CONSUMER.address, 1))) == 10**18
    consumer.get_by_test_id("playground-input").fill("I was charged twice for my subscription this month")
    with consumer.expect_request(lambda r: r.url.endswith("/v1/classifications")) as sent:
        consumer.get_by_test_id("call-model").click()
    consumer.get_by_test_id("receipt-checks").wait_for(timeout=60_000)
    checks = consumer.locator("[data-testid=receipt-checks] li")
    assert checks.count() >= 5
    assert [checks.nth(i).get_attribute("data-ok") for i in range(checks.count())] == ["true"] * checks.count(), \
        consumer.get_by_test_id("receipt-checks").inner_text()
    assert consumer.get_by_test_id("answer-label").inner_text() in ("billing", "technical", "shipping", "account")

    # The serving operator charges the voucher the wallet signed (what its batcher does on a timer).
    payment = sent.value.post_data_json["payment"]
    voucher = Voucher.from_json(payment["voucher"])
    assert voucher.consumer == CONSUMER.address and voucher.cumulative_amount == PRICE
    s.client.transact(SERVER, s.contracts.escrow.functions.charge(1, [voucher.as_tuple()],
                                                                  [bytes.fromhex(payment["signature"][2:])]))

    # 5. The attributor settles the epoch.
    attributor = Attributor(s.client, s.contracts, open_store(str(s.home / "store")), ATTRIBUTOR, CallLog(s.home / "calls"))
    proposal = attributor.propose(1)
    attributor.post(ATTRIBUTOR, proposal, {ATTRIBUTOR.address: attributor.sign(proposal)})
    s.wait_indexed(lambda: s.index("/models/1")["epochs"])

    # 6. The contributor claims on the Rewards page, in one transaction, and the balance moves.
    before = _balance(s, CONTRIBUTOR.address)
    open_page(contributor, s, "rewards")
    shown_before = contributor.get_by_test_id("balance").inner_text()
    assert "✔ matches the epoch's root" in contributor.locator("table").first.inner_text()
    contributor.get_by_test_id("claim-all").click()
    contributor.locator("[data-testid=tx][data-status=confirmed]", has_text="Claim 1 allocation").wait_for()
    gained = _balance(s, CONTRIBUTOR.address) - before
    assert gained > 0
    contributor.locator("text=Nothing to claim right now.").wait_for()
    history = contributor.locator("table", has=contributor.locator("caption", has_text="past claims"))
    history.locator("tbody tr").first.wait_for()
    assert "#1" in history.inner_text()
    contributor.wait_for_function("(old) => { const b = document.querySelector('[data-testid=balance]'); return !!b && b.textContent !== old; }", arg=shown_before)
    SHOTS.mkdir(parents=True, exist_ok=True)
    for name, pg in roles.pages.items():
        pg.screenshot(path=str(SHOTS / f"thread-{name}.png"), full_page=True)
    assert roles.console_errors() == {}
