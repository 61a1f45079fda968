// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {Fixture} from "../utils/Fixture.sol";
import {UsageEscrow} from "../../src/UsageEscrow.sol";

/// @notice Cumulative vouchers never charge more than signed, and deposits never go negative.
contract VoucherFuzzTest is Fixture {
    uint256 internal constant SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;

    function _chargeOne(UsageEscrow.Voucher memory v, bytes memory sig) internal {
        UsageEscrow.Voucher[] memory vs = new UsageEscrow.Voucher[](1);
        vs[0] = v;
        bytes[] memory sigs = new bytes[](1);
        sigs[0] = sig;
        vm.prank(server);
        escrow.charge(modelId, vs, sigs);
    }

    function testFuzz_charge_neverMoreThanSigned(uint128 depositAmount, uint128[6] memory cumulatives) public {
        uint256 deposited = bound(depositAmount, 1, FUNDS);
        _deposit(consumer, modelId, deposited);
        uint256 maxCharged = 0;

        for (uint256 i = 0; i < cumulatives.length; i++) {
            uint256 cumulative = bound(cumulatives[i], 0, deposited + deposited / 4);
            (UsageEscrow.Voucher memory v, bytes memory sig) = _voucher(consumerPk, modelId, cumulative);
            uint256 spent = escrow.spentOf(consumer, modelId);
            uint256 available = escrow.depositOf(consumer, modelId);
            if (cumulative <= spent) {
                vm.expectRevert(
                    abi.encodeWithSelector(UsageEscrow.VoucherNotIncreasing.selector, 0, cumulative, spent)
                );
            } else if (cumulative - spent > available) {
                vm.expectRevert(
                    abi.encodeWithSelector(
                        UsageEscrow.InsufficientDeposit.selector, consumer, modelId, cumulative - spent, available
                    )
                );
            } else {
                maxCharged = cumulative;
            }
            _chargeOne(v, sig);

            uint256 spentNow = escrow.spentOf(consumer, modelId);
            assertEq(spentNow, maxCharged, "spent is the highest charged cumulative");
            assertLe(spentNow, cumulative > spent ? cumulative : spent, "never above a signed amount");
            assertEq(escrow.depositOf(consumer, modelId) + spentNow, deposited, "deposit + spent = deposited");
            assertEq(escrow.unsettledFees(modelId), spentNow, "fees = spent");
            assertEq(token.balanceOf(address(escrow)), deposited, "escrow holds everything");
        }
    }

    function testFuzz_charge_replayNeverChargesTwice(uint128 amount, uint8 replays) public {
        uint256 a = bound(amount, 1, FUNDS);
        _deposit(consumer, modelId, FUNDS);
        (UsageEscrow.Voucher memory v, bytes memory sig) = _voucher(consumerPk, modelId, a);
        _chargeOne(v, sig);
        for (uint256 i = 0; i < bound(replays, 1, 4); i++) {
            vm.expectRevert(abi.encodeWithSelector(UsageEscrow.VoucherNotIncreasing.selector, 0, a, a));
            _chargeOne(v, sig);
        }
        assertEq(escrow.spentOf(consumer, modelId), a, "charged once");
        assertEq(escrow.depositOf(consumer, modelId), FUNDS - a, "deposit");
    }

    function testFuzz_charge_foreignSignerNeverCharges(uint256 pk, uint128 amount) public {
        pk = bound(pk, 1, SECP256K1_N - 1);
        vm.assume(pk != consumerPk);
        uint256 a = bound(amount, 1, FUNDS);
        _deposit(consumer, modelId, FUNDS);
        UsageEscrow.Voucher memory v = UsageEscrow.Voucher(consumer, modelId, a, block.timestamp + 1 hours);
        bytes memory sig = _sig(pk, escrow.voucherDigest(v));
        vm.expectRevert(abi.encodeWithSelector(UsageEscrow.VoucherBadSignature.selector, 0, vm.addr(pk), consumer));
        _chargeOne(v, sig);
        assertEq(escrow.depositOf(consumer, modelId), FUNDS, "untouched");
    }

    function testFuzz_charge_expiredNeverCharges(uint64 late, uint128 amount) public {
        uint256 a = bound(amount, 1, FUNDS);
        _deposit(consumer, modelId, FUNDS);
        (UsageEscrow.Voucher memory v, bytes memory sig) = _voucher(consumerPk, modelId, a);
        vm.warp(v.deadline + bound(late, 1, 365 days));
        vm.expectRevert(abi.encodeWithSelector(UsageEscrow.VoucherExpired.selector, 0, v.deadline));
        _chargeOne(v, sig);
        assertEq(escrow.depositOf(consumer, modelId), FUNDS, "untouched");
    }

    /// @dev Charges and withdrawals interleaved: the deposit never underflows and never pays out
    /// more than was deposited.
    function testFuzz_chargeAndWithdraw_depositNeverNegative(uint128 deposited, uint128 charged, uint128 withdrawn)
        public
    {
        uint256 d = bound(deposited, 1, FUNDS);
        uint256 c = bound(charged, 0, d + 1);
        uint256 w = bound(withdrawn, 1, d + 1);
        _deposit(consumer, modelId, d);
        vm.prank(consumer);
        escrow.requestWithdrawal(modelId);
        if (c > 0) {
            (UsageEscrow.Voucher memory v, bytes memory sig) = _voucher(consumerPk, modelId, c);
            if (c > d) {
                vm.expectRevert(
                    abi.encodeWithSelector(UsageEscrow.InsufficientDeposit.selector, consumer, modelId, c, d)
                );
            }
            _chargeOne(v, sig);
        }
        uint256 left = escrow.depositOf(consumer, modelId);
        assertEq(left + escrow.spentOf(consumer, modelId), d, "accounted");
        vm.warp(block.timestamp + WITHDRAW_DELAY);
        uint256 before = token.balanceOf(consumer);
        vm.prank(consumer);
        if (w > left) {
            vm.expectRevert(abi.encodeWithSelector(UsageEscrow.InsufficientDeposit.selector, consumer, modelId, w, left));
        }
        escrow.withdraw(modelId, w);
        uint256 paid = token.balanceOf(consumer) - before;
        assertLe(paid, left, "never more than the unspent deposit");
        assertEq(escrow.depositOf(consumer, modelId), left - paid, "deposit after");
        assertEq(
            token.balanceOf(address(escrow)), escrow.depositOf(consumer, modelId) + escrow.unsettledFees(modelId), "held"
        );
    }
}
