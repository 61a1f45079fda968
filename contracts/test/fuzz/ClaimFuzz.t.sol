// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {Fixture} from "../utils/Fixture.sol";
import {Merkle} from "../utils/Merkle.sol";
import {AttributionSettlement} from "../../src/AttributionSettlement.sol";

/// @notice Claims: each allocation at most once, never above the epoch's signed cap, and the
/// settle split conserves every wei.
contract ClaimFuzzTest is Fixture {
    uint256 internal constant N = 6;

    function setUp() public override {
        super.setUp();
        vm.warp(1_800_000_000);
    }

    function _accounts() internal pure returns (address[] memory accounts) {
        accounts = new address[](N);
        for (uint256 i = 0; i < N; i++) {
            accounts[i] = vm.addr(0xC1A1000 + i);
        }
    }

    /// @dev Settle one epoch whose root holds `amounts` and whose cap is `cap` (the root may
    /// promise more than the cap).
    function _settleTree(uint256[] memory amounts, uint256 cap) internal returns (bytes32[] memory tree) {
        uint256 fees = cap * 2 + 1;
        _fees(modelId, fees);
        (,, uint256 cb, uint256 kb) = _budgets(_available(modelId, escrow.chargeSeq(modelId)));
        uint256 curatorsTotal = cap < cb ? cap : cb;
        assertLe(cap - curatorsTotal, kb, "fixture: contributors budget");
        tree = Merkle.build(_accounts(), amounts);
        _settle(_attestation(modelId, escrow.chargeSeq(modelId), curatorsTotal, cap - curatorsTotal, tree[0]));
    }

    function testFuzz_claim_onceEachAndNeverAboveCap(uint96[6] memory raw, uint256 capSeed, uint256 orderSeed)
        public
    {
        uint256[] memory amounts = new uint256[](N);
        uint256 sum = 0;
        for (uint256 i = 0; i < N; i++) {
            amounts[i] = bound(raw[i], 0, 10_000 ether);
            sum += amounts[i];
        }
        uint256 cap = bound(capSeed, 0, sum);
        bytes32[] memory tree = _settleTree(amounts, cap);
        address[] memory accounts = _accounts();
        uint64 epoch = settlement.lastEpoch(modelId);
        uint256 held = token.balanceOf(address(settlement));

        uint256 claimedTotal = 0;
        for (uint256 k = 0; k < N; k++) {
            uint256 i = (orderSeed % N + k) % N;
            AttributionSettlement.Claim memory c = _claimOf(modelId, epoch, accounts[i], amounts[i], tree);
            bool fits = claimedTotal + amounts[i] <= cap;
            if (!fits) {
                vm.expectRevert(
                    abi.encodeWithSelector(AttributionSettlement.ClaimCapExceeded.selector, modelId, epoch)
                );
            }
            settlement.claim(c);
            if (fits) {
                claimedTotal += amounts[i];
                assertEq(token.balanceOf(accounts[i]), amounts[i], "paid its allocation");
                vm.expectRevert(
                    abi.encodeWithSelector(AttributionSettlement.AlreadyClaimed.selector, modelId, epoch, c.index)
                );
                settlement.claim(c);
            } else {
                assertEq(token.balanceOf(accounts[i]), 0, "nothing paid");
            }
            (, uint96 unclaimed) = settlement.epochs(modelId, epoch);
            assertEq(unclaimed, cap - claimedTotal, "unclaimed total");
            assertTrue(settlement.isClaimed(modelId, epoch, c.index) == fits, "claimed bit");
        }
        assertEq(token.balanceOf(address(settlement)), held - claimedTotal, "settlement paid exactly the claims");
    }

    function testFuzz_claim_forgedLeafNeverPays(uint96 amount, uint96 forged, address account) public {
        uint256 a = bound(amount, 0, 10_000 ether);
        vm.assume(forged != a);
        address[] memory accounts = _accounts();
        bool known = false;
        for (uint256 i = 0; i < N; i++) {
            known = known || account == accounts[i];
        }
        vm.assume(!known);
        uint256[] memory amounts = new uint256[](N);
        for (uint256 i = 0; i < N; i++) {
            amounts[i] = a + i;
        }
        bytes32[] memory tree = _settleTree(amounts, a * N + N * N);
        uint64 epoch = settlement.lastEpoch(modelId);

        AttributionSettlement.Claim memory c = _claimOf(modelId, epoch, accounts[0], amounts[0], tree);
        c.amount = forged;
        vm.expectRevert(abi.encodeWithSelector(AttributionSettlement.InvalidProof.selector, modelId, epoch, accounts[0]));
        settlement.claim(c);

        c = _claimOf(modelId, epoch, accounts[1], amounts[1], tree);
        c.account = account;
        vm.expectRevert(abi.encodeWithSelector(AttributionSettlement.InvalidProof.selector, modelId, epoch, account));
        settlement.claim(c);
    }

    function testFuzz_claimMany_neverDoubleClaims(uint8 epochsRaw, uint8 dupRaw, uint96 amount) public {
        uint256 count = bound(epochsRaw, 2, 6);
        uint256[] memory amounts = new uint256[](N);
        for (uint256 i = 0; i < N; i++) {
            amounts[i] = bound(amount, 1, 1_000 ether) + i;
        }
        uint256 cap = 0;
        for (uint256 i = 0; i < N; i++) {
            cap += amounts[i];
        }
        address[] memory accounts = _accounts();
        AttributionSettlement.Claim[] memory cs = new AttributionSettlement.Claim[](count + 1);
        for (uint256 e = 0; e < count; e++) {
            bytes32[] memory tree = _settleTree(amounts, cap);
            cs[e] = _claimOf(modelId, settlement.lastEpoch(modelId), accounts[2], amounts[2], tree);
        }
        uint256 dup = bound(dupRaw, 0, count - 1);
        cs[count] = cs[dup];
        vm.expectRevert(
            abi.encodeWithSelector(AttributionSettlement.AlreadyClaimed.selector, modelId, cs[dup].epoch, cs[dup].index)
        );
        settlement.claimMany(cs);

        AttributionSettlement.Claim[] memory unique = new AttributionSettlement.Claim[](count);
        for (uint256 e = 0; e < count; e++) {
            unique[e] = cs[e];
        }
        settlement.claimMany(unique);
        assertEq(token.balanceOf(accounts[2]), amounts[2] * count, "each epoch once");
        vm.expectRevert(
            abi.encodeWithSelector(AttributionSettlement.AlreadyClaimed.selector, modelId, unique[0].epoch, unique[0].index)
        );
        settlement.claimMany(unique);
    }

    /// @dev Whatever the fees and signed totals, settle moves every released wei to exactly one
    /// of: protocol, owner, claimable cap, carried dust.
    function testFuzz_settle_conservesEveryWei(uint128 fee, uint16 curatorsCut, uint16 contributorsCut) public {
        uint256 f = bound(fee, 1, FUNDS);
        _fees(modelId, f);
        uint256 available = _available(modelId, escrow.chargeSeq(modelId));
        (uint256 p, uint256 o, uint256 cb, uint256 kb) = _budgets(available);
        uint256 ct = (cb * bound(curatorsCut, 0, 10_000)) / 10_000;
        uint256 kt = (kb * bound(contributorsCut, 0, 10_000)) / 10_000;
        uint256 treasuryBefore = token.balanceOf(protocolTreasury);
        uint256 ownerBefore = token.balanceOf(builder);
        _settle(_attestation(modelId, escrow.chargeSeq(modelId), ct, kt, keccak256("root")));

        uint256 dust = settlement.carriedDust(modelId);
        assertEq(token.balanceOf(protocolTreasury) - treasuryBefore, p, "protocol");
        assertEq(token.balanceOf(builder) - ownerBefore, o, "owner");
        assertEq(p + o + ct + kt + dust, available, "every wei accounted");
        assertEq(token.balanceOf(address(settlement)), ct + kt + dust, "settlement holds cap + dust");
        assertEq(token.balanceOf(address(escrow)), 0, "escrow released all");
    }
}
