"""The web app (web/, issue 9) in real headless Chromium against a real anvil and the real backend.

One stack per module: an anvil of its own, the five contracts deployed, a Datanet created by its
curator, and `provenant app` (the one backend process, serving web/dist) in a subprocess. The page
gets a test-only EIP-1193 wallet through `page.add_init_script` (WALLET_JS below; not part of
the production bundle): it announces itself over EIP-6963, refuses any chain but 31337, and
forwards JSON-RPC to anvil, whose unlocked dev accounts sign (personal_sign, eth_signTypedData_v4,
eth_sendTransaction). Screenshots of every page at desktop and phone width, and of any failure, go
to build/web-screenshots/ (git-ignored).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from provenant.chain.client import ChainClient
from provenant.chain.deploy import Contracts, deploy_all
from provenant.chain.devnet import Devnet, free_port, start_anvil
from provenant.chain.keys import dev_accounts
from provenant.datanets.service import DatanetService
from provenant.store import open_store

ROOT = Path(__file__).resolve().parent.parent
DIST = ROOT / "web" / "dist"
SHOTS = ROOT / "build" / "web-screenshots"
CHROMIUM = os.environ.get("PROVENANT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage"]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 740}
PAGES = ["datanets", "datanets/1", "datanets/new", "contribute", "curate", "factory", "models", "playground", "rewards"]

try:
    from playwright import sync_api as playwright_sync
except ImportError:  # reported by the fixtures as a failure, never a silent skip
    playwright_sync = None  # type: ignore[assignment]
NO_PLAYWRIGHT = "PyPI playwright is not installed in .venv (it is pinned in requirements.lock): run `make setup`"

CURATOR, USER = dev_accounts()[0], dev_accounts()[3]
METADATA = {"name": "Support tickets", "description": "Customer support messages, labelled by team.",
            "license": "CC-BY-4.0", "task": "classification", "labels": ["account", "technical", "shipping", "billing"],
            "max_rows_per_file": 100, "max_bytes_per_file": 65536}


# TEST-ONLY EIP-1193 wallet, injected with page.add_init_script; never part of web/dist.
WALLET_JS = r"""
// TEST-ONLY EIP-1193 wallet for the browser tests (tests/test_web_*.py); never part of web/dist.
// Injected with page.add_init_script, configured by replacing __RPC_URL__ and __ACCOUNT__.
// It announces itself over EIP-6963, refuses every chain but anvil's 31337, and forwards JSON-RPC
// to anvil, whose unlocked dev account signs messages, typed data and transactions.
(() => {
  const RPC_URL = "__RPC_URL__";
  const ACCOUNT = "__ACCOUNT__";
  const DEV_CHAIN = "0x7a69"; // 31337
  // The chain the wallet says it is on; a test may start it elsewhere to see the page ask to switch.
  // Until switched to 31337 it signs and sends nothing.
  let current = "__START_CHAIN__";
  let nextId = 1;
  const listeners = {};

  async function rpc(method, params) {
    const res = await fetch(RPC_URL, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ jsonrpc: "2.0", id: nextId++, method, params: params || [] }),
    });
    const body = await res.json();
    if (body.error) {
      const err = new Error(body.error.message);
      err.code = body.error.code;
      err.data = body.error.data;
      throw err;
    }
    return body.result;
  }

  let checked = null;
  function devChainOnly() {
    if (!checked) {
      checked = rpc("eth_chainId").then((id) => {
        if (id !== DEV_CHAIN) throw Object.assign(new Error(`test wallet refuses chain ${id}: anvil (31337) only`), { code: 4901 });
      });
    }
    return checked;
  }

  const sameAccount = (a) => typeof a === "string" && a.toLowerCase() === ACCOUNT.toLowerCase();
  const emit = (event, value) => (listeners[event] || []).forEach((fn) => fn(value));
  const onDevChain = () => {
    if (current !== DEV_CHAIN) throw Object.assign(new Error(`test wallet is on chain ${current}`), { code: 4901 });
  };

  const provider = {
    isProvenantTestWallet: true,
    async request({ method, params }) {
      await devChainOnly();
      switch (method) {
        case "eth_requestAccounts":
        case "eth_accounts":
          return [ACCOUNT];
        case "eth_chainId":
          return current;
        case "net_version":
          return String(Number(current));
        case "wallet_switchEthereumChain":
          if (String(params[0].chainId).toLowerCase() !== DEV_CHAIN) throw Object.assign(new Error("Unrecognized chain ID"), { code: 4902 });
          if (current !== DEV_CHAIN) {
            current = DEV_CHAIN;
            setTimeout(() => emit("chainChanged", DEV_CHAIN), 0);
          }
          return null;
        case "wallet_addEthereumChain":
          throw Object.assign(new Error("test wallet only knows anvil"), { code: 4200 });
        case "personal_sign":
          onDevChain();
          if (!sameAccount(params[1])) throw Object.assign(new Error("unknown account"), { code: 4100 });
          return rpc(method, params);
        case "eth_signTypedData_v4":
          onDevChain();
          if (!sameAccount(params[0])) throw Object.assign(new Error("unknown account"), { code: 4100 });
          return rpc(method, params);
        case "eth_sendTransaction":
          onDevChain();
          if (!sameAccount(params[0].from)) throw Object.assign(new Error("unknown account"), { code: 4100 });
          return rpc(method, params);
        default:
          return rpc(method, params);
      }
    },
    on(event, fn) {
      (listeners[event] = listeners[event] || []).push(fn);
      return provider;
    },
    removeListener(event, fn) {
      listeners[event] = (listeners[event] || []).filter((f) => f !== fn);
      return provider;
    },
  };

  const info = Object.freeze({
    uuid: "6f1c1c2e-0d7e-4b8e-9a43-3e1f5b0c7a69",
    name: "Provenant Test Wallet",
    icon: "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 8 8'%3E%3Crect width='8' height='8' fill='%23c33'/%3E%3C/svg%3E",
    rdns: "dev.provenant.testwallet",
  });
  const announce = () =>
    window.dispatchEvent(new CustomEvent("eip6963:announceProvider", { detail: Object.freeze({ info, provider }) }));
  window.addEventListener("eip6963:requestProvider", announce);
  announce();
})();
"""


def _wallet_script(rpc_url: str, account: str, start_chain: int = 31337) -> str:
    """The test wallet, configured for this anvil and account (it signs on chain id 31337 only)."""
    return (WALLET_JS.replace("__RPC_URL__", rpc_url).replace("__ACCOUNT__", account)
            .replace("__START_CHAIN__", hex(start_chain)))


def _get(url: str, timeout: float = 2.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - loopback only
        return r.read()


class Stack:
    def __init__(self, devnet: Devnet, home: Path, contracts: Contracts, client: ChainClient, url: str) -> None:
        self.devnet, self.home, self.contracts, self.client, self.url = devnet, home, contracts, client, url

    def wait_indexed(self, check, timeout: float = 15.0):  # type: ignore[no-untyped-def]
        """Poll until `check()` is truthy: the app's indexer follows the chain a poll behind."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                result = check()
                if result:
                    return result
            except OSError:  # includes HTTP 404 while the index has not seen the record yet
                pass
            time.sleep(0.25)
        raise AssertionError(f"the index did not catch up within {timeout} s")

    def index(self, path: str) -> dict:
        return json.loads(_get(f"{self.url}/v1/index{path}"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if playwright_sync is None:
        pytest.fail(NO_PLAYWRIGHT)
    if not (DIST / "index.html").exists():
        pytest.fail("web/dist is not built: run `make setup` (npm ci && npm run build in web/)")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: run `bash scripts/ensure-chromium.sh` (apt-get install chromium)")
    base = tmp_path_factory.mktemp("web")
    home = base / "home"
    with start_anvil(log_path=base / "anvil.log") as devnet:
        client = ChainClient(devnet.rpc_url)
        contracts = deploy_all(client, CURATOR, home, protocol_treasury=dev_accounts()[1].address)
        DatanetService(client, contracts, open_store(str(home / "store"))).create(CURATOR, METADATA, curators=[CURATOR.address])
        port = free_port()
        log = (base / "app.log").open("wb")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "provenant.cli", "app", "--port", str(port), "--domain", f"127.0.0.1:{port}",
             "--rpc-url", devnet.rpc_url, "--home", str(home)],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    _get(f"{url}/v1/config")
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        log.flush()
                        pytest.fail(f"`provenant app` did not start:\n{(base / 'app.log').read_text()[-3000:]}")
                    time.sleep(0.2)
            s = Stack(devnet, home, contracts, client, url)
            s.wait_indexed(lambda: s.index("/datanets")["total"] >= 1)
            yield s
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()


@pytest.fixture(scope="module")
def browser(stack: Stack):  # type: ignore[no-untyped-def]
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


class Console:
    """Console errors and uncaught exceptions of one page."""

    def __init__(self, page) -> None:  # type: ignore[no-untyped-def]
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))


@pytest.fixture()
def page(browser, stack: Stack, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """A fresh browser context (new sessionStorage) with the test wallet for USER."""
    ctx = browser.new_context(viewport=DESKTOP)
    ctx.add_init_script(_wallet_script(stack.devnet.rpc_url, USER.address))
    pg = ctx.new_page()
    pg.set_default_timeout(15_000)
    pg.console = Console(pg)  # type: ignore[attr-defined]
    failures_before = request.session.testsfailed
    yield pg
    if request.session.testsfailed > failures_before:  # the call phase failed: keep what the page showed
        SHOTS.mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(SHOTS / f"FAILED-{request.node.name}.png"), full_page=True)
    ctx.close()


def _serves_metadata(stack: Stack) -> bool:
    paths = json.loads(_get(f"{stack.url}/openapi.json"))["paths"]
    return "/v1/datanets/{datanet_id}" in paths or "/v1/content/{cid}" in paths


def _open(page, stack: Stack, route: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{stack.url}/#/{route}")
    page.wait_for_selector("main h1")
    page.wait_for_function("() => !document.querySelector('main [role=status]')")  # nothing left loading


def _connect(page) -> None:  # type: ignore[no-untyped-def]
    page.get_by_test_id("connect").click()
    page.get_by_test_id("account").wait_for()


def _sign_in(page) -> None:  # type: ignore[no-untyped-def]
    page.get_by_test_id("sign-in").click()
    page.get_by_test_id("sign-out").wait_for()


def test_every_page_renders_at_desktop_and_phone_width_without_console_errors(page, stack: Stack) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    for size_name, size in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(size)
        for route in PAGES:
            _open(page, stack, route)
            if route == "datanets":
                listed = page.get_by_test_id("datanet-list").inner_text()
                # The name comes from the Datanet's metadata where the server exposes it.
                assert ("Support tickets" if _serves_metadata(stack) else "Datanet 1") in listed and "CC-BY-4.0" in listed
                page.get_by_test_id("datanet-search").fill("cc-by")
                assert "CC-BY-4.0" in page.get_by_test_id("datanet-list").inner_text()
                page.get_by_test_id("datanet-search").fill("no such datanet")
                assert "No Datanet matches." in page.get_by_test_id("datanet-list").inner_text()
                page.get_by_test_id("datanet-search").fill("")
            overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, f"#/{route} is {overflow}px wider than the {size_name} viewport"
            page.screenshot(path=str(SHOTS / f"{route.replace('/', '-')}-{size_name}.png"), full_page=True)
        if size_name == "desktop":
            _connect(page)  # the phone pass shows the connected header
    assert page.console.errors == []


def test_keyboard_reaches_navigation_and_the_wallet(page, stack: Stack) -> None:
    _open(page, stack, "datanets")
    reached = []
    for _ in range(14):
        page.keyboard.press("Tab")
        reached.append(page.evaluate("() => document.activeElement.textContent.trim()"))
    assert "Skip to content" in reached and "Contribute" in reached and "Rewards" in reached
    assert any(r.startswith("Connect") for r in reached), reached
    page.get_by_test_id("connect").focus()
    page.keyboard.press("Enter")  # a keyboard user connects the wallet too
    page.get_by_test_id("account").wait_for()
    assert page.console.errors == []


def test_a_wallet_on_another_chain_is_asked_to_switch_and_signs_nothing_before(browser, stack: Stack) -> None:
    ctx = browser.new_context(viewport=DESKTOP)
    ctx.add_init_script(_wallet_script(stack.devnet.rpc_url, USER.address, start_chain=1))
    page = ctx.new_page()
    console = Console(page)
    try:
        _open(page, stack, "datanets")
        _connect(page)
        assert page.get_by_test_id("chain").inner_text() == "chain 1"
        assert page.get_by_test_id("sign-in").count() == 0  # nothing to sign on the wrong chain
        page.get_by_test_id("switch-chain").click()
        page.get_by_test_id("sign-in").wait_for()
        assert page.get_by_test_id("chain").inner_text() == "chain 31337"
        _sign_in(page)
        assert console.errors == []
    finally:
        ctx.close()


def test_sign_in_with_ethereum_gives_a_session_the_backend_accepts(page, stack: Stack) -> None:
    _open(page, stack, "datanets")
    _connect(page)
    assert page.get_by_test_id("chain").inner_text() == "chain 31337"
    _sign_in(page)
    token = page.evaluate("() => JSON.parse(sessionStorage.getItem('provenant.session')).token")
    req = urllib.request.Request(f"{stack.url}/v1/auth/session", headers={"Authorization": f"Bearer {token}"})
    assert json.loads(urllib.request.urlopen(req, timeout=5).read())["address"] == USER.address  # noqa: S310
    page.get_by_test_id("sign-out").click()
    page.get_by_test_id("sign-in").wait_for()
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=5)  # noqa: S310
    assert refused.value.code == 401
    assert page.console.errors == []


def _drop_file(page, name: str, text: str) -> None:  # type: ignore[no-untyped-def]
    """Drag and drop a file onto the drop zone, as a user would from their file manager."""
    data = page.evaluate_handle(
        """([name, text]) => { const dt = new DataTransfer();
             dt.items.add(new File([text], name, { type: 'application/x-ndjson' })); return dt; }""", [name, text])
    page.get_by_test_id("dropzone").dispatch_event("drop", {"dataTransfer": data})


def test_contribute_shows_errors_by_line_before_signing_then_records_a_good_file_on_chain(page, stack: Stack) -> None:
    before = int(stack.client.call(stack.contracts.datanets.functions.contributionCount()))
    _open(page, stack, "contribute")
    _connect(page)
    knows_rules = _serves_metadata(stack)
    if knows_rules:
        assert "classification rows labelled account / technical / shipping / billing" in page.get_by_test_id("rules").inner_text()
    bad = "\n".join([
        json.dumps({"text": "my parcel never came", "label": "shipping"}),
        '{"text": "broken json", "label": ',
        json.dumps({"text": "refund please", "label": "refunds"}),
        json.dumps({"text": "hello"}),
    ]) + "\n"
    page.get_by_test_id("file-input").set_input_files(
        files=[{"name": "bad.jsonl", "mimeType": "application/x-ndjson", "buffer": bad.encode()}])
    errors = page.get_by_test_id("validation-errors")
    errors.wait_for()
    text = errors.inner_text()
    assert "line 2" in text and "not valid JSON" in text
    if knows_rules:  # the page checks the Datanet's own rules too
        assert "line 3" in text and "refunds" in text and "line 4" in text and "missing key 'label'" in text
    assert page.get_by_test_id("submit-contribution").is_disabled()
    assert page.locator("[data-testid=tx]").count() == 0  # nothing was signed
    assert int(stack.client.call(stack.contracts.datanets.functions.contributionCount())) == before

    # A file only the Datanet's rules refuse (a label it does not have): caught in the page when it
    # knows the rules, otherwise by the server on upload; either way by line, and nothing is sent.
    off_label = json.dumps({"text": "can I get a refund?", "label": "refunds"}) + "\n"
    page.get_by_test_id("file-input").set_input_files(
        files=[{"name": "labels.jsonl", "mimeType": "application/x-ndjson", "buffer": off_label.encode()}])
    if not knows_rules:
        page.get_by_test_id("validation-ok").wait_for()
        page.get_by_test_id("submit-contribution").click()
    refused = page.get_by_test_id("validation-errors")
    playwright_sync.expect(refused).to_contain_text("line 1: label 'refunds' is not one of", timeout=15_000)
    assert page.locator("[data-testid=tx]").count() == 0
    assert int(stack.client.call(stack.contracts.datanets.functions.contributionCount())) == before

    good = "".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in (
        ("I was charged twice for my subscription this month.", "billing"),
        ("The app crashes when I open settings on Android 14.", "technical"),
        ("Where is my order? Tracking has not moved for a week.", "shipping"),
    ))
    _drop_file(page, "tickets.jsonl", good)
    page.get_by_test_id("validation-ok").wait_for()
    page.get_by_test_id("submit-contribution").click()
    done = page.get_by_test_id("contribution-done")
    done.wait_for(timeout=30_000)
    assert page.locator("[data-testid=tx][data-status=confirmed]").count() == 1
    assert int(stack.client.call(stack.contracts.datanets.functions.contributionCount())) == before + 1
    record = stack.client.call(stack.contracts.datanets.functions.getContribution(before + 1))
    assert record[1] == USER.address  # contributor: the wallet's account
    assert f"Contribution #{before + 1} recorded: 3 rows" in done.inner_text()
    stack.wait_indexed(lambda: stack.index(f"/contributions/{before + 1}")["status"] == "pending")
    # Chromium logs the refused upload's HTTP 422 itself; nothing else may appear.
    expected = [] if knows_rules else ["console.error: Failed to load resource: the server responded with a status of 422 (Unprocessable Entity)"]
    assert page.console.errors == expected


def test_a_revert_is_shown_as_failed_with_its_decoded_reason(page, stack: Stack) -> None:
    """USER is not a curator: approving is refused by the chain, and the page says why."""
    count = int(stack.client.call(stack.contracts.datanets.functions.contributionCount()))
    if count == 0:
        pytest.skip("needs the contribution made by the previous test")
    _open(page, stack, "curate/1")
    _connect(page)
    page.wait_for_selector("[data-testid^=pick-]")
    page.locator("[data-testid^=pick-]").first.check()
    page.get_by_test_id("approve").click()
    failed = page.locator("[data-testid=tx][data-status=failed]")
    failed.wait_for()
    assert "NotCurator(1, " in failed.inner_text()
    assert page.console.errors == []


def test_create_datanet_checks_the_form_then_stores_metadata_and_creates_it_from_the_wallet(page, stack: Stack) -> None:
    before = int(stack.client.call(stack.contracts.datanets.functions.datanetCount()))
    _open(page, stack, "datanets/new")
    _connect(page)
    page.get_by_test_id("dn-name").fill("Product reviews")
    page.get_by_test_id("dn-labels").fill("positive")  # one label: not a classification
    page.get_by_test_id("dn-curators").fill("0x1234, " + CURATOR.address)
    page.get_by_test_id("create-datanet").click()
    problems = page.get_by_test_id("dn-problems").inner_text()
    assert "at least two labels" in problems and "not addresses: 0x1234" in problems
    assert page.locator("[data-testid=tx]").count() == 0  # nothing stored or signed

    page.get_by_test_id("dn-description").fill("Short product reviews by sentiment.")
    page.get_by_test_id("dn-labels").fill("positive, negative, neutral")
    page.get_by_test_id("dn-max-rows").fill("50")
    page.get_by_test_id("dn-curators").fill(f"{CURATOR.address}\n{USER.address}")
    page.get_by_test_id("dn-stake").fill("0.5")
    page.get_by_test_id("dn-slash").check()
    page.get_by_test_id("create-datanet").click()
    done = page.get_by_test_id("datanet-created")
    done.wait_for(timeout=30_000)
    new_id = before + 1
    assert f"Datanet #{new_id} created" in done.inner_text()
    page.locator("[data-testid=tx][data-status=confirmed]", has_text="Create Datanet Product reviews").wait_for()
    record = json.loads(_get(f"{stack.url}/v1/datanets/{new_id}"))
    assert record["metadata"]["name"] == "Product reviews"
    assert record["metadata"]["labels"] == ["positive", "negative", "neutral"]
    assert record["metadata"]["max_rows_per_file"] == 50
    assert record["owner"] == USER.address and int(record["stake"]) == 5 * 10**17 and record["slash_on_reject"] is True
    for who in (CURATOR, USER):
        assert stack.client.call(stack.contracts.datanets.functions.isCurator(new_id, who.address))
    # The new Datanet is listed by name once the index has it, and its rules drive Contribute.
    stack.wait_indexed(lambda: stack.index("/datanets")["total"] >= new_id)
    _open(page, stack, "datanets")
    assert "Product reviews" in page.get_by_test_id("datanet-list").inner_text()
    _open(page, stack, f"contribute/{new_id}")
    assert "labelled positive / negative / neutral; at most 50 rows" in page.get_by_test_id("rules").inner_text()
    assert page.console.errors == []


def test_duplicate_rows_are_flagged_after_upload_and_in_the_review_queue(browser, page, stack: Stack) -> None:
    base = "my card was charged twice for the same order and I would like one of the payments refunded please"
    rows = [
        {"text": base, "label": "billing"},
        {"text": "  My CARD was charged twice for the same order and I would like one of the payments refunded please ", "label": "billing"},
        {"text": base + " today", "label": "billing"},
        {"text": "the login page says my password is wrong even after I reset it twice this morning", "label": "account"},
    ]
    _open(page, stack, "contribute/1")
    _connect(page)
    _drop_file(page, "dups.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    page.get_by_test_id("validation-ok").wait_for()
    page.get_by_test_id("submit-contribution").click()
    page.get_by_test_id("contribution-done").wait_for(timeout=30_000)
    flags = page.get_by_test_id("duplicate-flags")
    text = flags.inner_text()
    assert "line 2: exact duplicate of line 1 of the same file" in text, text
    assert "line 3: near duplicate" in text and "of line 1 of the same file" in text, text
    assert page.locator("[data-testid=duplicate-flags] li[data-line='4']").count() == 0
    contribution = int(stack.client.call(stack.contracts.datanets.functions.contributionCount()))
    stack.wait_indexed(lambda: stack.index(f"/contributions/{contribution}")["status"] == "pending")
    assert page.console.errors == []

    # The curator sees the same flags in the review queue, beside a preview of the rows.
    ctx = browser.new_context(viewport=PHONE)
    ctx.add_init_script(_wallet_script(stack.devnet.rpc_url, CURATOR.address))
    curator = ctx.new_page()
    console = Console(curator)
    try:
        _open(curator, stack, "curate/1")
        _connect(curator)
        cell = curator.get_by_test_id(f"flags-{contribution}")
        cell.wait_for()
        assert cell.get_attribute("data-exact") == "1" and cell.get_attribute("data-near") == "1"
        cell.locator("summary").click()
        assert "near duplicate" in cell.inner_text() and "exact duplicate" in cell.inner_text()
        row = curator.locator("tr", has=curator.get_by_test_id(f"pick-{contribution}"))
        assert "my card was charged twice" in row.locator("pre.preview").inner_text()
        overflow = curator.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"#/curate/1 is {overflow}px wider than the phone viewport"
        SHOTS.mkdir(parents=True, exist_ok=True)
        curator.screenshot(path=str(SHOTS / "curate-1-flags-phone.png"), full_page=True)
        assert console.errors == []
    finally:
        ctx.close()
