"""Fixtures for tests that need a real chain: one anvil per session, a fresh deployment per test."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from provenant.chain.client import ChainClient
from provenant.chain.deploy import Contracts, deploy_all
from provenant.chain.devnet import Devnet, start_anvil
from provenant.chain.keys import dev_accounts


@pytest.fixture(scope="session")
def anvil(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    log = tmp_path_factory.mktemp("anvil") / "anvil.log"
    with start_anvil(log_path=log) as devnet:
        yield devnet


@pytest.fixture()
def chain(anvil: Devnet) -> Iterator[ChainClient]:
    """A client on a chain reverted to a clean snapshot after the test."""
    client = ChainClient(anvil.rpc_url)
    snapshot = client.w3.provider.make_request("evm_snapshot", [])["result"]
    yield client
    client.w3.provider.make_request("evm_revert", [snapshot])


@pytest.fixture()
def deployed(chain: ChainClient, tmp_path: Path) -> Contracts:
    return deploy_all(chain, dev_accounts()[0], tmp_path / "home", protocol_treasury=dev_accounts()[1].address)
