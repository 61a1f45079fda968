// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {Fixture} from "../utils/Fixture.sol";
import {DatanetRegistry} from "../../src/DatanetRegistry.sol";

/// @notice Stake accounting of contribute / approve / reject / withdraw under random inputs.
contract StakeFuzzTest is Fixture {
    function testFuzz_contribute_holdsExactStake(uint96 stake, uint64 size, uint32 rows, bytes32 hash) public {
        uint256 s = bound(stake, 0, FUNDS);
        uint256 id = _createDatanet(s, false, false);
        uint256 held = token.balanceOf(address(datanets));
        uint256 before = token.balanceOf(alice);
        vm.prank(alice);
        if (size == 0 || rows == 0 || hash == bytes32(0)) {
            vm.expectRevert(DatanetRegistry.EmptyContribution.selector);
            datanets.contribute(id, hash, "bafy", size, rows);
            assertEq(token.balanceOf(address(datanets)), held, "nothing held");
            return;
        }
        uint256 cid = datanets.contribute(id, hash, "bafy", size, rows);
        assertEq(token.balanceOf(address(datanets)), held + s, "stake held");
        assertEq(token.balanceOf(alice), before - s, "stake paid");
        DatanetRegistry.Contribution memory c = datanets.getContribution(cid);
        assertEq(c.stake, s, "recorded stake");
        assertEq(c.size, size, "size");
        assertEq(c.rowCount, rows, "rows");
        assertEq(c.contentHash, hash, "hash");
    }

    /// @dev Random lifecycles over one Datanet: the registry always holds exactly the stakes of
    /// pending contributions, and every stake ends with its contributor or the treasury.
    function testFuzz_lifecycle_stakeAccounting(uint256 seed, uint96 stake, bool slash) public {
        uint256 s = bound(stake, 0, 1_000 ether);
        uint256 dn = _createDatanet(s, false, slash);
        uint256 held = token.balanceOf(address(datanets));
        uint256 total = token.balanceOf(alice) + token.balanceOf(bob) + token.balanceOf(slashTreasury) + held;
        uint256 first = datanets.contributionCount() + 1;
        uint256 slashed = 0;
        uint256 returned = 0;

        for (uint256 step = 0; step < 24; step++) {
            uint256 r = uint256(keccak256(abi.encode(seed, step)));
            uint256 op = r % 4;
            uint256 last = datanets.contributionCount();
            if (op == 0 || last < first) {
                _contribute(r % 2 == 0 ? alice : bob, dn, r);
                continue;
            }
            uint256 id = first + ((r >> 8) % (last - first + 1));
            DatanetRegistry.Contribution memory c = datanets.getContribution(id);
            bool pending = c.status == DatanetRegistry.Status.Pending;
            if (op == 1) {
                vm.prank(curator);
                if (!pending) vm.expectRevert(abi.encodeWithSelector(DatanetRegistry.NotPending.selector, id, c.status));
                datanets.approve(dn, _ids(id));
                if (pending) returned += s;
            } else if (op == 2) {
                vm.prank(curator);
                if (!pending) vm.expectRevert(abi.encodeWithSelector(DatanetRegistry.NotPending.selector, id, c.status));
                datanets.reject(id, uint8(bound(r >> 16, 0, type(uint8).max))); // forge-lint: disable-line(unsafe-typecast)
                if (pending && slash) slashed += s;
                else if (pending) returned += s;
            } else {
                address who = (r >> 24) % 3 == 0 ? stranger : c.contributor;
                vm.prank(who);
                if (who != c.contributor) {
                    vm.expectRevert(abi.encodeWithSelector(DatanetRegistry.NotContributor.selector, id, who));
                } else if (!pending) {
                    vm.expectRevert(abi.encodeWithSelector(DatanetRegistry.NotPending.selector, id, c.status));
                }
                datanets.withdraw(id);
                if (pending && who == c.contributor) returned += s;
            }
        }

        uint256 pendingStakes = 0;
        for (uint256 id = first; id <= datanets.contributionCount(); id++) {
            DatanetRegistry.Contribution memory c = datanets.getContribution(id);
            if (c.status == DatanetRegistry.Status.Pending) {
                assertEq(c.stake, s, "pending keeps its stake");
                pendingStakes += c.stake;
            } else {
                assertEq(c.stake, 0, "settled stake cleared");
            }
        }
        assertEq(token.balanceOf(address(datanets)), held + pendingStakes, "registry holds pending stakes");
        assertEq(token.balanceOf(slashTreasury), slashed, "treasury holds slashed stakes");
        uint256 contributed = (datanets.contributionCount() - first + 1) * s;
        assertEq(contributed, pendingStakes + slashed + returned, "every stake accounted for");
        assertEq(
            token.balanceOf(alice) + token.balanceOf(bob) + token.balanceOf(slashTreasury)
                + token.balanceOf(address(datanets)),
            total,
            "conservation"
        );
    }

    /// @dev After any terminal verdict, no second verdict or withdrawal moves a token.
    function testFuzz_terminalStatusIsFinal(uint8 firstOp, uint8 secondOp, uint96 stake) public {
        uint256 s = bound(stake, 1, 1_000 ether);
        uint256 dn = _createDatanet(s, false, true);
        uint256 id = _contribute(alice, dn, 77);
        _apply(dn, id, firstOp % 3);
        DatanetRegistry.Status status = datanets.statusOf(id);
        uint256 held = token.balanceOf(address(datanets));
        vm.expectRevert(abi.encodeWithSelector(DatanetRegistry.NotPending.selector, id, status));
        _apply(dn, id, secondOp % 3);
        assertEq(token.balanceOf(address(datanets)), held, "nothing moved");
        assertTrue(datanets.statusOf(id) == status, "status unchanged");
    }

    function _apply(uint256 dn, uint256 id, uint256 op) internal {
        if (op == 0) {
            vm.prank(curator);
            datanets.approve(dn, _ids(id));
        } else if (op == 1) {
            vm.prank(curator);
            datanets.reject(id, 1);
        } else {
            vm.prank(alice);
            datanets.withdraw(id);
        }
    }
}
