// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {Fixture} from "../utils/Fixture.sol";
import {UsageEscrow} from "../../src/UsageEscrow.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";

/// @notice `chargeUpTo`: a voucher's cumulative amount is a cap; the server charges any spent
/// total up to it, in as many batches as it likes, never beyond it.
contract UsageEscrowChargeUpToTest is Fixture {
    uint256 internal constant CAP = 5 ether;

    function _one(UsageEscrow.Voucher memory v, bytes memory sig, uint256 amount)
        internal
        pure
        returns (UsageEscrow.Voucher[] memory vs, bytes[] memory sigs, uint256[] memory amounts)
    {
        vs = new UsageEscrow.Voucher[](1);
        vs[0] = v;
        sigs = new bytes[](1);
        sigs[0] = sig;
        amounts = new uint256[](1);
        amounts[0] = amount;
    }

    function _chargeUpTo(UsageEscrow.Voucher memory v, bytes memory sig, uint256 amount) internal returns (uint64) {
        (UsageEscrow.Voucher[] memory vs, bytes[] memory sigs, uint256[] memory amounts) = _one(v, sig, amount);
        vm.prank(server);
        return escrow.chargeUpTo(modelId, vs, sigs, amounts);
    }

    function _expectRevert(UsageEscrow.Voucher memory v, bytes memory sig, uint256 amount, bytes memory err)
        internal
    {
        (UsageEscrow.Voucher[] memory vs, bytes[] memory sigs, uint256[] memory amounts) = _one(v, sig, amount);
        vm.prank(server);
        vm.expectRevert(err);
        escrow.chargeUpTo(modelId, vs, sigs, amounts);
    }

    // ---------------------------------------------------------------- the happy path

    function test_chargeUpTo_chargesPartsOfOneCappedVoucher() public {
        _deposit(consumer, modelId, 10 ether);
        (UsageEscrow.Voucher memory v, bytes memory sig) = _voucher(consumerPk, modelId, CAP);

        vm.expectEmit(true, true, true, true, address(escrow));
        emit UsageEscrow.Charged(modelId, consumer, 1, 1 ether, 1 ether);
        assertEq(uint256(_chargeUpTo(v, sig, 1 ether)), 1, "seq 1");
        assertEq(escrow.spentOf(consumer, modelId), 1 ether, "spent 1");
        assertEq(escrow.depositOf(consumer, modelId), 9 ether, "deposit 1");

        // The same signature again, for a higher spent total: only the difference moves.
        vm.expectEmit(true, true, true, true, address(escrow));
        emit UsageEscrow.Charged(modelId, consumer, 2, 2.5 ether, 3.5 ether);
        assertEq(uint256(_chargeUpTo(v, sig, 3.5 ether)), 2, "seq 2");
        assertEq(escrow.spentOf(consumer, modelId), 3.5 ether, "spent 2");
        assertEq(escrow.depositOf(consumer, modelId), 6.5 ether, "deposit 2");

        // Up to exactly the cap.
        _chargeUpTo(v, sig, CAP);
        assertEq(escrow.spentOf(consumer, modelId), CAP, "spent at cap");
        assertEq(escrow.unsettledFees(modelId), CAP, "fees");
        assertEq(escrow.cumulativeFeesAt(modelId, 3), CAP, "cumulative fees");
    }

    function test_chargeUpTo_batchesConsumersInOneSeq() public {
        _deposit(consumer, modelId, 10 ether);
        _deposit(consumer2, modelId, 10 ether);
        UsageEscrow.Voucher[] memory vs = new UsageEscrow.Voucher[](2);
        bytes[] memory sigs = new bytes[](2);
        uint256[] memory amounts = new uint256[](2);
        (vs[0], sigs[0]) = _voucher(consumerPk, modelId, CAP);
        (vs[1], sigs[1]) = _voucher(consumer2Pk, modelId, CAP);
        amounts[0] = 2 ether;
        amounts[1] = 3 ether;
        vm.prank(server);
        uint64 seq = escrow.chargeUpTo(modelId, vs, sigs, amounts);
        assertEq(uint256(seq), 1, "one seq");
        assertEq(escrow.unsettledFees(modelId), 5 ether, "fees of both");
        assertEq(escrow.spentOf(consumer2, modelId), 3 ether, "consumer2");
    }

    function test_chargeUpTo_and_charge_shareTheSpentTotal() public {
        _deposit(consumer, modelId, 10 ether);
        _charge(consumerPk, modelId, 1 ether); // a classic cumulative voucher first
        (UsageEscrow.Voucher memory v, bytes memory sig) = _voucher(consumerPk, modelId, 1 ether + CAP);
        _chargeUpTo(v, sig, 2 ether);
        assertEq(escrow.spentOf(consumer, modelId), 2 ether, "spent");
        // a full `charge` of the capped voucher takes the rest of the cap
        _charge(consumerPk, modelId, 1 ether + CAP);
        assertEq(escrow.depositOf(consumer, modelId), 10 ether - 1 ether - CAP, "deposit");
    }

    // ---------------------------------------------------------------- refusals

    function test_chargeUpTo_revertsAboveTheCap() public {
        _deposit(consumer, modelId, 10 ether);
        (UsageEscrow.Voucher memory v, bytes memory sig) = _voucher(consumerPk, modelId, CAP);
        _expectRevert(v, sig, CAP + 1, abi.encodeWithSelector(UsageEscrow.AmountAboveVoucher.selector, 0, CAP + 1, CAP));
    }

    function test_chargeUpTo_revertsWhenNotAboveSpent() public {
        _deposit(consumer, modelId, 10 ether);
        (UsageEscrow.Voucher memory v, bytes memory sig) = _voucher(consumerPk, modelId, CAP);
        _chargeUpTo(v, sig, 2 ether);
        _expectRevert(v, sig, 2 ether,
            abi.encodeWithSelector(UsageEscrow.VoucherNotIncreasing.selector, 0, 2 ether, 2 ether));
        _expectRevert(v, sig, 1 ether,
            abi.encodeWithSelector(UsageEscrow.VoucherNotIncreasing.selector, 0, 1 ether, 2 ether));
        _expectRevert(v, sig, 0, abi.encodeWithSelector(UsageEscrow.VoucherNotIncreasing.selector, 0, 0, 2 ether));
    }

    function test_chargeUpTo_revertsForWrongSignerModelDeadlineOrServer() public {
        _deposit(consumer, modelId, 10 ether);
        (UsageEscrow.Voucher memory v, bytes memory sig) = _voucher(consumerPk, modelId, CAP);
        bytes memory forged = _sig(consumer2Pk, escrow.voucherDigest(v));
        _expectRevert(v, forged, 1 ether,
            abi.encodeWithSelector(UsageEscrow.VoucherBadSignature.selector, 0, consumer2, consumer));

        UsageEscrow.Voucher memory raised = v;
        raised.cumulativeAmount = CAP * 2; // the server raises the signed cap
        address recovered = ECDSA.recover(escrow.voucherDigest(raised), sig);
        _expectRevert(raised, sig, CAP * 2,
            abi.encodeWithSelector(UsageEscrow.VoucherBadSignature.selector, 0, recovered, consumer));

        (UsageEscrow.Voucher memory other, bytes memory otherSig) = _voucher(consumerPk, 2, CAP);
        _expectRevert(other, otherSig, 1 ether,
            abi.encodeWithSelector(UsageEscrow.VoucherForOtherModel.selector, 0, 2));

        (UsageEscrow.Voucher[] memory vs, bytes[] memory sigs, uint256[] memory amounts) = _one(v, sig, 1 ether);
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(UsageEscrow.NotModelServer.selector, modelId, stranger));
        escrow.chargeUpTo(modelId, vs, sigs, amounts);

        vm.warp(v.deadline + 1);
        _expectRevert(v, sig, 1 ether, abi.encodeWithSelector(UsageEscrow.VoucherExpired.selector, 0, v.deadline));
    }

    function test_chargeUpTo_revertsOnLengthsEmptyDepositAndPause() public {
        (UsageEscrow.Voucher memory v, bytes memory sig) = _voucher(consumerPk, modelId, CAP);
        (UsageEscrow.Voucher[] memory vs, bytes[] memory sigs,) = _one(v, sig, 1 ether);
        vm.prank(server);
        vm.expectRevert(UsageEscrow.LengthMismatch.selector);
        escrow.chargeUpTo(modelId, vs, sigs, new uint256[](2));
        vm.prank(server);
        vm.expectRevert(UsageEscrow.ZeroAmount.selector);
        escrow.chargeUpTo(modelId, new UsageEscrow.Voucher[](0), new bytes[](0), new uint256[](0));

        _deposit(consumer, modelId, 1 ether);
        _expectRevert(v, sig, 2 ether,
            abi.encodeWithSelector(UsageEscrow.InsufficientDeposit.selector, consumer, modelId, 2 ether, 1 ether));

        vm.prank(admin);
        escrow.pause();
        _expectRevert(v, sig, 1 ether, abi.encodeWithSelector(Pausable.EnforcedPause.selector));
    }

    // ---------------------------------------------------------------- fuzz

    /// Any sequence of increasing partial charges moves exactly the final spent total, never
    /// more than the cap, and the fees equal the deposit's decrease.
    function testFuzz_chargeUpTo_partialChargesSumToFinalSpent(uint256 cap, uint256[4] memory steps) public {
        cap = bound(cap, 1, FUNDS);
        _deposit(consumer, modelId, cap);
        (UsageEscrow.Voucher memory v, bytes memory sig) = _voucher(consumerPk, modelId, cap);
        uint256 spent = 0;
        uint256 charged = 0;
        for (uint256 i = 0; i < steps.length; i++) {
            if (spent == cap) break;
            uint256 next = bound(steps[i], spent + 1, cap);
            vm.expectEmit(true, true, false, true, address(escrow));
            emit UsageEscrow.Charged(modelId, consumer, 0, next - spent, next);
            _chargeUpTo(v, sig, next);
            charged += next - spent;
            spent = next;
        }
        assertEq(escrow.spentOf(consumer, modelId), spent, "spent");
        assertEq(charged, spent, "sum of deltas");
        assertEq(escrow.unsettledFees(modelId), spent, "fees");
        assertEq(escrow.depositOf(consumer, modelId), cap - spent, "deposit");
        assertLe(spent, cap, "never above the cap");
    }

    /// Above the cap always reverts, whatever was charged before.
    function testFuzz_chargeUpTo_neverAboveCap(uint256 cap, uint256 first, uint256 over) public {
        cap = bound(cap, 2, FUNDS);
        first = bound(first, 1, cap - 1);
        over = bound(over, cap + 1, type(uint256).max);
        _deposit(consumer, modelId, FUNDS);
        (UsageEscrow.Voucher memory v, bytes memory sig) = _voucher(consumerPk, modelId, cap);
        _chargeUpTo(v, sig, first);
        _expectRevert(v, sig, over, abi.encodeWithSelector(UsageEscrow.AmountAboveVoucher.selector, 0, over, cap));
        assertEq(escrow.spentOf(consumer, modelId), first, "unchanged");
    }
}
