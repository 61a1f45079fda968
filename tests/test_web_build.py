"""The web app's build inputs and output, without a browser: the ABIs it calls are the contracts'
own, and the production bundle loads nothing from elsewhere and carries no test wallet."""

from __future__ import annotations

import importlib.util
import re

import pytest

from web_support import DIST, ROOT


def test_the_abis_the_web_app_calls_match_the_compiled_contracts() -> None:
    spec = importlib.util.spec_from_file_location("export_abi", ROOT / "web" / "scripts" / "export_abi.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    committed = (ROOT / "web" / "src" / "generated" / "abi.json").read_text()
    assert committed == module.render(), "contracts changed: run .venv/bin/python web/scripts/export_abi.py and rebuild web"


def test_the_bundle_loads_nothing_from_a_cdn_and_ships_no_test_wallet() -> None:
    if not (DIST / "index.html").exists():
        pytest.fail("web/dist is not built: run `make setup`")
    html = (DIST / "index.html").read_text()
    assert not re.search(r'(src|href)="(https?:)?//', html), "index.html loads something from another origin"
    for asset in DIST.rglob("*"):
        if asset.suffix in (".js", ".css", ".html"):
            text = asset.read_text(errors="replace")
            assert "ProvenantTestWallet" not in text and "Provenant Test Wallet" not in text, asset
            assert not re.search(r"""import\(\s*["']https?://|@import\s+url\(["']?https?://""", text), asset
