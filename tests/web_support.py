"""Set-up shared by the browser tests (tests/test_web_*.py): real headless Chromium, a real anvil and
the real backend in a subprocess.

One place for what every browser test module needs: the checks that the tools are there (failing
loudly, never skipping), starting a backend and waiting until it answers, the test-only EIP-1193
wallet (WALLET_JS), the Chromium launch, pages with console capture and a screenshot on failure, and
the steps every page test takes (open a route, connect the wallet, sign in).

It also holds the `stack`, `browser` and `page` fixtures of the plain app stack (an anvil of its own,
the five contracts deployed, Datanet #1 created by CURATOR, `provenant app` serving web/dist);
test_web_app and test_web_factory import them, so each of those modules gets its own stack (module
scope). They are not shared across modules on purpose: the tests count Datanets, contributions and
jobs, and test_web_factory trains on exactly the rows it approved on Datanet #1.
Screenshots of any failure go to build/web-screenshots/ (git-ignored).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

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


def wallet_script(rpc_url: str, account: str, start_chain: int = 31337) -> str:
    """The test wallet, configured for this anvil and account (it signs on chain id 31337 only)."""
    return (WALLET_JS.replace("__RPC_URL__", rpc_url).replace("__ACCOUNT__", account)
            .replace("__START_CHAIN__", hex(start_chain)))


def get(url: str, timeout: float = 2.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - loopback only
        return r.read()


def require_browser_tools() -> None:
    """Fail (never skip) when playwright, the built web app or Chromium is missing."""
    if playwright_sync is None:
        pytest.fail(NO_PLAYWRIGHT)
    if not (DIST / "index.html").exists():
        pytest.fail("web/dist is not built: run `make setup` (npm ci && npm run build in web/)")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: run `bash scripts/ensure-chromium.sh` (apt-get install chromium)")


@contextmanager
def serve_backend(argv: list[str], port: int, log_path: Path, what: str,
                  start_timeout: float = 90.0) -> Iterator[str]:
    """Run a backend process (argv listens on 127.0.0.1:port), wait until GET /v1/config answers, yield
    its URL; fail with the tail of its log when it exits or does not answer within start_timeout s.
    The process is terminated (killed after 10 s) on the way out."""
    log = log_path.open("wb")
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            try:
                get(f"{url}/v1/config")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail(f"{what} did not start:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@contextmanager
def deployed_chain(base: Path, admin: Any) -> Iterator[tuple[Devnet, ChainClient, Contracts]]:
    """An anvil of its own (log in base/anvil.log) with the five contracts deployed by admin into base/home."""
    with start_anvil(log_path=base / "anvil.log") as devnet:
        client = ChainClient(devnet.rpc_url)
        yield devnet, client, deploy_all(client, admin, base / "home", protocol_treasury=dev_accounts()[1].address)


class Stack:
    """A running stack: its anvil, home folder (store, contracts file), deployed contracts and backend URL."""

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
        return json.loads(get(f"{self.url}/v1/index{path}"))


class Console:
    """Console errors and uncaught exceptions of one page."""

    def __init__(self, page) -> None:  # type: ignore[no-untyped-def]
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))


def new_page(browser, *, viewport: Mapping[str, int] = DESKTOP, timeout_ms: int | None = None,  # type: ignore[no-untyped-def]
             rpc_url: str | None = None, account: str | None = None, start_chain: int = 31337):
    """A page in a fresh browser context (new sessionStorage), its console errors in `page.console`;
    with the test wallet for `account` on `rpc_url` when an account is given. Close it with
    `page.context.close()`."""
    ctx = browser.new_context(viewport=dict(viewport))
    if account is not None:
        assert rpc_url is not None, "the test wallet needs anvil's URL"
        ctx.add_init_script(wallet_script(rpc_url, account, start_chain))
    pg = ctx.new_page()
    if timeout_ms is not None:
        pg.set_default_timeout(timeout_ms)
    pg.console = Console(pg)  # type: ignore[attr-defined]
    return pg


@contextmanager
def shots_on_failure(request: pytest.FixtureRequest, pages: Mapping[str, Any], prefix: str = "") -> Iterator[None]:
    """Around a fixture's yield: if the test failed, screenshot every page as it was, to
    FAILED-<prefix><name>.png. `pages` is read after the test, so a dict the test fills works."""
    failures_before = request.session.testsfailed
    yield
    if request.session.testsfailed > failures_before:  # the call phase failed: keep what the pages showed
        SHOTS.mkdir(parents=True, exist_ok=True)
        for name, pg in pages.items():
            pg.screenshot(path=str(SHOTS / f"FAILED-{prefix}{name}.png"), full_page=True)


def open_page(page, stack: Any, route: str, loading: str = "main [role=status]") -> None:  # type: ignore[no-untyped-def]
    """Go to #/route on stack.url and wait until the page has a heading and nothing matches `loading`."""
    page.goto(f"{stack.url}/#/{route}")
    page.wait_for_selector("main h1")
    page.wait_for_function(f"() => !document.querySelector({json.dumps(loading)})")  # nothing left loading


def connect(page) -> None:  # type: ignore[no-untyped-def]
    page.get_by_test_id("connect").click()
    page.get_by_test_id("account").wait_for()


def sign_in(page) -> None:  # type: ignore[no-untyped-def]
    page.get_by_test_id("sign-in").click()
    page.get_by_test_id("sign-out").wait_for()


def page_overflow(page) -> int:  # type: ignore[no-untyped-def]
    """How many CSS pixels the document is wider than the viewport (<= 1 means it fits)."""
    return int(page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth"))


@pytest.fixture(scope="module")
def browser():  # type: ignore[no-untyped-def]
    require_browser_tools()
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The plain app stack: Datanet #1 ("Support tickets") created by CURATOR, `provenant app` serving it."""
    require_browser_tools()
    base = tmp_path_factory.mktemp("web")
    home = base / "home"
    with deployed_chain(base, CURATOR) as (devnet, client, contracts):
        DatanetService(client, contracts, open_store(str(home / "store"))).create(CURATOR, METADATA, curators=[CURATOR.address])
        port = free_port()
        argv = [sys.executable, "-m", "provenant.cli", "app", "--port", str(port), "--domain", f"127.0.0.1:{port}",
                "--rpc-url", devnet.rpc_url, "--home", str(home)]
        with serve_backend(argv, port, base / "app.log", "`provenant app`", start_timeout=60) as url:
            s = Stack(devnet, home, contracts, client, url)
            s.wait_indexed(lambda: s.index("/datanets")["total"] >= 1)
            yield s


@pytest.fixture()
def page(browser, stack: Stack, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """A fresh browser context (new sessionStorage) with the test wallet for USER."""
    pg = new_page(browser, timeout_ms=15_000, rpc_url=stack.devnet.rpc_url, account=USER.address)
    with shots_on_failure(request, {request.node.name: pg}):
        yield pg
    pg.context.close()
