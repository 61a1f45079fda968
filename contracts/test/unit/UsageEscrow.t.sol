// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {Fixture} from "../utils/Fixture.sol";
import {ModelRegistry} from "../../src/ModelRegistry.sol";
import {UsageEscrow} from "../../src/UsageEscrow.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Errors} from "@openzeppelin/contracts/interfaces/draft-IERC6093.sol";
import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";

contract UsageEscrowTest is Fixture {
    bytes32 internal constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 internal constant PERMIT_TYPEHASH =
        keccak256("Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)");

    function _one(UsageEscrow.Voucher memory v, bytes memory sig)
        internal
        pure
        returns (UsageEscrow.Voucher[] memory vs, bytes[] memory sigs)
    {
        vs = new UsageEscrow.Voucher[](1);
        vs[0] = v;
        sigs = new bytes[](1);
        sigs[0] = sig;
    }

    function _expectChargeRevert(UsageEscrow.Voucher memory v, bytes memory sig, bytes memory err) internal {
        (UsageEscrow.Voucher[] memory vs, bytes[] memory sigs) = _one(v, sig);
        vm.prank(server);
        vm.expectRevert(err);
        escrow.charge(modelId, vs, sigs);
    }

    // ---------------------------------------------------------------- constructor and wiring

    function test_constructor_setsImmutablesAndRoles() public view {
        assertEq(address(escrow.token()), address(token), "token");
        assertEq(address(escrow.models()), address(models), "models");
        assertEq(escrow.withdrawDelay(), WITHDRAW_DELAY, "delay");
        assertEq(escrow.settlement(), address(settlement), "settlement");
        assertTrue(escrow.hasRole(escrow.DEFAULT_ADMIN_ROLE(), admin), "admin");
        assertTrue(escrow.hasRole(escrow.PAUSER_ROLE(), admin), "pauser");
    }

    function test_constructor_revertsOnZeroAddress() public {
        vm.expectRevert(UsageEscrow.ZeroAddress.selector);
        new UsageEscrow(IERC20(address(0)), models, 1, admin);
        vm.expectRevert(UsageEscrow.ZeroAddress.selector);
        new UsageEscrow(token, ModelRegistry(address(0)), 1, admin);
        vm.expectRevert(UsageEscrow.ZeroAddress.selector);
        new UsageEscrow(token, models, 1, address(0));
    }

    function test_setSettlement_onceByAdmin() public {
        UsageEscrow fresh = new UsageEscrow(token, models, 1, admin);
        bytes32 role = fresh.DEFAULT_ADMIN_ROLE();
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, alice, role));
        fresh.setSettlement(address(settlement));

        vm.prank(admin);
        vm.expectRevert(UsageEscrow.ZeroAddress.selector);
        fresh.setSettlement(address(0));

        vm.expectEmit(false, false, false, true, address(fresh));
        emit UsageEscrow.SettlementSet(address(settlement));
        vm.prank(admin);
        fresh.setSettlement(address(settlement));
        assertEq(fresh.settlement(), address(settlement), "set");

        vm.prank(admin);
        vm.expectRevert(UsageEscrow.SettlementAlreadySet.selector);
        fresh.setSettlement(alice);
    }

    // ---------------------------------------------------------------- deposits

    function test_deposit_creditsConsumerAndModel() public {
        vm.expectEmit(true, true, false, true, address(escrow));
        emit UsageEscrow.Deposited(consumer, modelId, 5 ether);
        _deposit(consumer, modelId, 5 ether);
        _deposit(consumer, modelId, 1 ether);
        assertEq(escrow.depositOf(consumer, modelId), 6 ether, "deposit");
        assertEq(token.balanceOf(address(escrow)), 6 ether, "held");
    }

    function test_deposit_reverts() public {
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(UsageEscrow.UnknownModel.selector, 2));
        escrow.deposit(2, 1 ether);
        vm.prank(consumer);
        vm.expectRevert(UsageEscrow.ZeroAmount.selector);
        escrow.deposit(modelId, 0);
        vm.prank(stranger);
        vm.expectRevert(
            abi.encodeWithSelector(IERC20Errors.ERC20InsufficientAllowance.selector, address(escrow), 0, 1 ether)
        );
        escrow.deposit(modelId, 1 ether);
    }

    function _permit(uint256 pk, uint256 value, uint256 deadline) internal view returns (uint8, bytes32, bytes32) {
        address owner = vm.addr(pk);
        bytes32 structHash =
            keccak256(abi.encode(PERMIT_TYPEHASH, owner, address(escrow), value, token.nonces(owner), deadline));
        return vm.sign(pk, keccak256(abi.encodePacked("\x19\x01", token.DOMAIN_SEPARATOR(), structHash)));
    }

    function test_depositWithPermit_needsNoPriorApprove() public {
        uint256 pk = 0xFEE;
        address payer = vm.addr(pk);
        _fund(payer, 10 ether);
        (uint8 v, bytes32 r, bytes32 s) = _permit(pk, 4 ether, block.timestamp + 1 hours);
        vm.prank(payer);
        escrow.depositWithPermit(modelId, 4 ether, block.timestamp + 1 hours, v, r, s);
        assertEq(escrow.depositOf(payer, modelId), 4 ether, "deposit");
        assertEq(token.allowance(payer, address(escrow)), 0, "allowance used");
    }

    function test_depositWithPermit_survivesFrontRunPermit() public {
        uint256 pk = 0xFEE;
        address payer = vm.addr(pk);
        _fund(payer, 10 ether);
        uint256 deadline = block.timestamp + 1 hours;
        (uint8 v, bytes32 r, bytes32 s) = _permit(pk, 4 ether, deadline);
        token.permit(payer, address(escrow), 4 ether, deadline, v, r, s); // someone front-runs it
        vm.prank(payer);
        escrow.depositWithPermit(modelId, 4 ether, deadline, v, r, s);
        assertEq(escrow.depositOf(payer, modelId), 4 ether, "deposit");
    }

    function test_depositWithPermit_revertsWithBadPermitAndNoAllowance() public {
        _fund(stranger, 10 ether);
        (uint8 v, bytes32 r, bytes32 s) = _permit(0xFEE, 4 ether, block.timestamp + 1 hours);
        vm.prank(stranger);
        vm.expectRevert(
            abi.encodeWithSelector(IERC20Errors.ERC20InsufficientAllowance.selector, address(escrow), 0, 4 ether)
        );
        escrow.depositWithPermit(modelId, 4 ether, block.timestamp + 1 hours, v, r, s);
    }

    // ---------------------------------------------------------------- charge

    function test_voucherDigest_matchesEip712() public view {
        UsageEscrow.Voucher memory v = UsageEscrow.Voucher(consumer, modelId, 3 ether, 1_800_000_000);
        bytes32 domain = keccak256(
            abi.encode(
                DOMAIN_TYPEHASH,
                keccak256("Provenant UsageEscrow"),
                keccak256("1"),
                block.chainid,
                address(escrow)
            )
        );
        bytes32 typehash = keccak256("Voucher(address consumer,uint256 modelId,uint256 cumulativeAmount,uint256 deadline)");
        bytes32 structHash = keccak256(abi.encode(typehash, v.consumer, v.modelId, v.cumulativeAmount, v.deadline));
        assertEq(escrow.VOUCHER_TYPEHASH(), typehash, "typehash");
        assertEq(escrow.domainSeparator(), domain, "domain separator");
        assertEq(escrow.voucherDigest(v), keccak256(abi.encodePacked("\x19\x01", domain, structHash)), "digest");
    }

    function test_charge_movesCumulativeDeltas() public {
        _deposit(consumer, modelId, 10 ether);
        _deposit(consumer2, modelId, 10 ether);

        (UsageEscrow.Voucher memory v1, bytes memory s1) = _voucher(consumerPk, modelId, 2 ether);
        (UsageEscrow.Voucher memory v2, bytes memory s2) = _voucher(consumer2Pk, modelId, 3 ether);
        UsageEscrow.Voucher[] memory vs = new UsageEscrow.Voucher[](2);
        vs[0] = v1;
        vs[1] = v2;
        bytes[] memory sigs = new bytes[](2);
        sigs[0] = s1;
        sigs[1] = s2;
        vm.expectEmit(true, true, true, true, address(escrow));
        emit UsageEscrow.Charged(modelId, consumer, 1, 2 ether, 2 ether);
        vm.expectEmit(true, true, true, true, address(escrow));
        emit UsageEscrow.Charged(modelId, consumer2, 1, 3 ether, 3 ether);
        vm.prank(server);
        uint64 seq = escrow.charge(modelId, vs, sigs);

        assertEq(seq, 1, "one seq per batch");
        assertEq(escrow.chargeSeq(modelId), 1, "chargeSeq");
        assertEq(escrow.unsettledFees(modelId), 5 ether, "unsettled");
        assertEq(escrow.cumulativeFeesAt(modelId, 1), 5 ether, "cumulative at 1");
        assertEq(escrow.depositOf(consumer, modelId), 8 ether, "consumer deposit");
        assertEq(escrow.spentOf(consumer, modelId), 2 ether, "consumer spent");

        // The next voucher carries a cumulative amount: only the increase is charged.
        vm.expectEmit(true, true, true, true, address(escrow));
        emit UsageEscrow.Charged(modelId, consumer, 2, 3.5 ether, 5.5 ether);
        seq = _charge(consumerPk, modelId, 5.5 ether);
        assertEq(seq, 2, "seq");
        assertEq(escrow.depositOf(consumer, modelId), 4.5 ether, "deposit after");
        assertEq(escrow.spentOf(consumer, modelId), 5.5 ether, "spent after");
        assertEq(escrow.cumulativeFeesAt(modelId, 2), 8.5 ether, "cumulative at 2");
        assertEq(escrow.unsettledFees(modelId), 8.5 ether, "unsettled after");
        assertEq(token.balanceOf(address(escrow)), 20 ether, "tokens stay in escrow");
    }

    function test_charge_revertsForNonServer() public {
        _deposit(consumer, modelId, 1 ether);
        (UsageEscrow.Voucher memory v, bytes memory sig) = _voucher(consumerPk, modelId, 1 ether);
        (UsageEscrow.Voucher[] memory vs, bytes[] memory sigs) = _one(v, sig);
        vm.prank(builder);
        vm.expectRevert(abi.encodeWithSelector(UsageEscrow.NotModelServer.selector, modelId, builder));
        escrow.charge(modelId, vs, sigs);

        // A retired serving key can no longer charge.
        vm.prank(builder);
        models.setTerms(modelId, 1, alice);
        vm.prank(server);
        vm.expectRevert(abi.encodeWithSelector(UsageEscrow.NotModelServer.selector, modelId, server));
        escrow.charge(modelId, vs, sigs);
    }

    function test_charge_revertsForUnknownModel() public {
        vm.prank(server);
        vm.expectRevert(abi.encodeWithSelector(ModelRegistry.UnknownModel.selector, 5));
        escrow.charge(5, new UsageEscrow.Voucher[](0), new bytes[](0));
    }

    function test_charge_revertsOnLengthMismatchOrEmpty() public {
        (UsageEscrow.Voucher memory v,) = _voucher(consumerPk, modelId, 1 ether);
        (UsageEscrow.Voucher[] memory vs,) = _one(v, "");
        vm.prank(server);
        vm.expectRevert(UsageEscrow.LengthMismatch.selector);
        escrow.charge(modelId, vs, new bytes[](0));
        vm.prank(server);
        vm.expectRevert(UsageEscrow.ZeroAmount.selector);
        escrow.charge(modelId, new UsageEscrow.Voucher[](0), new bytes[](0));
    }

    function test_charge_revertsForVoucherOfOtherModel() public {
        (UsageEscrow.Voucher memory v, bytes memory sig) = _voucher(consumerPk, 2, 1 ether);
        _expectChargeRevert(v, sig, abi.encodeWithSelector(UsageEscrow.VoucherForOtherModel.selector, 0, 2));
    }

    function test_charge_revertsForExpiredVoucher() public {
        _deposit(consumer, modelId, 1 ether);
        (UsageEscrow.Voucher memory v, bytes memory sig) = _voucher(consumerPk, modelId, 1 ether);
        vm.warp(v.deadline + 1);
        _expectChargeRevert(v, sig, abi.encodeWithSelector(UsageEscrow.VoucherExpired.selector, 0, v.deadline));
    }

    function test_charge_revertsForForgedOrTamperedVoucher() public {
        _deposit(consumer, modelId, 10 ether);
        (UsageEscrow.Voucher memory v,) = _voucher(consumerPk, modelId, 1 ether);
        bytes memory forged = _sig(consumer2Pk, escrow.voucherDigest(v));
        _expectChargeRevert(
            v, forged, abi.encodeWithSelector(UsageEscrow.VoucherBadSignature.selector, 0, consumer2, consumer)
        );

        (, bytes memory good) = _voucher(consumerPk, modelId, 1 ether);
        v.cumulativeAmount = 9 ether; // the server raises the signed amount
        address recovered = ECDSA.recover(escrow.voucherDigest(v), good);
        _expectChargeRevert(
            v, good, abi.encodeWithSelector(UsageEscrow.VoucherBadSignature.selector, 0, recovered, consumer)
        );
    }

    function test_charge_revertsForHighSOrMalformedSignature() public {
        _deposit(consumer, modelId, 10 ether);
        (UsageEscrow.Voucher memory v, bytes memory sig) = _voucher(consumerPk, modelId, 1 ether);
        bytes memory high = _highS(sig);
        bytes32 s;
        assembly {
            s := mload(add(high, 64))
        }
        _expectChargeRevert(v, high, abi.encodeWithSelector(ECDSA.ECDSAInvalidSignatureS.selector, s));
        _expectChargeRevert(v, hex"1234", abi.encodeWithSelector(ECDSA.ECDSAInvalidSignatureLength.selector, 2));
    }

    function test_charge_revertsForVoucherFromAnotherChain() public {
        _deposit(consumer, modelId, 10 ether);
        uint256 chain = block.chainid;
        vm.chainId(chain + 1);
        (UsageEscrow.Voucher memory v, bytes memory sig) = _voucher(consumerPk, modelId, 1 ether);
        vm.chainId(chain);
        address recovered = ECDSA.recover(escrow.voucherDigest(v), sig);
        _expectChargeRevert(v, sig, abi.encodeWithSelector(UsageEscrow.VoucherBadSignature.selector, 0, recovered, consumer));
    }

    function test_charge_revertsForReplayedVoucher() public {
        _deposit(consumer, modelId, 10 ether);
        (UsageEscrow.Voucher memory v, bytes memory sig) = _voucher(consumerPk, modelId, 1 ether);
        (UsageEscrow.Voucher[] memory vs, bytes[] memory sigs) = _one(v, sig);
        vm.prank(server);
        escrow.charge(modelId, vs, sigs);
        _expectChargeRevert(
            v, sig, abi.encodeWithSelector(UsageEscrow.VoucherNotIncreasing.selector, 0, 1 ether, 1 ether)
        );
        (UsageEscrow.Voucher memory lower, bytes memory lowerSig) = _voucher(consumerPk, modelId, 0.5 ether);
        _expectChargeRevert(
            lower, lowerSig, abi.encodeWithSelector(UsageEscrow.VoucherNotIncreasing.selector, 0, 0.5 ether, 1 ether)
        );
    }

    function test_charge_revertsBeyondDeposit() public {
        _deposit(consumer, modelId, 1 ether);
        (UsageEscrow.Voucher memory v, bytes memory sig) = _voucher(consumerPk, modelId, 2 ether);
        _expectChargeRevert(
            v, sig, abi.encodeWithSelector(UsageEscrow.InsufficientDeposit.selector, consumer, modelId, 2 ether, 1 ether)
        );
    }

    // ---------------------------------------------------------------- payFees

    function test_payFees_entersUnsettledFees() public {
        _fees(modelId, 1 ether);
        vm.expectEmit(true, true, true, true, address(escrow));
        emit UsageEscrow.FeesPaid(modelId, alice, 2, 3 ether);
        vm.prank(alice);
        uint64 seq = escrow.payFees(modelId, 3 ether);
        assertEq(seq, 2, "seq");
        assertEq(escrow.unsettledFees(modelId), 4 ether, "unsettled");
        assertEq(escrow.cumulativeFeesAt(modelId, 2), 4 ether, "cumulative");
        assertEq(token.balanceOf(address(escrow)), 4 ether, "held");
    }

    function test_payFees_reverts() public {
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(UsageEscrow.UnknownModel.selector, 0));
        escrow.payFees(0, 1 ether);
        vm.prank(alice);
        vm.expectRevert(UsageEscrow.ZeroAmount.selector);
        escrow.payFees(modelId, 0);
    }

    // ---------------------------------------------------------------- withdrawals

    function test_withdraw_afterDelay() public {
        _deposit(consumer, modelId, 5 ether);
        uint256 at = block.timestamp + WITHDRAW_DELAY;
        vm.expectEmit(true, true, false, true, address(escrow));
        emit UsageEscrow.WithdrawalRequested(consumer, modelId, at);
        vm.prank(consumer);
        escrow.requestWithdrawal(modelId);
        assertEq(escrow.withdrawableAt(consumer, modelId), at, "at");

        vm.warp(at);
        uint256 before = token.balanceOf(consumer);
        vm.expectEmit(true, true, false, true, address(escrow));
        emit UsageEscrow.Withdrawn(consumer, modelId, 2 ether);
        vm.prank(consumer);
        escrow.withdraw(modelId, 2 ether);
        assertEq(token.balanceOf(consumer), before + 2 ether, "paid back");
        assertEq(escrow.depositOf(consumer, modelId), 3 ether, "left");
        assertEq(escrow.withdrawableAt(consumer, modelId), 0, "request consumed");

        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(UsageEscrow.WithdrawalNotReady.selector, 0));
        escrow.withdraw(modelId, 1 ether);
    }

    function test_withdraw_serverMayChargeDuringDelay() public {
        _deposit(consumer, modelId, 5 ether);
        vm.prank(consumer);
        escrow.requestWithdrawal(modelId);
        _charge(consumerPk, modelId, 4 ether);
        vm.warp(block.timestamp + WITHDRAW_DELAY);
        vm.prank(consumer);
        vm.expectRevert(
            abi.encodeWithSelector(UsageEscrow.InsufficientDeposit.selector, consumer, modelId, 5 ether, 1 ether)
        );
        escrow.withdraw(modelId, 5 ether);
    }

    function test_withdraw_reverts() public {
        _deposit(consumer, modelId, 5 ether);
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(UsageEscrow.WithdrawalNotReady.selector, 0));
        escrow.withdraw(modelId, 1 ether);

        vm.prank(consumer);
        escrow.requestWithdrawal(modelId);
        uint256 at = block.timestamp + WITHDRAW_DELAY;
        vm.warp(at - 1);
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(UsageEscrow.WithdrawalNotReady.selector, at));
        escrow.withdraw(modelId, 1 ether);

        vm.warp(at);
        vm.prank(consumer);
        vm.expectRevert(UsageEscrow.ZeroAmount.selector);
        escrow.withdraw(modelId, 0);
        vm.prank(consumer);
        vm.expectRevert(
            abi.encodeWithSelector(UsageEscrow.InsufficientDeposit.selector, consumer, modelId, 6 ether, 5 ether)
        );
        escrow.withdraw(modelId, 6 ether);
    }

    // ---------------------------------------------------------------- release

    function test_release_onlySettlementWithinCharged() public {
        _fees(modelId, 1 ether);
        _fees(modelId, 2 ether);
        _fees(modelId, 4 ether);

        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(UsageEscrow.NotSettlement.selector, alice));
        escrow.release(modelId, 1);

        vm.startPrank(address(settlement));
        vm.expectRevert(abi.encodeWithSelector(UsageEscrow.BadSeq.selector, 0, 0, 3));
        escrow.release(modelId, 0);
        vm.expectRevert(abi.encodeWithSelector(UsageEscrow.BadSeq.selector, 4, 0, 3));
        escrow.release(modelId, 4);

        assertEq(escrow.releasable(modelId, 2), 3 ether, "releasable up to seq 2");
        vm.expectRevert(abi.encodeWithSelector(UsageEscrow.BadSeq.selector, 4, 0, 3));
        escrow.releasable(modelId, 4);
        vm.expectEmit(true, false, false, true, address(escrow));
        emit UsageEscrow.FeesReleased(modelId, 0, 2, 3 ether);
        uint256 amount = escrow.release(modelId, 2);
        assertEq(amount, 3 ether, "released");
        assertEq(escrow.settledSeq(modelId), 2, "settledSeq");
        assertEq(escrow.unsettledFees(modelId), 4 ether, "unsettled");
        assertEq(token.balanceOf(address(settlement)), 3 ether, "to settlement");

        vm.expectRevert(abi.encodeWithSelector(UsageEscrow.BadSeq.selector, 2, 2, 3));
        escrow.release(modelId, 2);
        assertEq(escrow.release(modelId, 3), 4 ether, "rest");
        vm.stopPrank();
    }

    // ---------------------------------------------------------------- pause

    function test_pause_blocksEveryTokenMovement() public {
        _deposit(consumer, modelId, 5 ether);
        (UsageEscrow.Voucher memory v, bytes memory sig) = _voucher(consumerPk, modelId, 1 ether);
        (UsageEscrow.Voucher[] memory vs, bytes[] memory sigs) = _one(v, sig);
        vm.prank(consumer);
        escrow.requestWithdrawal(modelId);
        vm.warp(block.timestamp + WITHDRAW_DELAY);
        _fees(modelId, 1 ether);

        bytes32 role = escrow.PAUSER_ROLE();
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, alice, role));
        escrow.pause();
        vm.prank(admin);
        escrow.pause();
        uint256 held = token.balanceOf(address(escrow));

        vm.startPrank(consumer);
        vm.expectRevert(Pausable.EnforcedPause.selector);
        escrow.deposit(modelId, 1 ether);
        vm.expectRevert(Pausable.EnforcedPause.selector);
        escrow.depositWithPermit(modelId, 1 ether, 0, 0, 0, 0);
        vm.expectRevert(Pausable.EnforcedPause.selector);
        escrow.payFees(modelId, 1 ether);
        vm.expectRevert(Pausable.EnforcedPause.selector);
        escrow.requestWithdrawal(modelId);
        vm.expectRevert(Pausable.EnforcedPause.selector);
        escrow.withdraw(modelId, 1 ether);
        vm.stopPrank();
        vm.prank(server);
        vm.expectRevert(Pausable.EnforcedPause.selector);
        escrow.charge(modelId, vs, sigs);
        vm.prank(address(settlement));
        vm.expectRevert(Pausable.EnforcedPause.selector);
        escrow.release(modelId, 1);
        assertEq(token.balanceOf(address(escrow)), held, "no token moved");

        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, alice, role));
        escrow.unpause();
        vm.prank(admin);
        escrow.unpause();
        vm.prank(consumer);
        escrow.withdraw(modelId, 1 ether);
    }
}
