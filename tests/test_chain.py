"""The chain client against a real anvil: deployment, manifests, reverts, keys, dead RPCs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from eth_account import Account

from provenant.chain.client import ChainClient
from provenant.chain.deploy import AlreadyDeployed, Contracts, DeploymentManifest, NotDeployed, deploy_all
from provenant.chain.devnet import free_port
from provenant.chain.errors import ChainUnavailable, TransactionReverted
from provenant.chain.keys import KeyLoadError, account_from_hex, check_key_allowed, dev_accounts


def test_deploy_writes_manifest_and_wires_contracts(deployed: Contracts, chain: ChainClient) -> None:
    manifest = deployed.manifest
    assert manifest.chain_id == 31337
    assert set(manifest.addresses) == {"ProvenantToken", "DatanetRegistry", "ModelRegistry", "UsageEscrow",
                                       "AttributionSettlement"}
    for address in manifest.addresses.values():
        assert chain.w3.eth.get_code(address), f"no code at {address}"
    assert chain.call(deployed.escrow.functions.settlement()) == manifest.addresses["AttributionSettlement"]
    assert chain.call(deployed.settlement.functions.split()) == [500, 1500, 1000, 7000]


def test_second_deploy_on_same_chain_is_refused_and_changes_nothing(chain: ChainClient, tmp_path: Path) -> None:
    home = tmp_path / "home"
    deploy_all(chain, dev_accounts()[0], home)
    manifest_before = DeploymentManifest.path_for(home, 31337).read_text()
    block_before = chain.w3.eth.block_number
    with pytest.raises(AlreadyDeployed, match="already has a deployment"):
        deploy_all(chain, dev_accounts()[0], home)
    assert DeploymentManifest.path_for(home, 31337).read_text() == manifest_before
    assert chain.w3.eth.block_number == block_before


def test_missing_manifest_names_the_fix(chain: ChainClient, tmp_path: Path) -> None:
    with pytest.raises(NotDeployed, match="provenant deploy"):
        Contracts.load(chain, tmp_path)


def test_revert_is_decoded_with_contract_function_and_custom_error(deployed: Contracts, chain: ChainClient) -> None:
    with pytest.raises(TransactionReverted) as info:
        chain.transact(dev_accounts()[3], deployed.datanets.functions.approve(7, [1]))
    assert str(info.value) == "DatanetRegistry.approve reverted: UnknownDatanet(7)"


def test_nonce_management_sends_a_burst_without_gaps(deployed: Contracts, chain: ChainClient) -> None:
    admin, other = dev_accounts()[0], dev_accounts()[5]
    before = chain.call(deployed.token.functions.balanceOf(other.address))
    for _ in range(15):
        chain.transact(admin, deployed.token.functions.transfer(other.address, 3))
    assert chain.call(deployed.token.functions.balanceOf(other.address)) == before + 45


def test_dead_rpc_gives_one_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ChainUnavailable, match=f"cannot reach the RPC endpoint {url}"):
        ChainClient(url, request_timeout=2)


def test_dev_keys_refused_off_devnet_and_allowed_on_it() -> None:
    check_key_allowed(dev_accounts()[0], 31337)
    with pytest.raises(KeyLoadError, match="only on chain id 31337"):
        check_key_allowed(dev_accounts()[0], 1)
    fresh = Account.create()
    check_key_allowed(fresh, 1)


def test_malformed_key_error_never_contains_the_key() -> None:
    secret = "0x" + "ab" * 31 + "zz"
    with pytest.raises(KeyLoadError) as info:
        account_from_hex(secret, "environment variable PROVENANT_KEY")
    assert "ab" * 31 not in str(info.value)
    assert "PROVENANT_KEY" in str(info.value)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "provenant.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def test_cli_bad_inputs_exit_non_zero_with_one_line(anvil, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dead = _cli("deploy", "--rpc-url", f"http://127.0.0.1:{free_port()}", "--home", str(tmp_path), "--dev-account", "0")
    assert dead.returncode == 1 and dead.stderr.strip().count("\n") == 0 and "cannot reach" in dead.stderr
    bad_key = _cli("deploy", "--rpc-url", anvil.rpc_url, "--home", str(tmp_path),
                   env={"PROVENANT_KEY": "0x1234"})
    assert bad_key.returncode == 1 and "not a private key" in bad_key.stderr and "0x1234" not in bad_key.stderr
    assert not (tmp_path / "deployments").exists()


def test_every_cli_command_has_help() -> None:
    for command in (["--help"], ["demo", "--help"], ["deploy", "--help"], ["datanet", "create", "--help"],
                    ["datanet", "show", "--help"], ["contribute", "--help"], ["approve", "--help"],
                    ["reject", "--help"], ["train", "--help"], ["serve", "--help"], ["settle", "--help"],
                    ["claim", "--help"], ["verify", "model", "--help"], ["verify", "epoch", "--help"],
                    ["verify", "receipt", "--help"], ["propose", "--help"], ["cosign", "--help"],
                    ["post-settlement", "--help"], ["attributor-worker", "--help"], ["devnet", "--help"],
                    ["settle-loop", "--help"], ["app", "--help"]):
        result = _cli(*command)
        assert result.returncode == 0, (command, result.stderr)
        assert "Usage" in result.stdout
