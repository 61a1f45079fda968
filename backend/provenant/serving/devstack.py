"""A whole serving stack on a devnet, for tests, benchmarks and the load test.

Deploys the contracts, registers causal-LM LoRA models over the tiny Llama, funds consumers with
tokens and escrow deposits (EIP-2612 permit), and runs the HTTP API on a loopback port. Only dev
keys of chain 31337 and freshly generated consumer keys are used; none is ever printed.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from provenant.chain.client import ChainClient
from provenant.chain.deploy import Contracts, deploy_all
from provenant.chain.devnet import free_port
from provenant.chain.keys import dev_accounts
from provenant.payments.deposits import deposit_with_permit
from provenant.serving.api import create_app
from provenant.serving.calllog import CallLog
from provenant.serving.lm_models import LmModel, register_lm_models
from provenant.serving.service import ServingService
from provenant.serving.settings import ServingSettings
from provenant.serving.wallet import VoucherWallet
from provenant.store import open_store
from provenant.store.blockstore import ContentStore

PRICE = 10**15
WEI = 10**18


@dataclass
class ServingStack:
    client: ChainClient
    contracts: Contracts
    store: ContentStore
    server_key: LocalAccount
    admin: LocalAccount
    builder: LocalAccount
    models: list[LmModel]
    service: ServingService
    url: str = ""
    _http: object = field(default=None, repr=False)

    def wallet(self, consumer: LocalAccount) -> VoucherWallet:
        return VoucherWallet(consumer, self.client.chain_id, self.contracts.escrow.address,
                             clock=self.client.latest_timestamp)

    def fund(self, consumer: LocalAccount, model_ids: list[int], deposit: int = 10 * WEI) -> None:
        """Tokens (and gas, for fresh keys) to the consumer, then one permit deposit per model."""
        if self.client.w3.eth.get_balance(consumer.address) == 0:  # gas for a fresh key (devnet RPC)
            self.client.w3.provider.make_request("anvil_setBalance", [consumer.address, hex(WEI)])
        self.client.transact(self.admin, self.contracts.token.functions.transfer(consumer.address,
                                                                                 deposit * len(model_ids)))
        for model_id in model_ids:
            deposit_with_permit(self.client, self.contracts, consumer, model_id, deposit)

    def start_http(self) -> str:
        from provenant.demo.thread import _serve

        port = free_port()
        self._http = _serve(create_app(self.service), port)
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    def stop(self) -> None:
        if self._http is not None:
            self._http.should_exit = True  # type: ignore[attr-defined]
        for engine in self.service._engines.values():
            engine.close()


def build_stack(rpc_url: str, workdir: Path, n_models: int, settings: ServingSettings,
                prefix: str = "lm") -> ServingStack:
    keys = dev_accounts(12)
    admin, builder, curator, contributor, server = keys[0], keys[5], keys[6], keys[7], keys[8]
    client = ChainClient(rpc_url)
    contracts = deploy_all(client, admin, workdir / "home", protocol_treasury=keys[1].address)
    store = open_store(str(workdir / "store"))
    models = register_lm_models(client, contracts, store, builder, curator, contributor, server.address,
                                n_models, PRICE, prefix=prefix)
    service = ServingService(client, contracts, store, server, CallLog(workdir / "calls"), settings)
    return ServingStack(client=client, contracts=contracts, store=store, server_key=server, admin=admin,
                        builder=builder, models=models, service=service)


def fresh_consumer() -> LocalAccount:
    return Account.from_key(secrets.token_bytes(32))
