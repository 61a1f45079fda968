// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {CheatCodes} from "../utils/Test.sol";
import {ProvenantToken} from "../../src/ProvenantToken.sol";
import {UsageEscrow} from "../../src/UsageEscrow.sol";
import {X402Vaults} from "../../src/X402Vaults.sol";
import {RoyaltyRouter} from "../../src/RoyaltyRouter.sol";

/// @notice Drives the money paths beside vouchers, next to ProtocolHandler: x402 payments charged
/// by the server, authorizations submitted straight to the token (front-running the server) and
/// plain transfers into vaults, sweeps, and agents' royalty routings, plus attacks that must
/// fail (a replayed authorization, a royalty routed twice or by a stranger). Ghost state records
/// exactly what succeeded, for the conservation invariant (vault balances included).
contract PaymentsHandler is CheatCodes {
    bytes32 internal constant TRANSFER_TYPEHASH = keccak256(
        "TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)"
    );

    ProvenantToken public token;
    UsageEscrow public escrow;
    X402Vaults public x402;
    RoyaltyRouter public router;
    uint256 internal agentId;
    address internal agentPayer;
    uint256 internal serverPk;
    uint256[3] internal consumerPks;
    uint256[2] internal modelIds;

    uint256 public ghostCredited; // x402 charges + sweeps + royalties, into the escrow's fees
    mapping(uint256 modelId => uint256) public ghostCreditedTo;
    mapping(uint256 modelId => uint256) public ghostVaultHeld;
    uint256 public ghostReplays;
    mapping(string action => uint256) public calls;
    uint256 internal _nonce;
    X402Vaults.Authorization internal _last;
    uint256 internal _lastModel;

    constructor(
        ProvenantToken token_,
        UsageEscrow escrow_,
        X402Vaults x402_,
        RoyaltyRouter router_,
        uint256 agentId_,
        address agentPayer_,
        uint256 serverPk_,
        uint256[3] memory consumerPks_,
        uint256[2] memory modelIds_
    ) {
        token = token_;
        escrow = escrow_;
        x402 = x402_;
        router = router_;
        agentId = agentId_;
        agentPayer = agentPayer_;
        serverPk = serverPk_;
        consumerPks = consumerPks_;
        modelIds = modelIds_;
    }

    function _auth(uint256 pk, address to, uint256 value) internal returns (X402Vaults.Authorization memory a) {
        bytes32 nonce = keccak256(abi.encode("x402", ++_nonce));
        uint256 before = block.timestamp + 1 hours;
        bytes32 structHash = keccak256(abi.encode(TRANSFER_TYPEHASH, vm.addr(pk), to, value, 0, before, nonce));
        bytes32 digest = keccak256(abi.encodePacked("\x19\x01", token.DOMAIN_SEPARATOR(), structHash));
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(pk, digest);
        a = X402Vaults.Authorization({
            from: vm.addr(pk), value: value, validAfter: 0, validBefore: before, nonce: nonce, v: v, r: r, s: s
        });
    }

    /// @dev The server charges an x402 payment of a consumer into a model's fees.
    function x402Pay(uint256 consumerSeed, uint256 modelSeed, uint256 amount) external {
        calls["x402Pay"]++;
        uint256 m = modelIds[modelSeed % 2];
        uint256 a = bound(amount, 1, 10 ether);
        X402Vaults.Authorization memory auth = _auth(consumerPks[consumerSeed % 3], x402.vaultOf(m), a);
        vm.prank(vm.addr(serverPk));
        try x402.chargeX402(m, auth) {
            ghostCredited += a;
            ghostCreditedTo[m] += a;
            _last = auth;
            _lastModel = m;
        } catch {}
    }

    /// @dev The last charged authorization, charged again: must never credit.
    function replayX402() external {
        calls["replayX402"]++;
        if (_last.value == 0) return;
        vm.prank(vm.addr(serverPk));
        try x402.chargeX402(_lastModel, _last) {
            ghostReplays++;
        } catch {}
    }

    /// @dev Tokens reach a vault without a charge: an authorization submitted straight to the
    /// token by anyone, or a plain transfer. They wait there for a sweep.
    function intoVault(uint256 consumerSeed, uint256 modelSeed, uint256 amount, bool viaAuthorization) external {
        calls["intoVault"]++;
        uint256 m = modelIds[modelSeed % 2];
        uint256 a = bound(amount, 1, 10 ether);
        uint256 pk = consumerPks[consumerSeed % 3];
        address vault = x402.vaultOf(m);
        if (viaAuthorization) {
            X402Vaults.Authorization memory x = _auth(pk, vault, a);
            try token.transferWithAuthorization(x.from, vault, a, x.validAfter, x.validBefore, x.nonce, x.v, x.r, x.s) {
                ghostVaultHeld[m] += a;
            } catch {}
        } else {
            vm.prank(vm.addr(pk));
            try token.transfer(vault, a) returns (bool ok) {
                if (ok) ghostVaultHeld[m] += a;
            } catch {}
        }
    }

    function sweep(uint256 modelSeed) external {
        calls["sweep"]++;
        uint256 m = modelIds[modelSeed % 2];
        uint256 held = token.balanceOf(x402.vaultOf(m));
        try x402.sweep(m) {
            ghostVaultHeld[m] -= held;
            ghostCredited += held;
            ghostCreditedTo[m] += held;
        } catch {}
    }

    /// @dev The agent routes a royalty share over both models; sometimes a stranger tries, or the
    /// same action is routed again: both must fail.
    function routeRoyalty(uint256 a, uint256 b, uint256 actionSeed, bool asStranger) external {
        calls["routeRoyalty"]++;
        a = bound(a, 1, 5 ether);
        b = bound(b, 1, 5 ether);
        uint256[] memory ids = new uint256[](2);
        ids[0] = modelIds[0];
        ids[1] = modelIds[1];
        uint256[] memory amounts = new uint256[](2);
        amounts[0] = a;
        amounts[1] = b;
        bytes32 action = keccak256(abi.encode("action", actionSeed % 8));
        bool fresh = !router.routed(agentId, action);
        vm.prank(asStranger ? vm.addr(consumerPks[0]) : agentPayer);
        try router.routeRoyalty(agentId, ids, amounts, action) {
            if (asStranger || !fresh) ghostReplays++;
            ghostCredited += a + b;
            ghostCreditedTo[ids[0]] += a;
            ghostCreditedTo[ids[1]] += b;
        } catch {}
    }
}
