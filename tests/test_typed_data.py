"""EIP-712: the Python digests equal the contracts' own digest functions, byte for byte."""

from __future__ import annotations

from provenant.chain.client import ChainClient
from provenant.chain.deploy import Contracts
from provenant.chain.typed_data import escrow_domain, settlement_domain, typed_digest


def test_voucher_digest_matches_escrow(deployed: Contracts, chain: ChainClient) -> None:
    message = {"consumer": "0x" + "11" * 20, "modelId": 7, "cumulativeAmount": 10**18 + 3, "deadline": 2**40}
    expected = chain.call(deployed.escrow.functions.voucherDigest(tuple(
        [chain.w3.to_checksum_address(message["consumer"]), 7, 10**18 + 3, 2**40])))
    assert typed_digest(escrow_domain(31337, deployed.escrow.address), "Voucher", message) == bytes(expected)


def test_attestation_digest_matches_settlement_and_binds_contract(deployed: Contracts, chain: ChainClient) -> None:
    message = {"modelId": 3, "epoch": 2, "uptoSeq": 9, "feeTotal": 1000, "protocolAmount": 50, "ownerAmount": 150,
               "curatorsTotal": 99, "contributorsTotal": 699, "payoutRoot": b"\x22" * 32,
               "resultsCid": "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4", "deadline": 123456}
    expected = bytes(chain.call(deployed.settlement.functions.attestationDigest(tuple(message.values()))))
    domain = settlement_domain(31337, deployed.settlement.address)
    assert typed_digest(domain, "Attestation", message) == expected
    other_chain = settlement_domain(1, deployed.settlement.address)
    other_contract = settlement_domain(31337, deployed.escrow.address)
    assert typed_digest(other_chain, "Attestation", message) != expected
    assert typed_digest(other_contract, "Attestation", message) != expected
