"""`provenant settle-loop`: what it refuses at start-up (each refusal names its problem, in one line,
never a key), its configuration, and a dead RPC endpoint. Its long run (kills, restarts, every wei)
is tests/test_settlement_soak.py."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from provenant.chain.client import ChainClient
from provenant.chain.deploy import Contracts
from provenant.chain.devnet import free_port
from provenant.chain.keys import dev_accounts
from provenant.settlement.membership import EpochPolicy
from provenant.settlement.service import PeerSpec, ServiceConfig, ServiceRefused, SettleService

ADMIN, ATTRIBUTOR, PEER, OUTSIDER = (dev_accounts()[i] for i in (0, 7, 8, 9))


def _hex(account) -> str:  # type: ignore[no-untyped-def]
    return "0x" + bytes(account.key).hex()


def _run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from provenant import cli

    saved = sys.argv
    sys.argv = ["provenant", *args]
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        sys.argv = saved
    return code, capsys.readouterr().err


@pytest.fixture()
def registered(chain: ChainClient, deployed: Contracts) -> Contracts:
    settlement = deployed.settlement.functions
    role = chain.call(settlement.ATTRIBUTOR_ROLE())
    for account in (ATTRIBUTOR, PEER):
        chain.transact(ADMIN, settlement.grantRole(role, account.address))
    chain.transact(ADMIN, settlement.setQuorum(2))
    return deployed


def test_config_file_and_command_line_options_combine(tmp_path: Path) -> None:
    path = tmp_path / "loop.json"
    path.write_text(json.dumps({"models": [3, 1], "policy": {"max_calls": 50, "max_age_s": 600}, "interval_s": 9,
                                "peers": [{"key_env": "PEER_ONE_KEY", "calls": "/x/calls"}]}))
    config = ServiceConfig.load(path, rpc_url="http://127.0.0.1:1", home=tmp_path, interval_s=2.0, calls=None,
                                policy=None)
    assert config.model_ids == (3, 1) and config.policy == EpochPolicy(max_calls=50, max_age_s=600)
    assert config.interval_s == 2.0 and config.calls == tmp_path / "calls"  # the command line wins
    assert config.peers == (PeerSpec(key_env="PEER_ONE_KEY", calls=Path("/x/calls"), name="peer-1"),)
    path.write_text(json.dumps({"peers": [{"calls": "/x"}]}))
    with pytest.raises(ServiceRefused, match="peer 1 in the settle-loop config: needs key_env"):
        ServiceConfig.load(path, rpc_url="x", home=tmp_path)


def test_refuses_a_missing_key_naming_the_variable(tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("LOOP_TEST_KEY", raising=False)
    code, err = _run_cli(["settle-loop", "--key-env", "LOOP_TEST_KEY", "--rpc-url", "http://127.0.0.1:1",
                          "--home", str(tmp_path)], capsys)
    assert code == 1 and "settle-loop key: environment variable LOOP_TEST_KEY is not set" in err
    assert err.count("error:") == 1 and "Traceback" not in err


def test_refuses_an_unregistered_key_and_an_unreachable_quorum(anvil, chain, registered, tmp_path, monkeypatch,  # type: ignore[no-untyped-def]
                                                               capsys) -> None:
    home = tmp_path / "home"  # where the `deployed` fixture wrote the manifest
    monkeypatch.setenv("LOOP_TEST_KEY", _hex(OUTSIDER))
    args = ["settle-loop", "--key-env", "LOOP_TEST_KEY", "--rpc-url", anvil.rpc_url, "--home", str(home)]
    code, err = _run_cli(args, capsys)
    assert code == 1 and f"attributor {OUTSIDER.address} is not registered" in err
    assert _hex(OUTSIDER)[2:] not in err

    monkeypatch.setenv("LOOP_TEST_KEY", _hex(ATTRIBUTOR))
    code, err = _run_cli(args, capsys)  # quorum 2, no peers configured
    assert code == 1 and "the quorum is 2 signatures but only 0 co-signing peer(s)" in err

    config = tmp_path / "loop.json"
    config.write_text(json.dumps({"peers": [{"key_env": "LOOP_PEER_KEY"}]}))
    monkeypatch.delenv("LOOP_PEER_KEY", raising=False)
    code, err = _run_cli([*args, "--config", str(config)], capsys)
    assert code == 1 and "peer-1: environment variable LOOP_PEER_KEY (its key) is not set" in err

    monkeypatch.setenv("LOOP_PEER_KEY", _hex(OUTSIDER))  # a peer whose key is not registered
    service = SettleService(ServiceConfig.load(config, rpc_url=anvil.rpc_url, home=home, key_env="LOOP_TEST_KEY"))
    with pytest.raises(ServiceRefused, match=f"peer-1: .*{OUTSIDER.address} is not registered"):
        service.start()
    log = (home / "settle-loop" / "peer-1.log").read_text()
    assert _hex(OUTSIDER)[2:] not in log and _hex(ATTRIBUTOR)[2:] not in log


def test_a_dead_rpc_is_retried_then_one_clear_line(tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("LOOP_TEST_KEY", _hex(ATTRIBUTOR))
    started = time.monotonic()
    code, err = _run_cli(["settle-loop", "--key-env", "LOOP_TEST_KEY", "--rpc-url", dead, "--home", str(tmp_path)],
                         capsys)
    assert time.monotonic() - started >= 1.5  # it retried before giving up
    assert code == 1 and f"error: RPC endpoint {dead} did not answer while connecting" in err
    assert err.count("error:") == 1 and "Traceback" not in err


def test_the_command_has_help() -> None:
    from typer.testing import CliRunner

    from provenant.cli import app

    result = CliRunner().invoke(app, ["settle-loop", "--help"])
    assert result.exit_code == 0 and "--max-calls" in result.output and "--config" in result.output


def test_a_node_that_dies_while_running_stops_the_service_after_its_allowed_failures(  # type: ignore[no-untyped-def]
        anvil, chain, registered, tmp_path, monkeypatch) -> None:
    from web3 import HTTPProvider

    from provenant.settlement.rpc import RpcUnavailable

    chain.transact(ADMIN, registered.settlement.functions.setQuorum(1))  # no peers needed to start
    monkeypatch.setenv("LOOP_TEST_KEY", _hex(ATTRIBUTOR))
    service = SettleService(ServiceConfig(rpc_url=anvil.rpc_url, home=tmp_path / "home", calls=tmp_path / "calls",
                                          key_env="LOOP_TEST_KEY", interval_s=0.05, max_rpc_failures=2,
                                          max_ticks=3))
    service.start()
    assert service.tick().settled == []  # nothing charged: nothing to do
    dead = f"http://127.0.0.1:{free_port()}"
    service.loop.client.w3.provider = HTTPProvider(dead)  # the node goes away under the running service
    with pytest.raises(RpcUnavailable, match=f"RPC endpoint {anvil.rpc_url} did not answer while reading"):
        service.run()
