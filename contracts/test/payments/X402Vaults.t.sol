// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {Fixture} from "../utils/Fixture.sol";
import {X402Vaults} from "../../src/X402Vaults.sol";
import {ModelVault} from "../../src/ModelVault.sol";
import {UsageEscrow} from "../../src/UsageEscrow.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Errors} from "@openzeppelin/contracts/interfaces/draft-IERC6093.sol";
import {ERC3009} from "@openzeppelin/contracts/token/ERC20/extensions/draft-ERC3009.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";

/// @notice x402 "exact" payments into a model's escrowed fees through its CREATE2 vault.
contract X402VaultsTest is Fixture {
    bytes32 internal constant TRANSFER_TYPEHASH = keccak256(
        "TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)"
    );
    uint256 internal constant PRICE = 1e15;

    X402Vaults internal x402;

    function setUp() public override {
        super.setUp();
        x402 = new X402Vaults(token, escrow);
    }

    function _auth(uint256 pk, address to, uint256 value, uint256 validBefore, bytes32 nonce)
        internal
        view
        returns (X402Vaults.Authorization memory a)
    {
        address from = vm.addr(pk);
        bytes32 structHash = keccak256(abi.encode(TRANSFER_TYPEHASH, from, to, value, 0, validBefore, nonce));
        bytes32 digest = keccak256(abi.encodePacked("\x19\x01", token.DOMAIN_SEPARATOR(), structHash));
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(pk, digest);
        a = X402Vaults.Authorization({
            from: from, value: value, validAfter: 0, validBefore: validBefore, nonce: nonce, v: v, r: r, s: s
        });
    }

    function _pay(uint256 value, bytes32 nonce) internal returns (uint64) {
        X402Vaults.Authorization memory a =
            _auth(consumerPk, x402.vaultOf(modelId), value, block.timestamp + 1 hours, nonce);
        vm.prank(server);
        return x402.chargeX402(modelId, a);
    }

    // ---------------------------------------------------------------- wiring

    function test_constructor_wiresAndApproves() public view {
        assertEq(address(x402.token()), address(token), "token");
        assertEq(address(x402.escrow()), address(escrow), "escrow");
        assertEq(address(x402.models()), address(models), "models");
        assertEq(token.allowance(address(x402), address(escrow)), type(uint256).max, "standing approval");
    }

    function test_constructor_refusesZeroAndOtherToken() public {
        vm.expectRevert(X402Vaults.ZeroAddress.selector);
        new X402Vaults(IERC20(address(0)), escrow);
        vm.expectRevert(X402Vaults.ZeroAddress.selector);
        new X402Vaults(token, UsageEscrow(address(0)));
        IERC20 other = IERC20(address(datanets));
        vm.expectRevert(abi.encodeWithSelector(X402Vaults.TokenMismatch.selector, address(token), address(other)));
        new X402Vaults(other, escrow);
    }

    function test_vaultOf_isDeterministicAndDistinctPerModel() public {
        address predicted = x402.vaultOf(modelId);
        assertTrue(predicted.code.length == 0, "not deployed yet");
        vm.expectEmit(true, false, false, true, address(x402));
        emit X402Vaults.VaultCreated(modelId, predicted);
        address created = x402.createVault(modelId);
        assertEq(created, predicted, "CREATE2 address");
        assertEq(ModelVault(created).controller(), address(x402), "controller");
        assertEq(x402.createVault(modelId), predicted, "idempotent");
        assertTrue(x402.vaultOf(modelId + 1) != predicted, "one vault per model");
    }

    function test_createVault_refusesUnknownModel() public {
        vm.expectRevert(abi.encodeWithSelector(X402Vaults.UnknownModel.selector, 99));
        x402.createVault(99);
    }

    // ---------------------------------------------------------------- chargeX402

    function test_chargeX402_creditsFeesWithNextSeq() public {
        _fees(modelId, 5 * PRICE); // a voucher charge first: seq 1
        uint256 before = token.balanceOf(consumer);
        vm.expectEmit(true, true, true, true, address(x402));
        emit X402Vaults.X402Charged(modelId, consumer, 2, PRICE, bytes32(uint256(7)));
        uint64 seq = _pay(PRICE, bytes32(uint256(7)));
        assertEq(seq, 2, "next charge seq");
        assertEq(escrow.chargeSeq(modelId), 2, "escrow seq");
        assertEq(escrow.unsettledFees(modelId), 6 * PRICE, "fees include the x402 payment");
        assertEq(token.balanceOf(consumer), before - PRICE, "payer debited");
        assertEq(token.balanceOf(x402.vaultOf(modelId)), 0, "vault emptied into the escrow");
        assertEq(token.balanceOf(address(x402)), 0, "router holds nothing");
        assertTrue(token.authorizationState(consumer, bytes32(uint256(7))), "nonce used");
    }

    function test_chargeX402_onlyServer() public {
        X402Vaults.Authorization memory a =
            _auth(consumerPk, x402.vaultOf(modelId), PRICE, block.timestamp + 1 hours, bytes32(uint256(1)));
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(X402Vaults.NotModelServer.selector, modelId, stranger));
        x402.chargeX402(modelId, a);
    }

    function test_chargeX402_refusesReusedNonce() public {
        _pay(PRICE, bytes32(uint256(1)));
        X402Vaults.Authorization memory a =
            _auth(consumerPk, x402.vaultOf(modelId), PRICE, block.timestamp + 1 hours, bytes32(uint256(1)));
        vm.prank(server);
        vm.expectRevert(abi.encodeWithSelector(ERC3009.ERC3009UsedAuthorization.selector, consumer, bytes32(uint256(1))));
        x402.chargeX402(modelId, a);
        assertEq(escrow.chargeSeq(modelId), 1, "nothing charged");
    }

    function test_chargeX402_refusesAuthorizationForAnotherVault() public {
        // Signed to model 1's vault, submitted for another model: the signature does not match.
        uint256 model2 = _registerModel(builder, "provenant/other", datanetId, _ids(aliceContribution));
        X402Vaults.Authorization memory a =
            _auth(consumerPk, x402.vaultOf(modelId), PRICE, block.timestamp + 1 hours, bytes32(uint256(3)));
        vm.prank(server);
        vm.expectRevert(ERC3009.ERC3009InvalidSignature.selector);
        x402.chargeX402(model2, a);
        assertEq(escrow.chargeSeq(model2), 0, "nothing charged");
    }

    function test_chargeX402_refusesTamperedValue() public {
        X402Vaults.Authorization memory a =
            _auth(consumerPk, x402.vaultOf(modelId), PRICE, block.timestamp + 1 hours, bytes32(uint256(4)));
        a.value = PRICE * 2;
        vm.prank(server);
        vm.expectRevert(ERC3009.ERC3009InvalidSignature.selector);
        x402.chargeX402(modelId, a);
    }

    function test_chargeX402_refusesExpired() public {
        X402Vaults.Authorization memory a =
            _auth(consumerPk, x402.vaultOf(modelId), PRICE, block.timestamp + 10, bytes32(uint256(5)));
        uint256 validBefore = block.timestamp + 10;
        vm.warp(validBefore);
        vm.prank(server);
        vm.expectRevert(abi.encodeWithSelector(ERC3009.ERC3009InvalidAuthorizationTime.selector, 0, validBefore));
        x402.chargeX402(modelId, a);
        assertEq(escrow.chargeSeq(modelId), 0, "nothing charged");
    }

    function test_chargeX402_refusesZeroValue() public {
        X402Vaults.Authorization memory a =
            _auth(consumerPk, x402.vaultOf(modelId), 0, block.timestamp + 1 hours, bytes32(uint256(6)));
        vm.prank(server);
        vm.expectRevert(X402Vaults.ZeroAmount.selector);
        x402.chargeX402(modelId, a);
    }

    function test_chargeX402_whileEscrowPausedMovesNothing() public {
        vm.prank(admin);
        escrow.pause();
        X402Vaults.Authorization memory a =
            _auth(consumerPk, x402.vaultOf(modelId), PRICE, block.timestamp + 1 hours, bytes32(uint256(8)));
        uint256 before = token.balanceOf(consumer);
        vm.prank(server);
        vm.expectRevert(Pausable.EnforcedPause.selector);
        x402.chargeX402(modelId, a);
        assertEq(token.balanceOf(consumer), before, "payer keeps its tokens");
        assertFalse(token.authorizationState(consumer, bytes32(uint256(8))), "nonce unused");
    }

    /// @dev Someone front-runs the server by submitting the authorization straight to the token:
    /// the server's charge fails (nonce used) and the tokens wait in the vault for a sweep.
    function test_frontRunAuthorizationEndsInSweep() public {
        address vault = x402.vaultOf(modelId);
        X402Vaults.Authorization memory a = _auth(consumerPk, vault, PRICE, block.timestamp + 1 hours, bytes32(uint256(9)));
        vm.prank(stranger);
        token.transferWithAuthorization(a.from, vault, a.value, a.validAfter, a.validBefore, a.nonce, a.v, a.r, a.s);
        vm.prank(server);
        vm.expectRevert(abi.encodeWithSelector(ERC3009.ERC3009UsedAuthorization.selector, consumer, bytes32(uint256(9))));
        x402.chargeX402(modelId, a);
        assertEq(token.balanceOf(vault), PRICE, "tokens wait in the vault");
        vm.expectEmit(true, true, true, true, address(x402));
        emit X402Vaults.VaultSwept(modelId, vault, 1, PRICE);
        vm.prank(stranger);
        uint64 seq = x402.sweep(modelId);
        assertEq(seq, 1, "sweep is a charge");
        assertEq(escrow.unsettledFees(modelId), PRICE, "swept into fees");
        assertEq(token.balanceOf(vault), 0, "vault empty");
    }

    // ---------------------------------------------------------------- sweep

    function test_sweep_refusesEmptyVaultAndUnknownModel() public {
        vm.expectRevert(abi.encodeWithSelector(X402Vaults.NothingToSweep.selector, modelId));
        x402.sweep(modelId);
        vm.expectRevert(abi.encodeWithSelector(X402Vaults.UnknownModel.selector, 77));
        x402.sweep(77);
    }

    function test_vaultPull_onlyController() public {
        address vault = x402.createVault(modelId);
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(ModelVault.NotController.selector, stranger));
        ModelVault(vault).pull(token, 1);
    }

    /// @dev A sweep credits exactly the plain transfers made to the vault, to the wei, and leaves
    /// the charge of an x402 payment made in between untouched.
    function testFuzz_sweepCreditsExactlyWhatTheVaultHeld(uint256 plain, uint256 paid) public {
        plain = bound(plain, 1, 1_000 ether);
        paid = bound(paid, 1, 1_000 ether);
        address vault = x402.vaultOf(modelId);
        vm.prank(consumer2);
        assertTrue(token.transfer(vault, plain), "plain transfer");
        uint256 escrowBefore = token.balanceOf(address(escrow));
        _pay(paid, keccak256(abi.encode(plain, paid)));
        assertEq(token.balanceOf(vault), plain, "charge pulls only the authorized value");
        x402.sweep(modelId);
        assertEq(escrow.unsettledFees(modelId), plain + paid, "fees = payment + sweep");
        assertEq(escrow.cumulativeFeesAt(modelId, 1), paid, "seq 1 = the x402 payment");
        assertEq(token.balanceOf(address(escrow)) - escrowBefore, plain + paid, "escrow holds both");
        assertEq(token.balanceOf(vault), 0, "vault empty");
    }

    /// @dev Any value and nonce: the consumer pays exactly the value, the model's fees rise by it.
    function testFuzz_chargeX402_movesExactlyTheValue(uint256 value, bytes32 nonce) public {
        value = bound(value, 1, FUNDS);
        uint256 before = token.balanceOf(consumer);
        _pay(value, nonce);
        assertEq(before - token.balanceOf(consumer), value, "debited");
        assertEq(escrow.unsettledFees(modelId), value, "credited");
    }
}
