"""x402 payments and royalty routing on a real anvil, with two classifier models trained for real.

The official `x402` client (PyPI) pays /v1/classifications unchanged: HTTP 402 with PAYMENT-REQUIRED,
PAYMENT-SIGNATURE with an EIP-3009 authorization to the model's own vault, PAYMENT-RESPONSE; our
in-process facilitator settles it into the model's escrowed fees as a charge tied to the call.
Bad payments (wrong amount, asset, network, payee, expired, reused nonce) get 402 naming the
problem and change nothing. The end-to-end test: an ERC-8004 agent makes paid calls on both models
(x402 and vouchers), earns revenue from a client, routes its declared royalty; both models' epochs
settle; contributors and curators claim; every token is accounted for to the wei.
"""

from __future__ import annotations

import base64
import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
from eth_account import Account
from eth_account.signers.local import LocalAccount
from x402 import x402ClientSync
from x402.http.clients import x402_requests
from x402.http.utils import decode_payment_required_header, encode_payment_signature_header
from x402.mechanisms.evm.exact import ExactEvmClientScheme
from x402.schemas import PaymentRequired

from provenant.agents.bundle import ActionBundle
from provenant.agents.registry import RegistrationFile, register_agent
from provenant.agents.royalty import RoyaltyError, model_amounts, route_royalty
from provenant.agents.sdk import AgentSession
from provenant.agents.verify import verify_action
from provenant.chain.client import ChainClient
from provenant.chain.deploy import Contracts, deploy_all
from provenant.chain.devnet import Devnet, free_port
from provenant.chain.keys import dev_accounts
from provenant.datanets.service import DatanetService
from provenant.demo.thread import _serve, samples_dir
from provenant.factory.builder import ModelFactory, ModelRequest
from provenant.factory.train import LoraSettings
from provenant.payments.deposits import deposit_with_permit
from provenant.payments.vouchers import Voucher, sign_voucher
from provenant.serving.api import create_app
from provenant.serving.calllog import CallLog
from provenant.serving.receipts import Receipt
from provenant.serving.service import ServingService
from provenant.settlement.attributor import Attributor, settled_results
from provenant.settlement.claims import claim_all, claimable
from provenant.store import open_store
from provenant.store.blockstore import ContentStore

WEI = 10**18
PRICES = {"x402-a": 1_234_567_890_123_457, "x402-b": 987_654_321_987_655}  # odd: rounding dust must appear
EARNED = 5 * WEI
ROYALTY_PPM = 150_000
ROWS = 30


@dataclass
class World:
    client: ChainClient
    contracts: Contracts
    store: ContentStore
    service: ServingService
    url: str
    calls_dir: Path
    admin: LocalAccount
    treasury: LocalAccount
    builder: LocalAccount
    curators: list[LocalAccount]
    contributors: list[LocalAccount]
    attributor: LocalAccount
    agent_owner: LocalAccount  # also the agent wallet that pays
    customer: LocalAccount  # pays the agent for its work
    voucher_consumer: LocalAccount
    models: dict[str, int] = field(default_factory=dict)
    server: Any = None

    def endpoint(self) -> str:
        return self.url + "/v1/classifications"

    def charge_seq(self, model_id: int) -> int:
        return int(self.client.call(self.contracts.escrow.functions.chargeSeq(model_id)))

    def balance(self, address: str) -> int:
        return int(self.client.call(self.contracts.token.functions.balanceOf(address)))

    def vault(self, model_id: int) -> str:
        return str(self.client.call(self.contracts.x402.functions.vaultOf(model_id)))

    def logged(self) -> int:
        return sum(len(CallLog(self.calls_dir).read(m)) for m in self.models.values())


def _slice(source: str, target: Path) -> Path:
    lines = (samples_dir() / source).read_text(encoding="utf-8").splitlines()[:ROWS]
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target


@pytest.fixture(scope="module")
def world(anvil: Devnet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("x402")
    client = ChainClient(anvil.rpc_url)
    snapshot = client.w3.provider.make_request("evm_snapshot", [])["result"]
    k = list(dev_accounts(20))
    admin, treasury, builder, server = k[0], k[1], k[9], k[10]
    contracts = deploy_all(client, admin, root / "home", protocol_treasury=treasury.address)
    store = open_store(str(root / "home" / "store"))
    settlement = contracts.settlement.functions
    attributor = k[13]
    client.transact(admin, settlement.grantRole(client.call(settlement.ATTRIBUTOR_ROLE()), attributor.address))
    client.transact(admin, settlement.setQuorum(1))
    spec = {d["name"]: d for d in json.loads((samples_dir() / "datanets.json").read_text())["datanets"]}
    meta = {key: v for key, v in spec["support-tickets"].items()
            if key not in ("contributors", "curator_rejects", "used_by_demo_model")}
    datanets = DatanetService(client, contracts, store)
    curators, contributors = k[2:4], k[5:7]
    d1 = datanets.create(curators[0], meta, curators=[c.address for c in curators])
    ids = [datanets.contribute(c, d1, _slice(name, root / name)).contribution_id
           for c, name in zip(contributors, ("alice_1.jsonl", "bob_1.jsonl"))]
    datanets.approve(curators[0], d1, ids)
    calls_dir = root / "calls"
    service = ServingService(client, contracts, store, server, CallLog(calls_dir))
    w = World(client=client, contracts=contracts, store=store, service=service, url="", calls_dir=calls_dir,
              admin=admin, treasury=treasury, builder=builder, curators=curators, contributors=contributors,
              attributor=attributor, agent_owner=k[11], customer=k[12], voucher_consumer=k[14])
    factory = ModelFactory(client, contracts, store, datanets)
    for name, price in PRICES.items():
        built = factory.build(builder, ModelRequest(name=name, datanet_ids=(d1,), server=server.address,
                                                    price_per_call=price, settings=LoraSettings(epochs=1, max_length=32)))
        w.models[name] = built.model_id
    for who in (w.agent_owner, w.customer, w.voucher_consumer):
        client.transact(admin, contracts.token.functions.transfer(who.address, 20 * WEI))
    port = free_port()
    w.server = _serve(create_app(service), port)
    w.url = f"http://127.0.0.1:{port}"
    yield w
    w.server.should_exit = True
    client.w3.provider.make_request("evm_revert", [snapshot])


def _x402_session(payer: LocalAccount, token: str) -> requests.Session:
    """The official x402 client, unchanged: an `exact` EVM scheme over the payer's key, with the
    project's token opted in by the client's own spend controls (capped at 0.01 token a call)."""
    x402 = x402ClientSync()
    x402.register("eip155:31337", ExactEvmClientScheme(payer))
    x402.set_spend_controls({"allowed_assets": [{"network": "eip155:31337", "asset": token,
                                                 "max_amount_per_payment": str(10**16)}]})
    return x402_requests(x402)


def _ask(w: World, model: str, text: str) -> dict:
    return {"model": model, "input": text}


def _required(response: requests.Response) -> PaymentRequired:
    assert response.status_code == 402, response.text
    required = decode_payment_required_header(response.headers["PAYMENT-REQUIRED"])
    assert isinstance(required, PaymentRequired)
    return required


def _signed_header(payer: LocalAccount, required: PaymentRequired, **changes: Any) -> dict[str, str]:
    """A PAYMENT-SIGNATURE made by the official client for requirements altered by `changes`."""
    altered = copy.deepcopy(required)
    for key, value in changes.items():
        setattr(altered.accepts[0], key, value)
    x402 = x402ClientSync()
    x402.register("eip155:31337", ExactEvmClientScheme(payer))
    x402.register("eip155:1", ExactEvmClientScheme(payer))
    x402.set_spend_controls(False)  # these payloads are bad on purpose
    payload = x402.create_payment_payload(altered)
    return {"PAYMENT-SIGNATURE": encode_payment_signature_header(payload)}


# -------------------------------------------------------------------- the 402 answer


def test_unpaid_call_answers_402_in_x402_v2_format(world: World) -> None:
    model_id = world.models["x402-a"]
    response = requests.post(world.endpoint(), json=_ask(world, "x402-a", "my order never arrived"), timeout=60)
    required = _required(response)
    assert required.x402_version == 2
    [req] = required.accepts
    assert (req.scheme, req.network, req.amount) == ("exact", "eip155:31337", str(PRICES["x402-a"]))
    assert req.asset == world.contracts.token.address
    assert req.pay_to == world.vault(model_id) != world.vault(world.models["x402-b"])
    assert req.extra == {"name": "Provenant", "version": "1"}
    assert response.json()["error"]["code"] == "payment_required"
    assert response.json()["accepts"][0]["payTo"] == req.pay_to  # the body carries it too


# -------------------------------------------------------------------- paid by the official client


def test_official_x402_client_pays_and_the_fee_lands_in_escrow(world: World) -> None:
    model_id = world.models["x402-b"]
    payer = world.agent_owner
    seq, before, unsettled = world.charge_seq(model_id), world.balance(payer.address), \
        int(world.client.call(world.contracts.escrow.functions.unsettledFees(model_id)))
    response = _x402_session(payer, world.contracts.token.address).post(world.endpoint(), json=_ask(world, "x402-b", "refund please"), timeout=120)
    assert response.status_code == 200, response.text
    settle = json.loads(base64.b64decode(response.headers["PAYMENT-RESPONSE"]))
    assert settle["success"] is True and settle["payer"] == payer.address and settle["network"] == "eip155:31337"
    assert world.charge_seq(model_id) == seq + 1, "one new charge"
    assert world.balance(payer.address) == before - PRICES["x402-b"]
    assert int(world.client.call(world.contracts.escrow.functions.unsettledFees(model_id))) == \
        unsettled + PRICES["x402-b"]
    assert world.balance(world.vault(model_id)) == 0
    receipt = response.json()["provenance"]
    assert receipt["consumer"] == payer.address and int(receipt["fee"]) == PRICES["x402-b"]
    logged = {r.call_id: r for r in CallLog(world.calls_dir).read(model_id)}
    assert int(logged[receipt["call_id"]].cumulative) == int(json.loads(base64.b64decode(
        response.request.headers["PAYMENT-SIGNATURE"]))["payload"]["authorization"]["nonce"], 16)


# -------------------------------------------------------------------- bad payments


@pytest.mark.parametrize(("change", "code"), [
    ({"amount": str(PRICES["x402-a"] - 1)}, "invalid_amount"),
    ({"asset": "0x" + "11" * 20}, "invalid_asset"),
    ({"network": "eip155:1"}, "invalid_network"),
    ({"pay_to": "payee-of-other-model"}, "invalid_payee"),
    ({"max_timeout_seconds": 2}, "authorization_expired"),
])
def test_bad_x402_payment_is_refused_and_changes_nothing(world: World, change: dict, code: str) -> None:
    model_id = world.models["x402-a"]
    payer = world.agent_owner
    if change.get("pay_to") == "payee-of-other-model":
        change = {"pay_to": world.vault(world.models["x402-b"])}
    required = _required(requests.post(world.endpoint(), json=_ask(world, "x402-a", "hello"), timeout=60))
    seq, before, logged = world.charge_seq(model_id), world.balance(payer.address), world.logged()
    response = requests.post(world.endpoint(), json=_ask(world, "x402-a", "hello"), timeout=60,
                             headers=_signed_header(payer, required, **change))
    assert response.status_code == 402
    assert response.json()["error"]["code"] == code, response.json()
    assert _required(response).error and code in _required(response).error
    assert (world.charge_seq(model_id), world.balance(payer.address), world.logged()) == (seq, before, logged)


def test_reused_nonce_is_refused(world: World) -> None:
    model_id = world.models["x402-a"]
    payer = world.customer
    required = _required(requests.post(world.endpoint(), json=_ask(world, "x402-a", "hi"), timeout=60))
    header = _signed_header(payer, required)
    first = requests.post(world.endpoint(), json=_ask(world, "x402-a", "hi"), headers=header, timeout=60)
    assert first.status_code == 200, first.text
    seq, before, logged = world.charge_seq(model_id), world.balance(payer.address), world.logged()
    again = requests.post(world.endpoint(), json=_ask(world, "x402-a", "hi"), headers=header, timeout=60)
    assert again.status_code == 402 and again.json()["error"]["code"] == "nonce_already_used"
    assert (world.charge_seq(model_id), world.balance(payer.address), world.logged()) == (seq, before, logged)


def test_garbled_payment_header_is_refused(world: World) -> None:
    response = requests.post(world.endpoint(), json=_ask(world, "x402-a", "hi"), timeout=60,
                             headers={"PAYMENT-SIGNATURE": "not base64 json"})
    assert response.status_code == 402 and response.json()["error"]["code"] == "invalid_payload"


# -------------------------------------------------------------------- end to end


def _voucher_call(w: World, consumer: LocalAccount, model: str, cumulative: int, text: str) -> requests.Response:
    model_id = w.models[model]
    voucher = Voucher(consumer.address, model_id, cumulative, w.client.latest_timestamp() + 86_400)
    signature = sign_voucher(consumer, w.client.chain_id, w.contracts.escrow.address, voucher)
    body = {**_ask(w, model, text), "payment": {"voucher": voucher.to_json(), "signature": "0x" + signature.hex()}}
    return requests.post(w.endpoint(), json=body, timeout=120)


def test_agent_pays_by_x402_and_vouchers_routes_royalty_and_every_wei_is_accounted(world: World) -> None:
    w = world
    c, tok = w.client, w.contracts.token.functions
    agent_wallet = w.agent_owner
    operator = Account.create()
    a, b = w.models["x402-a"], w.models["x402-b"]
    # Everything before this test (the tests above) is settled first, so the balances below start clean.
    holders = {"agent": agent_wallet.address, "customer": w.customer.address, "voucher": w.voucher_consumer.address,
               "treasury": w.treasury.address, "builder": w.builder.address,
               **{f"contributor{i}": x.address for i, x in enumerate(w.contributors)},
               **{f"curator{i}": x.address for i, x in enumerate(w.curators)}}
    holders |= {"escrow": w.contracts.escrow.address, "settlement": w.contracts.settlement.address,
                "vault_a": w.vault(a), "vault_b": w.vault(b), "x402": w.contracts.x402.address,
                "router": w.contracts.royalties.address}
    start = {k: w.balance(v) for k, v in holders.items()}

    info = register_agent(c, w.contracts, w.store, agent_wallet,
                          RegistrationFile(name="support-bot", description="answers support tickets",
                                           operator=operator.address))
    session = AgentSession.open(c, w.contracts, operator, info.agent_id)
    x402_session = _x402_session(agent_wallet, w.contracts.token.address)
    paid_x402 = 0
    prompts = ["my parcel is late", "refund for a broken screen", "the app crashes on login",
               "change my delivery address", "invoice is wrong", "cannot reset password"]
    parents: list[str] = []
    for i, text in enumerate(prompts):  # 6 x402-paid model calls, alternating models
        model = "x402-a" if i % 2 == 0 else "x402-b"
        response = x402_session.post(w.endpoint(), json=_ask(w, model, text), timeout=120)
        assert response.status_code == 200, response.text
        paid_x402 += PRICES[model]
        action = session.add_model_receipt(Receipt.from_json(response.json()["provenance"]), text,
                                           response.json()["label"], parents=parents[-1:] or None)
        parents.append(action.hash)
    # The agent also pays by voucher (a deposit in the escrow), on both models.
    deposits = 0
    for model in ("x402-a", "x402-b"):
        deposit_with_permit(c, w.contracts, agent_wallet, w.models[model], 3 * PRICES[model])
        deposits += 3 * PRICES[model]
        for n in (1, 2):
            response = _voucher_call(w, agent_wallet, model, n * PRICES[model], f"voucher question {n}")
            assert response.status_code == 200, response.text
            action = session.add_model_receipt(Receipt.from_json(response.json()["provenance"]), "q",
                                               response.json()["label"], parents=parents[-1:])
            parents.append(action.hash)
    # A client pays the agent for its work; the agent signs the payment and its final result.
    c.transact(w.customer, tok.transfer(agent_wallet.address, EARNED))
    pay = session.payment(agent_wallet.address, EARNED, "0x" + "00" * 32, parents=parents[-1:])
    final = session.result("resolved 10 tickets", parents=[pay.hash, parents[3]], value_earned=EARNED,
                           royalty_ppm=ROYALTY_PPM)
    assert len(session.actions) >= 10
    for model in ("x402-a", "x402-b"):
        w.service.charge_pending(w.models[model])

    # Routing refuses a stranger's key; the agent's wallet routes exactly the owed model rows.
    with pytest.raises(RoyaltyError, match="is not the owner, operator or wallet"):
        route_royalty(c, w.contracts, w.voucher_consumer, session.bundle(final))
    routed = route_royalty(c, w.contracts, agent_wallet, session.bundle(final))
    verdict = verify_action(c, w.contracts, w.store, session.bundle(final))
    assert verdict.ok, verdict.reasons
    assert routed.amounts == model_amounts(verdict.ancestry) and routed.total > 0
    assert set(routed.amounts) == {a, b}
    assert any("RoyaltyRouted events route exactly" in check for check in verdict.checks)
    with pytest.raises(RoyaltyError, match="already routed"):  # one routing per action
        route_royalty(c, w.contracts, agent_wallet, session.bundle(final))
    # verify action fails on a tampered copy of a middle action.
    tampered = session.bundle(final).to_json()
    middle = next(x for x in tampered["actions"] if x["kind"] == "model_call")
    middle["value_moved"] = str(int(middle["value_moved"]) + 1)
    assert not verify_action(c, w.contracts, w.store, ActionBundle.from_json(tampered)).ok

    # Both epochs settle (x402 charges tied to their calls, the royalty split with the calls).
    attributor = Attributor(c, w.contracts, w.store, w.attributor, CallLog(w.calls_dir))
    for model_id in (a, b):
        proposal = attributor.propose(model_id)
        attributor.post(w.admin, proposal, {attributor.address: proposal.signed.signature})
    for model_id in (a, b):
        [doc] = [r for r in settled_results(c, w.contracts, w.store, model_id)
                 if r["upto_seq"] == w.charge_seq(model_id)]
        vias = [ch.get("via", "") for ch in doc["charges"]]
        assert "x402" in vias and "royalty" in vias
        x402_charges = [ch for ch in doc["charges"] if ch.get("via") == "x402"]
        assert all(ch["calls"] == 1 and ch["call_fees"] == ch["amount"] for ch in x402_charges), \
            "every x402 charge is tied to exactly its call"
    # Contributors and curators claim.
    claimed = 0
    for who in [*w.contributors, *w.curators]:
        items = claimable(c, w.contracts, w.store, who.address)
        if items:
            claim_all(c, w.contracts, who, items)
            claimed += sum(i.amount for i in items)
    assert claimed > 0

    end = {k: w.balance(v) for k, v in holders.items()}
    delta = {k: end[k] - start[k] for k in holders}
    paid_in = paid_x402 + deposits + routed.total
    assert delta["customer"] == -EARNED
    assert delta["agent"] == EARNED - paid_in, "the agent paid exactly its calls, deposits and royalty"
    received = sum(delta[k] for k in holders if k not in ("agent", "customer"))
    assert received == paid_in, "claims + claimables + escrow + vaults + owner + protocol = paid in, to the wei"
    assert sum(delta.values()) == 0
    contract_left = delta["escrow"] + delta["settlement"] + delta["vault_a"] + delta["vault_b"]
    payouts = sum(delta[k] for k in holders if k.startswith(("contributor", "curator")))
    assert payouts == claimed
    assert delta["x402"] == delta["router"] == 0
    assert contract_left + payouts + delta["treasury"] + delta["builder"] + delta["voucher"] == paid_in


def test_verify_action_fails_when_the_routed_royalty_differs_from_the_owed_rows(world: World) -> None:
    """An agent routes other amounts than its action owes (directly on the router): `verify action`
    names the model whose routed amount differs; an action that earned nothing cannot be routed."""
    w = world
    c = w.client
    owner = w.customer
    operator = Account.create()
    info = register_agent(c, w.contracts, w.store, owner,
                          RegistrationFile(name="sloppy-bot", description="routes the wrong amounts",
                                           operator=operator.address))
    session = AgentSession.open(c, w.contracts, operator, info.agent_id)
    response = _x402_session(owner, w.contracts.token.address).post(
        w.endpoint(), json=_ask(w, "x402-a", "where is my refund"), timeout=120)
    assert response.status_code == 200, response.text
    call = session.add_model_receipt(Receipt.from_json(response.json()["provenance"]), "q", response.json()["label"])
    idle = session.result("nothing earned", parents=[call.hash])
    with pytest.raises(RoyaltyError, match="owes no royalty"):
        route_royalty(c, w.contracts, owner, session.bundle(idle))
    final = session.result("done", parents=[call.hash], value_earned=WEI, royalty_ppm=100_000)
    owed = model_amounts(verify_action(c, w.contracts, w.store, session.bundle(final)).ancestry)
    model_id = w.models["x402-a"]
    assert owed == {model_id: WEI // 10}
    router = w.contracts.royalties
    c.transact(owner, w.contracts.token.functions.approve(router.address, WEI))
    c.transact(owner, router.functions.routeRoyalty(info.agent_id, [model_id], [owed[model_id] - 1],
                                                    bytes.fromhex(final.hash.removeprefix("0x"))))
    verdict = verify_action(c, w.contracts, w.store, session.bundle(final))
    assert not verdict.ok
    assert verdict.reasons == [f"model {model_id}: routed {owed[model_id] - 1} wei on chain, owed {owed[model_id]} wei"]


# -------------------------------------------------------------------- API keys on classifier calls

def test_an_api_key_pays_classifier_calls_within_its_cap(world: World) -> None:
    """A key minted from one capped voucher pays classifications: two answered, the third over the
    cap is 402 naming it, and the chain is charged exactly the two (UsageEscrow.chargeUpTo)."""
    import time

    w, model_id = world, world.models["x402-b"]
    price, consumer = PRICES["x402-b"], dev_accounts(20)[15]
    w.client.transact(w.admin, w.contracts.token.functions.transfer(consumer.address, WEI))
    deposit_with_permit(w.client, w.contracts, consumer, model_id, 5 * price)
    escrow = w.contracts.escrow.functions
    spent = int(w.client.call(escrow.spentOf(consumer.address, model_id)))
    expires_at = time.time() + 600
    voucher = Voucher(consumer=consumer.address, model_id=model_id, cumulative_amount=spent + 2 * price,
                      deadline=int(max(expires_at, w.client.latest_timestamp())) + 3600)
    signature = sign_voucher(consumer, w.client.chain_id, w.contracts.escrow.address, voucher)
    key, account = w.service.api_keys.create(consumer.address, [model_id], 2 * price, expires_at,
                                             [(voucher, signature)])
    headers = {"Authorization": f"Bearer {key}"}
    answers = [requests.post(f"{w.url}/v1/classifications", json=_ask(w, "x402-b", f"my card was charged twice {i}"),
                             headers=headers, timeout=60) for i in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 402]
    assert "cap" in answers[2].text
    for answer in answers[:2]:
        receipt = Receipt.from_json(answer.json()["provenance"])
        assert receipt.consumer == consumer.address and receipt.fee == price
    unknown = requests.post(f"{w.url}/v1/classifications", json=_ask(w, "x402-b", "hello"),
                            headers={"Authorization": "Bearer pvk_not-a-key"}, timeout=60)
    assert unknown.status_code == 401
    w.service.charge_pending(model_id)
    assert int(w.client.call(escrow.spentOf(consumer.address, model_id))) == spent + 2 * price
    assert account.key_id.startswith("key_")
