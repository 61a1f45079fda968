"""Action receipts and the ancestry rule, without a chain: the hand-written EIP-712 digest equals
eth-account's generic encoder, malformed receipts are refused, and the rule's integers are the
ones computed by hand."""

from __future__ import annotations

import os
from fractions import Fraction

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak

from provenant.agents.ancestry import Split, compute_ancestry
from provenant.agents.receipts import ACTION_TYPES, PPM, ActionReceipt, BadActionReceipt
from provenant.serving.receipts import Receipt, attribution_hash

REGISTRY = "0x" + "ab" * 20


def _h() -> str:
    return "0x" + os.urandom(32).hex()


def _action(**over: object) -> ActionReceipt:
    fields = dict(agent_id=7, seq=3, kind="model_call", input_hash=_h(), output_hash=_h(),
                  model_call_ids=(_h(), _h()), model_receipt_hashes=(_h(), _h()), parents=(_h(),),
                  weights_ppm=(250_000, 750_000), timestamp=1_790_000_000, value_moved=2 * 10**15,
                  value_earned=10**18, royalty_ppm=100_000, chain_id=31337,
                  verifying_contract=Account.create().address)
    fields.update(over)
    return ActionReceipt(**fields)  # type: ignore[arg-type]


def _generic_digest(action: ActionReceipt) -> bytes:
    full = {"types": {"EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                                       {"name": "chainId", "type": "uint256"},
                                       {"name": "verifyingContract", "type": "address"}],
                      "Action": ACTION_TYPES},
            "primaryType": "Action", "domain": action.domain().as_dict(), "message": action.message()}
    signable = encode_typed_data(full_message=full)
    return keccak(b"\x19" + signable.version + signable.header + signable.body)


@pytest.mark.parametrize("over", [{}, {"parents": (), "weights_ppm": (), "model_call_ids": (),
                                       "model_receipt_hashes": ()}, {"kind": "result", "seq": 2**64 - 1}])
def test_digest_matches_the_generic_eip712_encoder(over: dict) -> None:
    action = _action(**over)
    assert action.digest() == _generic_digest(action)


def test_sign_recover_and_json_round_trip() -> None:
    operator = Account.create()
    action = _action().signed_by(operator)
    assert action.recover_signer() == operator.address
    again = ActionReceipt.from_json(action.to_json())
    assert again == action and again.hash == action.hash
    altered = ActionReceipt.from_json({**action.to_json(), "value_earned": "1"})
    assert altered.hash != action.hash and altered.recover_signer() != operator.address


@pytest.mark.parametrize("over, message", [
    ({"kind": "teleport"}, "not one of"),
    ({"weights_ppm": (1, 2)}, "summing to 1,000,000"),
    ({"royalty_ppm": PPM + 1}, "exceeds"),
    ({"model_receipt_hashes": ("0x00",)}, "differ in length"),
])
def test_malformed_receipts_are_refused(over: dict, message: str) -> None:
    with pytest.raises(BadActionReceipt, match=message):
        _action(**over)


def test_bad_field_values_are_refused_when_hashed() -> None:
    with pytest.raises(BadActionReceipt, match="input_hash"):
        _action(input_hash="0x1234").digest()
    with pytest.raises(BadActionReceipt, match="seq"):
        _action(seq=2**64).digest()


def _call(model_id: int, fee: int, contributions: dict[str, int], contributors: dict[str, int]) -> Receipt:
    attribution = {"contributions": [{"id": k, "share_ppm": v} for k, v in contributions.items()],
                   "contributors": [{"id": k, "share_ppm": v} for k, v in contributors.items()],
                   "datanets": [{"id": "1", "share_ppm": PPM}]}
    return Receipt(call_id=_h(), model_id=model_id, model_name=f"m{model_id}", base_model="tiny", adapter_hash=_h(),
                   lineage_root=_h(), consumer=REGISTRY, fee=fee, prompt_hash=_h(), output_hash=_h(), salt=_h(),
                   attribution=attribution, attribution_hash=attribution_hash(attribution), timestamp=1,
                   chain_id=31337, verifying_contract=REGISTRY)


def _uses(seq: int, calls: list[Receipt], weights: tuple[int, ...] = (), earned: int = 0,
          royalty: int = 0) -> ActionReceipt:
    return _action(seq=seq, model_call_ids=tuple(c.call_id for c in calls),
                   model_receipt_hashes=tuple(_h() for _ in calls), weights_ppm=weights, value_earned=earned,
                   royalty_ppm=royalty, parents=())


def test_fee_weighted_ancestry_by_hand() -> None:
    a = _call(1, 3, {"10": 600_000, "11": 400_000}, {"0xaa": PPM})
    b = _call(2, 1, {"20": 500_000}, {"0xbb": 500_000})
    ancestry = compute_ancestry([_uses(1, [a]), _uses(2, [b], earned=10**6 + 7, royalty=250_000)], {
        a.call_id: a, b.call_id: b}, Split(500, 1500, 1000, 7000), {"1": "0xo1", "2": "0xo2"})
    assert ancestry.call_weights == {a.call_id: Fraction(3, 4), b.call_id: Fraction(1, 4)}
    assert ancestry.shares["models"] == {"1": 750_000, "2": 250_000}
    # contribution 10: 3/4 * 0.6 = 0.45; 11: 3/4 * 0.4 = 0.3; 20: 1/4 * 0.5 = 0.125; the rest is the cut
    assert ancestry.shares["contributions"] == {"10": 450_000, "11": 300_000, "20": 125_000}
    assert ancestry.unattributed["contributions"] == 125_000
    assert ancestry.shares["contributors"] == {"0xaa": 750_000, "0xbb": 125_000}
    pool = (10**6 + 7) * 250_000 // PPM
    assert ancestry.pool_wei == pool == 250_001
    owed = {(r.role, r.key): r.amount_wei for r in ancestry.owed}
    assert owed[("contributor", "0xaa")] == pool * 7000 * 750_000 // (10_000 * PPM)
    assert owed[("protocol", "protocol")] == pool * 500 // 10_000
    assert sum(v for (role, _), v in owed.items() if role != "model") + ancestry.dust_wei == pool


def test_declared_weights_and_free_calls() -> None:
    a, b = _call(1, 0, {"10": PPM}, {}), _call(2, 0, {"20": PPM}, {})
    # free calls count 1 each; the action's declared weights split its mass 1:3
    ancestry = compute_ancestry([_uses(1, [a, b], weights=(250_000, 750_000))], {a.call_id: a, b.call_id: b})
    assert ancestry.shares["contributions"] == {"10": 250_000, "20": 750_000}
    # a third of a ppm floors: three equal calls leave 1 ppm unattributed
    c = [_call(i, 5, {str(i): PPM}, {}) for i in (1, 2, 3)]
    ancestry = compute_ancestry([_uses(1, c)], {x.call_id: x for x in c})
    assert ancestry.shares["models"] == {"1": 333_333, "2": 333_333, "3": 333_333}
    assert ancestry.unattributed["models"] == 1


def test_fast_model_receipt_digest_and_checks_match_the_serving_ones() -> None:
    from provenant.agents.receipts import model_receipt_digest
    from provenant.agents.verify import model_receipt_problems
    from provenant.chain.typed_data import receipt_domain, typed_digest
    from provenant.serving.receipts import check_receipt

    server = Account.create()
    good = _call(3, 10**15, {"10": PPM}, {"0xaa": PPM}).signed_by(server)
    assert model_receipt_digest(good) == typed_digest(receipt_domain(good.chain_id, good.verifying_contract),
                                                      "Receipt", good.message())
    from dataclasses import replace
    variants = [good, replace(good, fee=good.fee + 1), replace(good, attribution={"contributions": []}),
                replace(good, signature="0x" + "00" * 65)]
    for receipt in variants:
        for args in [(server.address, good.lineage_root, good.adapter_hash),
                     (Account.create().address, _h(), _h())]:
            assert model_receipt_problems(receipt, model_receipt_digest(receipt), *args) == \
                check_receipt(receipt, *args)


def test_fast_recovery_agrees_with_eth_account() -> None:
    from provenant.agents.receipts import recover_digest

    for _ in range(20):
        key, digest = Account.create(), os.urandom(32)
        sig = bytes(key.unsafe_sign_hash(digest).signature)
        assert recover_digest(digest, "0x" + sig.hex()) == Account._recover_hash(digest, signature=sig) == key.address
        assert recover_digest(digest, "0x" + sig[:64].hex() + "1d") == ""  # v = 29
        assert recover_digest(digest, "0x" + sig[:-1].hex()) == ""  # truncated
        zero_r = bytes(32) + sig[32:]
        assert recover_digest(digest, "0x" + zero_r.hex()) == ""
