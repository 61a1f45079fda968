// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {Fixture} from "../utils/Fixture.sol";
import {DatanetRegistry} from "../../src/DatanetRegistry.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Errors} from "@openzeppelin/contracts/interfaces/draft-IERC6093.sol";
import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";

contract DatanetRegistryTest is Fixture {
    bytes32 internal constant HASH = keccak256("file bytes");

    function _curators(address a) internal pure returns (address[] memory c) {
        c = new address[](1);
        c[0] = a;
    }

    // ---------------------------------------------------------------- constructor

    function test_constructor_setsTokenAndRoles() public view {
        assertEq(address(datanets.token()), address(token), "token");
        assertTrue(datanets.hasRole(datanets.DEFAULT_ADMIN_ROLE(), admin), "admin role");
        assertTrue(datanets.hasRole(datanets.PAUSER_ROLE(), admin), "pauser role");
    }

    function test_constructor_revertsOnZeroAddress() public {
        vm.expectRevert(DatanetRegistry.ZeroAddress.selector);
        new DatanetRegistry(IERC20(address(0)), admin);
        vm.expectRevert(DatanetRegistry.ZeroAddress.selector);
        new DatanetRegistry(token, address(0));
    }

    // ---------------------------------------------------------------- createDatanet

    function test_createDatanet_recordsEverything() public {
        address[] memory curators = new address[](2);
        curators[0] = curator;
        curators[1] = alice;
        vm.expectEmit(true, true, false, true, address(datanets));
        emit DatanetRegistry.DatanetCreated(2, bob, "bafy-meta", "MIT", slashTreasury, 7, true, true);
        vm.expectEmit(true, true, false, true, address(datanets));
        emit DatanetRegistry.CuratorSet(2, curator, true);
        vm.expectEmit(true, true, false, true, address(datanets));
        emit DatanetRegistry.CuratorSet(2, alice, true);
        vm.prank(bob);
        uint256 id = datanets.createDatanet("bafy-meta", "MIT", curators, slashTreasury, 7, true, true);

        assertEq(id, 2, "id");
        assertEq(datanets.datanetCount(), 2, "count");
        DatanetRegistry.Datanet memory d = datanets.getDatanet(id);
        assertEq(d.owner, bob, "owner");
        assertEq(d.treasury, slashTreasury, "treasury");
        assertEq(d.stake, 7, "stake");
        assertEq(d.version, 0, "version");
        assertEq(d.contributionCount, 0, "contributions");
        assertTrue(d.allowlisted && d.slashOnReject, "flags");
        assertEq(d.metadataCid, "bafy-meta");
        assertEq(d.license, "MIT");
        assertTrue(datanets.isCurator(id, curator) && datanets.isCurator(id, alice), "curators");
        assertTrue(datanets.exists(id), "exists");
    }

    function test_createDatanet_treasuryDefaultsToCaller() public {
        vm.prank(bob);
        uint256 id = datanets.createDatanet("m", "", _curators(curator), address(0), 0, false, false);
        assertEq(datanets.getDatanet(id).treasury, bob, "treasury");
    }

    function test_createDatanet_revertsOnEmptyCid() public {
        vm.expectRevert(DatanetRegistry.EmptyCid.selector);
        datanets.createDatanet("", "MIT", _curators(curator), address(0), 0, false, false);
    }

    function test_createDatanet_revertsWithoutCurators() public {
        vm.expectRevert(DatanetRegistry.NoCurators.selector);
        datanets.createDatanet("m", "MIT", new address[](0), address(0), 0, false, false);
    }

    function test_createDatanet_revertsOnZeroCurator() public {
        vm.expectRevert(DatanetRegistry.ZeroAddress.selector);
        datanets.createDatanet("m", "MIT", _curators(address(0)), address(0), 0, false, false);
    }

    // ---------------------------------------------------------------- setCurator

    function test_setCurator_addsAndRemoves() public {
        vm.expectEmit(true, true, false, true, address(datanets));
        emit DatanetRegistry.CuratorSet(datanetId, bob, true);
        vm.prank(datanetOwner);
        datanets.setCurator(datanetId, bob, true);
        assertTrue(datanets.isCurator(datanetId, bob), "added");

        vm.prank(datanetOwner);
        datanets.setCurator(datanetId, curator, false);
        assertFalse(datanets.isCurator(datanetId, curator), "removed");

        uint256 id = _contribute(alice, datanetId, 9);
        vm.prank(curator);
        vm.expectRevert(abi.encodeWithSelector(DatanetRegistry.NotCurator.selector, datanetId, curator));
        datanets.approve(datanetId, _ids(id));
    }

    function test_setCurator_revertsForNonOwner() public {
        vm.prank(curator);
        vm.expectRevert(abi.encodeWithSelector(DatanetRegistry.NotDatanetOwner.selector, datanetId, curator));
        datanets.setCurator(datanetId, bob, true);
    }

    function test_setCurator_revertsForUnknownDatanet() public {
        vm.prank(datanetOwner);
        vm.expectRevert(abi.encodeWithSelector(DatanetRegistry.UnknownDatanet.selector, 99));
        datanets.setCurator(99, bob, true);
    }

    function test_setCurator_revertsOnZeroAddress() public {
        vm.prank(datanetOwner);
        vm.expectRevert(DatanetRegistry.ZeroAddress.selector);
        datanets.setCurator(datanetId, address(0), true);
    }

    // ---------------------------------------------------------------- setContributorAllowed

    function test_setContributorAllowed_gatesAllowlistedDatanet() public {
        uint256 id = _createDatanet(0, true, false);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(DatanetRegistry.ContributorNotAllowed.selector, id, alice));
        datanets.contribute(id, HASH, "bafy", 1, 1);

        vm.expectEmit(true, true, false, true, address(datanets));
        emit DatanetRegistry.ContributorAllowed(id, alice, true);
        vm.prank(datanetOwner);
        datanets.setContributorAllowed(id, alice, true);
        assertTrue(datanets.isAllowedContributor(id, alice), "allowed");
        vm.prank(alice);
        datanets.contribute(id, HASH, "bafy", 1, 1);

        vm.prank(datanetOwner);
        datanets.setContributorAllowed(id, alice, false);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(DatanetRegistry.ContributorNotAllowed.selector, id, alice));
        datanets.contribute(id, HASH, "bafy", 1, 1);
    }

    function test_setContributorAllowed_revertsForNonOwner() public {
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(DatanetRegistry.NotDatanetOwner.selector, datanetId, alice));
        datanets.setContributorAllowed(datanetId, alice, true);
    }

    function test_setContributorAllowed_revertsForUnknownDatanet() public {
        vm.prank(datanetOwner);
        vm.expectRevert(abi.encodeWithSelector(DatanetRegistry.UnknownDatanet.selector, 0));
        datanets.setContributorAllowed(0, alice, true);
    }

    // ---------------------------------------------------------------- contribute

    function test_contribute_recordsAndPullsStake() public {
        uint256 before = token.balanceOf(alice);
        uint256 expectedId = datanets.contributionCount() + 1;
        vm.expectEmit(true, true, true, true, address(datanets));
        emit DatanetRegistry.ContributionSubmitted(expectedId, datanetId, alice, HASH, "bafy-c", 4096, 12, STAKE);
        vm.prank(alice);
        uint256 id = datanets.contribute(datanetId, HASH, "bafy-c", 4096, 12);

        assertEq(id, expectedId, "id");
        assertEq(token.balanceOf(alice), before - STAKE, "stake pulled");
        assertEq(token.balanceOf(address(datanets)), STAKE, "stake held");
        DatanetRegistry.Contribution memory c = datanets.getContribution(id);
        assertEq(c.datanetId, datanetId, "datanet");
        assertEq(c.contributor, alice, "contributor");
        assertEq(c.contentHash, HASH, "hash");
        assertEq(c.size, 4096, "size");
        assertEq(c.rowCount, 12, "rows");
        assertTrue(c.status == DatanetRegistry.Status.Pending, "pending");
        assertEq(c.stake, STAKE, "stake");
        assertEq(c.cid, "bafy-c");
        assertEq(datanets.getDatanet(datanetId).contributionCount, 3, "datanet count");
    }

    function test_contribute_withoutStakeNeedsNoAllowance() public {
        uint256 id = _createDatanet(0, false, false);
        vm.prank(stranger);
        uint256 cid = datanets.contribute(id, HASH, "bafy", 1, 1);
        assertEq(datanets.getContribution(cid).stake, 0, "no stake");
    }

    function test_contribute_revertsWithoutAllowance() public {
        _fund(stranger, STAKE);
        vm.prank(stranger);
        vm.expectRevert(
            abi.encodeWithSelector(IERC20Errors.ERC20InsufficientAllowance.selector, address(datanets), 0, STAKE)
        );
        datanets.contribute(datanetId, HASH, "bafy", 1, 1);
    }

    function test_contribute_revertsForUnknownDatanet() public {
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(DatanetRegistry.UnknownDatanet.selector, 0));
        datanets.contribute(0, HASH, "bafy", 1, 1);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(DatanetRegistry.UnknownDatanet.selector, 2));
        datanets.contribute(2, HASH, "bafy", 1, 1);
    }

    function test_contribute_revertsOnEmptyContribution() public {
        vm.startPrank(alice);
        vm.expectRevert(DatanetRegistry.EmptyContribution.selector);
        datanets.contribute(datanetId, HASH, "bafy", 0, 1);
        vm.expectRevert(DatanetRegistry.EmptyContribution.selector);
        datanets.contribute(datanetId, HASH, "bafy", 1, 0);
        vm.expectRevert(DatanetRegistry.EmptyContribution.selector);
        datanets.contribute(datanetId, bytes32(0), "bafy", 1, 1);
        vm.stopPrank();
    }

    function test_contribute_revertsOnEmptyCid() public {
        vm.prank(alice);
        vm.expectRevert(DatanetRegistry.EmptyCid.selector);
        datanets.contribute(datanetId, HASH, "", 1, 1);
    }

    // ---------------------------------------------------------------- approve

    function test_approve_batchReturnsStakesAndBumpsVersion() public {
        uint256 a = _contribute(alice, datanetId, 10);
        uint256 b = _contribute(bob, datanetId, 11);
        uint256 aliceBefore = token.balanceOf(alice);
        uint256 bobBefore = token.balanceOf(bob);
        uint64 version = datanets.getDatanet(datanetId).version;

        vm.expectEmit(true, true, true, true, address(datanets));
        emit DatanetRegistry.ContributionApproved(a, datanetId, curator);
        vm.expectEmit(true, true, true, true, address(datanets));
        emit DatanetRegistry.ContributionApproved(b, datanetId, curator);
        vm.expectEmit(true, false, false, true, address(datanets));
        emit DatanetRegistry.DatanetVersionIncreased(datanetId, version + 1);
        _approve(datanetId, _ids(a, b));

        assertTrue(datanets.statusOf(a) == DatanetRegistry.Status.Approved, "a approved");
        assertTrue(datanets.statusOf(b) == DatanetRegistry.Status.Approved, "b approved");
        assertEq(token.balanceOf(alice), aliceBefore + STAKE, "alice stake back");
        assertEq(token.balanceOf(bob), bobBefore + STAKE, "bob stake back");
        assertEq(token.balanceOf(address(datanets)), 0, "nothing held");
        assertEq(datanets.getContribution(a).stake, 0, "stake cleared");
        assertEq(datanets.getDatanet(datanetId).version, version + 1, "version once per batch");
        assertEq(datanets.approvedCount(alice), 2, "alice approved count");
    }

    function test_approve_revertsForNonCurator() public {
        uint256 id = _contribute(alice, datanetId, 10);
        vm.prank(datanetOwner);
        vm.expectRevert(abi.encodeWithSelector(DatanetRegistry.NotCurator.selector, datanetId, datanetOwner));
        datanets.approve(datanetId, _ids(id));
    }

    function test_approve_revertsForEmptyBatch() public {
        vm.prank(curator);
        vm.expectRevert(DatanetRegistry.EmptyBatch.selector);
        datanets.approve(datanetId, new uint256[](0));
    }

    function test_setContributorAllowed_revertsForZeroAddress() public {
        vm.prank(datanetOwner);
        vm.expectRevert(DatanetRegistry.ZeroAddress.selector);
        datanets.setContributorAllowed(datanetId, address(0), true);
    }

    function test_approve_revertsForUnknownDatanet() public {
        vm.prank(curator);
        vm.expectRevert(abi.encodeWithSelector(DatanetRegistry.UnknownDatanet.selector, 5));
        datanets.approve(5, _ids(1));
    }

    function test_approve_revertsForUnknownContribution() public {
        vm.prank(curator);
        vm.expectRevert(abi.encodeWithSelector(DatanetRegistry.UnknownContribution.selector, 77));
        datanets.approve(datanetId, _ids(77));
    }

    function test_approve_revertsForContributionOfAnotherDatanet() public {
        uint256 other = _createDatanet(0, false, false);
        uint256 id = _contribute(alice, other, 10);
        vm.prank(curator);
        vm.expectRevert(abi.encodeWithSelector(DatanetRegistry.UnknownContribution.selector, id));
        datanets.approve(datanetId, _ids(id));
    }

    function test_approve_revertsWhenNotPendingAndIsAtomic() public {
        uint256 id = _contribute(alice, datanetId, 10);
        vm.prank(curator);
        vm.expectRevert(
            abi.encodeWithSelector(
                DatanetRegistry.NotPending.selector, aliceContribution, DatanetRegistry.Status.Approved
            )
        );
        datanets.approve(datanetId, _ids(id, aliceContribution));
        assertTrue(datanets.statusOf(id) == DatanetRegistry.Status.Pending, "batch rolled back");

        vm.prank(curator);
        vm.expectRevert(abi.encodeWithSelector(DatanetRegistry.NotPending.selector, id, DatanetRegistry.Status.Approved));
        datanets.approve(datanetId, _ids(id, id));
    }

    // ---------------------------------------------------------------- reject

    function test_reject_returnsStakeWithoutSlashing() public {
        uint256 id = _contribute(alice, datanetId, 10);
        uint256 before = token.balanceOf(alice);
        vm.expectEmit(true, true, true, true, address(datanets));
        emit DatanetRegistry.ContributionRejected(id, datanetId, curator, 2, false);
        vm.prank(curator);
        datanets.reject(id, 2);
        assertTrue(datanets.statusOf(id) == DatanetRegistry.Status.Rejected, "rejected");
        assertEq(token.balanceOf(alice), before + STAKE, "stake returned");
        assertEq(datanets.rejectedCount(alice), 1, "rejected count");
        assertEq(datanets.getContribution(id).stake, 0, "stake cleared");
    }

    function test_reject_slashesToTreasury() public {
        uint256 id = _createDatanet(STAKE, false, true);
        uint256 cid = _contribute(alice, id, 10);
        uint256 before = token.balanceOf(alice);
        vm.expectEmit(true, true, true, true, address(datanets));
        emit DatanetRegistry.ContributionRejected(cid, id, curator, 1, true);
        vm.prank(curator);
        datanets.reject(cid, 1);
        assertEq(token.balanceOf(alice), before, "nothing returned");
        assertEq(token.balanceOf(slashTreasury), STAKE, "slashed");
    }

    function test_reject_withoutStakeIsNeverSlashed() public {
        uint256 id = _createDatanet(0, false, true);
        uint256 cid = _contribute(alice, id, 10);
        vm.expectEmit(true, true, true, true, address(datanets));
        emit DatanetRegistry.ContributionRejected(cid, id, curator, 1, false);
        vm.prank(curator);
        datanets.reject(cid, 1);
    }

    function test_reject_revertsForNonCurator() public {
        uint256 id = _contribute(alice, datanetId, 10);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(DatanetRegistry.NotCurator.selector, datanetId, alice));
        datanets.reject(id, 1);
    }

    function test_reject_revertsWhenNotPending() public {
        vm.prank(curator);
        vm.expectRevert(
            abi.encodeWithSelector(
                DatanetRegistry.NotPending.selector, aliceContribution, DatanetRegistry.Status.Approved
            )
        );
        datanets.reject(aliceContribution, 1);
    }

    function test_reject_revertsForUnknownContribution() public {
        vm.prank(curator);
        vm.expectRevert(abi.encodeWithSelector(DatanetRegistry.UnknownContribution.selector, 42));
        datanets.reject(42, 1);
    }

    // ---------------------------------------------------------------- withdraw

    function test_withdraw_returnsStake() public {
        uint256 id = _contribute(alice, datanetId, 10);
        uint256 before = token.balanceOf(alice);
        vm.expectEmit(true, true, false, true, address(datanets));
        emit DatanetRegistry.ContributionWithdrawn(id, datanetId);
        vm.prank(alice);
        datanets.withdraw(id);
        assertTrue(datanets.statusOf(id) == DatanetRegistry.Status.Withdrawn, "withdrawn");
        assertEq(token.balanceOf(alice), before + STAKE, "stake returned");

        vm.prank(curator);
        vm.expectRevert(abi.encodeWithSelector(DatanetRegistry.NotPending.selector, id, DatanetRegistry.Status.Withdrawn));
        datanets.approve(datanetId, _ids(id));
    }

    function test_withdraw_revertsForOtherAccount() public {
        uint256 id = _contribute(alice, datanetId, 10);
        vm.prank(bob);
        vm.expectRevert(abi.encodeWithSelector(DatanetRegistry.NotContributor.selector, id, bob));
        datanets.withdraw(id);
    }

    function test_withdraw_revertsWhenNotPending() public {
        vm.prank(alice);
        vm.expectRevert(
            abi.encodeWithSelector(
                DatanetRegistry.NotPending.selector, aliceContribution, DatanetRegistry.Status.Approved
            )
        );
        datanets.withdraw(aliceContribution);
    }

    function test_withdraw_revertsForUnknownContribution() public {
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(DatanetRegistry.UnknownContribution.selector, 42));
        datanets.withdraw(42);
    }

    // ---------------------------------------------------------------- pause

    function test_pause_onlyPauser() public {
        bytes32 role = datanets.PAUSER_ROLE();
        vm.prank(alice);
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector, alice, role
            )
        );
        datanets.pause();

        vm.prank(admin);
        datanets.pause();
        assertTrue(datanets.paused(), "paused");

        vm.prank(alice);
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector, alice, role
            )
        );
        datanets.unpause();

        vm.prank(admin);
        datanets.unpause();
        assertFalse(datanets.paused(), "unpaused");

        vm.prank(admin);
        vm.expectRevert(Pausable.ExpectedPause.selector);
        datanets.unpause();
    }

    function test_pause_blocksEveryStateChange() public {
        uint256 id = _contribute(alice, datanetId, 10);
        uint256 id2 = _contribute(bob, datanetId, 11);
        uint256 held = token.balanceOf(address(datanets));
        vm.prank(admin);
        datanets.pause();

        vm.prank(datanetOwner);
        vm.expectRevert(Pausable.EnforcedPause.selector);
        datanets.createDatanet("m", "MIT", _curators(curator), address(0), 0, false, false);
        vm.prank(datanetOwner);
        vm.expectRevert(Pausable.EnforcedPause.selector);
        datanets.setCurator(datanetId, bob, true);
        vm.prank(datanetOwner);
        vm.expectRevert(Pausable.EnforcedPause.selector);
        datanets.setContributorAllowed(datanetId, bob, true);
        vm.prank(alice);
        vm.expectRevert(Pausable.EnforcedPause.selector);
        datanets.contribute(datanetId, HASH, "bafy", 1, 1);
        vm.prank(curator);
        vm.expectRevert(Pausable.EnforcedPause.selector);
        datanets.approve(datanetId, _ids(id));
        vm.prank(curator);
        vm.expectRevert(Pausable.EnforcedPause.selector);
        datanets.reject(id, 1);
        vm.prank(bob);
        vm.expectRevert(Pausable.EnforcedPause.selector);
        datanets.withdraw(id2);
        assertEq(token.balanceOf(address(datanets)), held, "no token moved");

        vm.prank(admin);
        datanets.unpause();
        vm.prank(bob);
        datanets.withdraw(id2);
    }

    // ---------------------------------------------------------------- views

    function test_views() public {
        assertTrue(datanets.exists(datanetId), "exists");
        assertFalse(datanets.exists(0), "zero id");
        assertFalse(datanets.exists(datanetId + 1), "next id");
        assertTrue(datanets.statusOf(999) == DatanetRegistry.Status.None, "unknown is None");
        (uint256 dn, DatanetRegistry.Status status) = datanets.datanetAndStatusOf(aliceContribution);
        assertEq(dn, datanetId, "datanet of");
        assertTrue(status == DatanetRegistry.Status.Approved, "status of");
        (dn, status) = datanets.datanetAndStatusOf(999);
        assertEq(dn, 0, "unknown datanet");
        assertTrue(status == DatanetRegistry.Status.None, "unknown status");

        vm.expectRevert(abi.encodeWithSelector(DatanetRegistry.UnknownDatanet.selector, 9));
        datanets.getDatanet(9);
        vm.expectRevert(abi.encodeWithSelector(DatanetRegistry.UnknownContribution.selector, 999));
        datanets.getContribution(999);
    }
}
