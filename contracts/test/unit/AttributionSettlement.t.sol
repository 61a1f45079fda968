// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {Fixture} from "../utils/Fixture.sol";
import {Merkle} from "../utils/Merkle.sol";
import {UsageEscrow} from "../../src/UsageEscrow.sol";
import {AttributionSettlement} from "../../src/AttributionSettlement.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";

contract AttributionSettlementTest is Fixture {
    bytes32 internal constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    uint256 internal constant FEES = 100 ether;

    function setUp() public override {
        super.setUp();
        vm.warp(1_800_000_000);
        _fees(modelId, FEES);
    }

    function _expectSettleRevert(AttributionSettlement.Attestation memory a, bytes[] memory sigs, bytes memory err)
        internal
    {
        vm.expectRevert(err);
        settlement.settle(a, sigs);
    }

    /// @dev Settle the next epoch of `mId` over all its fees, allocated to alice and bob.
    function _settleAll(uint256 mId)
        internal
        returns (uint64 epoch, bytes32[] memory tree, uint256 aliceAmount, uint256 bobAmount)
    {
        uint64 upto = escrow.chargeSeq(mId);
        (,, uint256 cb, uint256 kb) = _budgets(_available(mId, upto));
        (tree, aliceAmount, bobAmount) = _tree2(cb + kb);
        AttributionSettlement.Attestation memory a = _attestation(mId, upto, cb, kb, tree[0]);
        _settle(a);
        epoch = a.epoch;
    }

    function _signer(AttributionSettlement.Attestation memory a, bytes memory sig) internal view returns (address) {
        return ECDSA.recover(settlement.attestationDigest(a), sig);
    }

    // ---------------------------------------------------------------- constructor

    function test_constructor_state() public view {
        assertEq(address(settlement.token()), address(token), "token");
        assertEq(address(settlement.escrow()), address(escrow), "escrow");
        assertEq(address(settlement.models()), address(models), "models");
        assertEq(settlement.splitDelay(), SPLIT_DELAY, "split delay");
        assertEq(settlement.protocolTreasury(), protocolTreasury, "treasury");
        assertEq(settlement.quorum(), QUORUM, "quorum");
        (uint16 p, uint16 o, uint16 c, uint16 k) = settlement.split();
        assertEq(p, PROTOCOL_BPS, "protocol bps");
        assertEq(o, OWNER_BPS, "owner bps");
        assertEq(c, CURATORS_BPS, "curators bps");
        assertEq(k, CONTRIBUTORS_BPS, "contributors bps");
        assertEq(settlement.BPS(), 10_000, "bps");
        assertTrue(settlement.hasRole(settlement.DEFAULT_ADMIN_ROLE(), admin), "admin");
        assertTrue(settlement.hasRole(settlement.PAUSER_ROLE(), admin), "pauser");
        assertEq(settlement.getRoleMemberCount(settlement.ATTRIBUTOR_ROLE()), 5, "attributors");
    }

    function test_constructor_startsWithQuorumOne() public {
        AttributionSettlement fresh =
            new AttributionSettlement(token, escrow, admin, protocolTreasury, _defaultSplit(), SPLIT_DELAY);
        assertEq(fresh.quorum(), 1, "quorum");
        assertEq(fresh.pendingSplitEta(), 0, "no pending split");
    }

    function test_constructor_reverts() public {
        AttributionSettlement.Split memory s = _defaultSplit();
        vm.expectRevert(AttributionSettlement.ZeroAddress.selector);
        new AttributionSettlement(IERC20(address(0)), escrow, admin, protocolTreasury, s, 0);
        vm.expectRevert(AttributionSettlement.ZeroAddress.selector);
        new AttributionSettlement(token, UsageEscrow(address(0)), admin, protocolTreasury, s, 0);
        vm.expectRevert(AttributionSettlement.ZeroAddress.selector);
        new AttributionSettlement(token, escrow, address(0), protocolTreasury, s, 0);
        vm.expectRevert(AttributionSettlement.ZeroAddress.selector);
        new AttributionSettlement(token, escrow, admin, address(0), s, 0);
        s.contributorsBps -= 1;
        vm.expectRevert(AttributionSettlement.BadSplit.selector);
        new AttributionSettlement(token, escrow, admin, protocolTreasury, s, 0);
    }

    // ---------------------------------------------------------------- administration

    function test_setQuorum() public {
        bytes32 role = settlement.DEFAULT_ADMIN_ROLE();
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, alice, role));
        settlement.setQuorum(2);
        vm.prank(admin);
        vm.expectRevert(abi.encodeWithSelector(AttributionSettlement.BadQuorum.selector, 0));
        settlement.setQuorum(0);
        vm.expectEmit(false, false, false, true, address(settlement));
        emit AttributionSettlement.QuorumSet(2);
        vm.prank(admin);
        settlement.setQuorum(2);
        assertEq(settlement.quorum(), 2, "quorum");
    }

    function test_setQuorum_revertsAboveRegisteredAttributors() public {
        uint256 registered = settlement.getRoleMemberCount(settlement.ATTRIBUTOR_ROLE());
        vm.prank(admin);
        vm.expectRevert(abi.encodeWithSelector(AttributionSettlement.BadQuorum.selector, uint8(registered + 1)));
        settlement.setQuorum(uint8(registered + 1));
    }

    function test_settle_revertsForEmptyRootWithPayouts() public {
        AttributionSettlement.Attestation memory a = _fullAttestation(modelId, bytes32(0));
        _expectSettleRevert(a, _attest(a, QUORUM), abi.encodeWithSelector(AttributionSettlement.EmptyRoot.selector));
    }

    function test_setProtocolTreasury() public {
        bytes32 role = settlement.DEFAULT_ADMIN_ROLE();
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, alice, role));
        settlement.setProtocolTreasury(alice);
        vm.prank(admin);
        vm.expectRevert(AttributionSettlement.ZeroAddress.selector);
        settlement.setProtocolTreasury(address(0));

        vm.expectEmit(false, false, false, true, address(settlement));
        emit AttributionSettlement.ProtocolTreasurySet(stranger);
        vm.prank(admin);
        settlement.setProtocolTreasury(stranger);
        assertEq(settlement.protocolTreasury(), stranger, "treasury");
        _settleAll(modelId);
        assertEq(token.balanceOf(stranger), FEES * PROTOCOL_BPS / 10_000, "new treasury paid");
        assertEq(token.balanceOf(protocolTreasury), 0, "old treasury not paid");
    }

    function test_proposeAndExecuteSplit() public {
        AttributionSettlement.Split memory next = AttributionSettlement.Split(1000, 1000, 1000, 7000);
        bytes32 role = settlement.DEFAULT_ADMIN_ROLE();
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, alice, role));
        settlement.proposeSplit(next);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, alice, role));
        settlement.executeSplit();

        vm.startPrank(admin);
        vm.expectRevert(AttributionSettlement.NoPendingSplit.selector);
        settlement.executeSplit();
        vm.expectRevert(AttributionSettlement.BadSplit.selector);
        settlement.proposeSplit(AttributionSettlement.Split(1000, 1000, 1000, 7001));

        uint256 eta = block.timestamp + SPLIT_DELAY;
        vm.expectEmit(false, false, false, true, address(settlement));
        emit AttributionSettlement.SplitProposed(1000, 1000, 1000, 7000, eta);
        settlement.proposeSplit(next);
        assertEq(settlement.pendingSplitEta(), eta, "eta");
        (uint16 pp,,,) = settlement.pendingSplit();
        assertEq(pp, 1000, "pending protocol bps");

        vm.warp(eta - 1);
        vm.expectRevert(abi.encodeWithSelector(AttributionSettlement.SplitNotReady.selector, eta));
        settlement.executeSplit();
        vm.stopPrank();

        // An attestation signed under the old split no longer settles once the new one applies.
        AttributionSettlement.Attestation memory old = _fullAttestation(modelId, keccak256("root"));
        old.deadline = eta + 1 hours;
        bytes[] memory sigs = _attest(old, QUORUM);

        vm.warp(eta);
        vm.expectEmit(false, false, false, true, address(settlement));
        emit AttributionSettlement.SplitSet(1000, 1000, 1000, 7000);
        vm.prank(admin);
        settlement.executeSplit();
        (uint16 p,,,) = settlement.split();
        assertEq(p, 1000, "applied");
        assertEq(settlement.pendingSplitEta(), 0, "cleared");
        vm.prank(admin);
        vm.expectRevert(AttributionSettlement.NoPendingSplit.selector);
        settlement.executeSplit();

        _expectSettleRevert(
            old,
            sigs,
            abi.encodeWithSelector(AttributionSettlement.SplitMismatch.selector, "protocol", 5 ether, 10 ether)
        );
        _settleAll(modelId);
        assertEq(token.balanceOf(protocolTreasury), 10 ether, "new split paid");
    }

    // ---------------------------------------------------------------- digest

    function test_attestationDigest_matchesEip712() public view {
        AttributionSettlement.Attestation memory a = _fullAttestation(modelId, keccak256("root"));
        bytes32 typehash = keccak256(
            "Attestation(uint256 modelId,uint64 epoch,uint64 uptoSeq,uint256 feeTotal,uint256 protocolAmount,"
            "uint256 ownerAmount,uint256 curatorsTotal,uint256 contributorsTotal,bytes32 payoutRoot,string resultsCid,"
            "uint256 deadline)"
        );
        bytes32 domain = keccak256(
            abi.encode(
                DOMAIN_TYPEHASH,
                keccak256("Provenant AttributionSettlement"),
                keccak256("1"),
                block.chainid,
                address(settlement)
            )
        );
        bytes memory encoded = abi.encode(
            typehash, a.modelId, a.epoch, a.uptoSeq, a.feeTotal, a.protocolAmount, a.ownerAmount, a.curatorsTotal
        );
        encoded = bytes.concat(encoded, abi.encode(a.contributorsTotal, a.payoutRoot, keccak256(bytes(a.resultsCid)), a.deadline));
        bytes32 digest = keccak256(abi.encodePacked("\x19\x01", domain, keccak256(encoded)));

        assertEq(settlement.ATTESTATION_TYPEHASH(), typehash, "typehash");
        assertEq(settlement.domainSeparator(), domain, "domain separator");
        assertEq(settlement.attestationDigest(a), digest, "digest");
        (, string memory name, string memory version, uint256 chainId, address verifying,,) = settlement.eip712Domain();
        assertEq(name, "Provenant AttributionSettlement");
        assertEq(version, "1");
        assertEq(chainId, block.chainid, "chain id");
        assertEq(verifying, address(settlement), "verifying contract");
    }

    // ---------------------------------------------------------------- settle

    function test_settle_splitsFeesAndRecordsRoot() public {
        (bytes32[] memory tree,,) = _tree2(80 ether);
        AttributionSettlement.Attestation memory a = _attestation(modelId, 1, 10 ether, 70 ether, tree[0]);
        assertEq(a.feeTotal, FEES, "fee total");
        assertEq(a.protocolAmount, 5 ether, "protocol");
        assertEq(a.ownerAmount, 15 ether, "owner");
        bytes[] memory sigs = _attest(a, QUORUM);

        vm.expectEmit(true, true, false, true, address(settlement));
        emit AttributionSettlement.EpochSettled(modelId, 1, 1, tree[0], 80 ether, RESULTS_CID);
        vm.expectEmit(true, true, false, true, address(settlement));
        emit AttributionSettlement.EpochSplit(modelId, 1, FEES, 5 ether, 15 ether, 10 ether, 70 ether, 0);
        vm.prank(stranger); // anyone may submit a quorum's attestation
        settlement.settle(a, sigs);

        assertEq(settlement.lastEpoch(modelId), 1, "last epoch");
        (bytes20 rootPrefix, uint96 unclaimed) = settlement.epochs(modelId, 1);
        assertEq(rootPrefix, bytes20(tree[0]), "root");
        assertEq(unclaimed, 80 ether, "the whole cap is unclaimed");
        assertEq(settlement.carriedDust(modelId), 0, "dust");
        assertEq(token.balanceOf(protocolTreasury), 5 ether, "protocol paid");
        assertEq(token.balanceOf(builder), 15 ether, "owner paid");
        assertEq(token.balanceOf(address(settlement)), 80 ether, "allocations held");
        assertEq(token.balanceOf(address(escrow)), 0, "escrow emptied");
        assertEq(escrow.settledSeq(modelId), 1, "settled seq");
        assertEq(escrow.unsettledFees(modelId), 0, "unsettled");
    }

    function test_settle_upToNamedSeqAndCarriesDust() public {
        _fees(modelId, 999); // seq 2: an odd amount that leaves rounding and an unallocated remainder
        AttributionSettlement.Attestation memory a = _attestation(modelId, 1, 10 ether, 69 ether, keccak256("r1"));
        _settle(a);
        assertEq(settlement.carriedDust(modelId), 1 ether, "unallocated budget carried");
        assertEq(escrow.unsettledFees(modelId), 999, "seq 2 still escrowed");

        // 999 wei + 1 ether carried: protocol and owner round down, curators get their budget,
        // contributors leave 2 wei unallocated.
        uint256 available = 1 ether + 999;
        (uint256 p, uint256 o, uint256 cb, uint256 kb) = _budgets(available);
        AttributionSettlement.Attestation memory b = _attestation(modelId, 2, cb, kb - 2, keccak256("r2"));
        assertEq(b.feeTotal, available, "fee total includes dust");
        vm.expectEmit(true, true, false, true, address(settlement));
        emit AttributionSettlement.EpochSplit(modelId, 2, available, p, o, cb, kb - 2, 2);
        _settle(b);
        assertEq(settlement.carriedDust(modelId), 2, "new dust");
        assertEq(token.balanceOf(address(settlement)), 79 ether + cb + kb, "held = caps + dust");
    }

    function test_settle_acceptsMoreSignersThanQuorum() public {
        AttributionSettlement.Attestation memory a = _fullAttestation(modelId, keccak256("root"));
        settlement.settle(a, _attest(a, 5));
        assertEq(settlement.lastEpoch(modelId), 1, "settled");
    }

    function test_settle_revertsWhenExpired() public {
        AttributionSettlement.Attestation memory a = _fullAttestation(modelId, keccak256("root"));
        bytes[] memory sigs = _attest(a, QUORUM);
        vm.warp(a.deadline + 1);
        _expectSettleRevert(a, sigs, abi.encodeWithSelector(AttributionSettlement.Expired.selector, a.deadline));
    }

    function test_settle_revertsOutOfOrderOrReplayed() public {
        AttributionSettlement.Attestation memory a = _fullAttestation(modelId, keccak256("root"));
        a.epoch = 2;
        _expectSettleRevert(
            a, _attest(a, QUORUM), abi.encodeWithSelector(AttributionSettlement.EpochOutOfOrder.selector, 2, 1)
        );

        a.epoch = 1;
        bytes[] memory sigs = _attest(a, QUORUM);
        settlement.settle(a, sigs);
        _expectSettleRevert(a, sigs, abi.encodeWithSelector(AttributionSettlement.EpochOutOfOrder.selector, 1, 2));
    }

    function test_settle_revertsBelowQuorum() public {
        AttributionSettlement.Attestation memory a = _fullAttestation(modelId, keccak256("root"));
        _expectSettleRevert(
            a, _attest(a, 2), abi.encodeWithSelector(AttributionSettlement.TooFewSignatures.selector, 2, QUORUM)
        );
        _expectSettleRevert(
            a, new bytes[](0), abi.encodeWithSelector(AttributionSettlement.TooFewSignatures.selector, 0, QUORUM)
        );
    }

    function test_settle_revertsForRepeatedOrUnsortedSigners() public {
        AttributionSettlement.Attestation memory a = _fullAttestation(modelId, keccak256("root"));
        bytes[] memory sigs = _attest(a, QUORUM);
        (sigs[0], sigs[1]) = (sigs[1], sigs[0]);
        _expectSettleRevert(a, sigs, abi.encodeWithSelector(AttributionSettlement.SignersNotAscending.selector, 1));

        sigs = _attest(a, QUORUM);
        sigs[2] = sigs[1]; // one signer counted twice
        _expectSettleRevert(a, sigs, abi.encodeWithSelector(AttributionSettlement.SignersNotAscending.selector, 2));
    }

    function test_settle_revertsForUnregisteredOrRevokedSigner() public {
        AttributionSettlement.Attestation memory a = _fullAttestation(modelId, keccak256("root"));
        bytes32 digest = settlement.attestationDigest(a);
        uint256 outsiderPk = 0xBAD;
        address outsider = vm.addr(outsiderPk);
        bytes[] memory sigs = new bytes[](1);
        sigs[0] = _sig(outsiderPk, digest);
        vm.prank(admin);
        settlement.setQuorum(1);
        _expectSettleRevert(a, sigs, abi.encodeWithSelector(AttributionSettlement.NotAttributor.selector, outsider));

        bytes32 role = settlement.ATTRIBUTOR_ROLE();
        vm.prank(admin);
        settlement.revokeRole(role, attributors[0]);
        sigs = _attest(a, 1);
        _expectSettleRevert(
            a, sigs, abi.encodeWithSelector(AttributionSettlement.NotAttributor.selector, attributors[0])
        );
    }

    function test_settle_revertsForHighSSignature() public {
        AttributionSettlement.Attestation memory a = _fullAttestation(modelId, keccak256("root"));
        bytes[] memory sigs = _attest(a, QUORUM);
        sigs[1] = _highS(sigs[1]);
        bytes memory high = sigs[1];
        bytes32 s;
        assembly {
            s := mload(add(high, 64))
        }
        _expectSettleRevert(a, sigs, abi.encodeWithSelector(ECDSA.ECDSAInvalidSignatureS.selector, s));
    }

    function test_settle_revertsForTamperedAttestation() public {
        AttributionSettlement.Attestation memory a = _fullAttestation(modelId, keccak256("root"));
        bytes[] memory sigs = _attest(a, QUORUM);
        a.payoutRoot = keccak256("another root");
        _expectSettleRevert(
            a, sigs, abi.encodeWithSelector(AttributionSettlement.NotAttributor.selector, _signer(a, sigs[0]))
        );
    }

    function test_settle_revertsForWrongModel() public {
        uint256 other = _registerModel(builder, "provenant/demo-2", datanetId, _ids(aliceContribution));
        _fees(other, FEES); // the same fees, so only the signed model id differs
        AttributionSettlement.Attestation memory a = _fullAttestation(modelId, keccak256("root"));
        bytes[] memory sigs = _attest(a, QUORUM);
        a.modelId = other;
        _expectSettleRevert(
            a, sigs, abi.encodeWithSelector(AttributionSettlement.NotAttributor.selector, _signer(a, sigs[0]))
        );
    }

    function test_settle_revertsForAnotherChain() public {
        AttributionSettlement.Attestation memory a = _fullAttestation(modelId, keccak256("root"));
        uint256 chain = block.chainid;
        vm.chainId(chain + 1);
        bytes[] memory sigs = _attest(a, QUORUM);
        vm.chainId(chain);
        _expectSettleRevert(
            a, sigs, abi.encodeWithSelector(AttributionSettlement.NotAttributor.selector, _signer(a, sigs[0]))
        );
    }

    function test_settle_revertsForAnotherContract() public {
        AttributionSettlement twin =
            new AttributionSettlement(token, escrow, admin, protocolTreasury, _defaultSplit(), SPLIT_DELAY);
        bytes32 role = twin.ATTRIBUTOR_ROLE();
        vm.startPrank(admin);
        for (uint256 i = 0; i < 5; i++) {
            twin.grantRole(role, attributors[i]);
        }
        vm.stopPrank();
        AttributionSettlement.Attestation memory a = _fullAttestation(modelId, keccak256("root"));
        bytes[] memory sigs = _attest(a, QUORUM); // signed for `settlement`
        address recovered = ECDSA.recover(twin.attestationDigest(a), sigs[0]);
        vm.expectRevert(abi.encodeWithSelector(AttributionSettlement.NotAttributor.selector, recovered));
        twin.settle(a, sigs);
    }

    function test_settle_revertsOnFeeMismatch() public {
        AttributionSettlement.Attestation memory a = _fullAttestation(modelId, keccak256("root"));
        a.feeTotal += 1;
        _expectSettleRevert(
            a, _attest(a, QUORUM), abi.encodeWithSelector(AttributionSettlement.FeeMismatch.selector, FEES + 1, FEES)
        );
    }

    function test_settle_revertsWhenFeeTotalIsBelowCarriedDust() public {
        _settle(_attestation(modelId, 1, 10 ether, 69 ether, keccak256("r1"))); // carries 1 ether
        _fees(modelId, 5 ether);
        AttributionSettlement.Attestation memory a = _fullAttestation(modelId, keccak256("r2"));
        a.feeTotal = 1 ether - 1; // claims to spend less than the dust alone
        _expectSettleRevert(
            a,
            _attest(a, QUORUM),
            abi.encodeWithSelector(AttributionSettlement.FeeMismatch.selector, 1 ether - 1, 1 ether)
        );
    }

    function test_settle_revertsOnSplitMismatch() public {
        AttributionSettlement.Attestation memory a = _fullAttestation(modelId, keccak256("root"));
        a.protocolAmount -= 1;
        _expectSettleRevert(
            a,
            _attest(a, QUORUM),
            abi.encodeWithSelector(AttributionSettlement.SplitMismatch.selector, "protocol", 5 ether - 1, 5 ether)
        );
        a = _fullAttestation(modelId, keccak256("root"));
        a.ownerAmount += 1;
        _expectSettleRevert(
            a,
            _attest(a, QUORUM),
            abi.encodeWithSelector(AttributionSettlement.SplitMismatch.selector, "owner", 15 ether + 1, 15 ether)
        );
        a = _fullAttestation(modelId, keccak256("root"));
        a.curatorsTotal += 1;
        _expectSettleRevert(
            a,
            _attest(a, QUORUM),
            abi.encodeWithSelector(AttributionSettlement.SplitMismatch.selector, "curators", 10 ether + 1, 10 ether)
        );
        // Claims can never take the contributors' budget above its share, whatever the root.
        a = _fullAttestation(modelId, keccak256("root"));
        a.curatorsTotal -= 1;
        a.contributorsTotal += 1;
        _expectSettleRevert(
            a,
            _attest(a, QUORUM),
            abi.encodeWithSelector(
                AttributionSettlement.SplitMismatch.selector, "contributors", 70 ether + 1, 70 ether
            )
        );
    }

    function test_settle_revertsForSeqBeyondCharges() public {
        AttributionSettlement.Attestation memory a = _fullAttestation(modelId, keccak256("root"));
        a.uptoSeq = 2;
        _expectSettleRevert(a, _attest(a, QUORUM), abi.encodeWithSelector(UsageEscrow.BadSeq.selector, 2, 0, 1));
    }

    function test_settle_revertsWhenPaused() public {
        AttributionSettlement.Attestation memory a = _fullAttestation(modelId, keccak256("root"));
        bytes[] memory sigs = _attest(a, QUORUM);
        vm.prank(admin);
        settlement.pause();
        _expectSettleRevert(a, sigs, abi.encodeWithSelector(Pausable.EnforcedPause.selector));
        vm.startPrank(admin);
        settlement.unpause();
        escrow.pause(); // the escrow cannot release either
        vm.stopPrank();
        _expectSettleRevert(a, sigs, abi.encodeWithSelector(Pausable.EnforcedPause.selector));
        vm.prank(admin);
        escrow.unpause();
        settlement.settle(a, sigs);
    }

    // ---------------------------------------------------------------- claim

    function test_claim_paysAccount() public {
        (uint64 epoch, bytes32[] memory tree, uint256 aliceAmount, uint256 bobAmount) = _settleAll(modelId);
        uint256 before = token.balanceOf(alice);
        AttributionSettlement.Claim memory c = _claimOf(modelId, epoch, alice, aliceAmount, tree);
        vm.expectEmit(true, true, true, true, address(settlement));
        emit AttributionSettlement.Claimed(modelId, epoch, alice, aliceAmount);
        vm.prank(stranger); // anyone may push a claim; the tokens still go to the account
        settlement.claim(c);
        assertEq(token.balanceOf(alice), before + aliceAmount, "alice paid");
        assertTrue(settlement.isClaimed(modelId, epoch, c.index), "flag");
        assertFalse(settlement.isClaimed(modelId, epoch, 1 - c.index), "bob's flag");
        (, uint96 unclaimed) = settlement.epochs(modelId, epoch);
        assertEq(unclaimed, bobAmount, "what bob has not claimed yet");

        settlement.claim(_claimOf(modelId, epoch, bob, bobAmount, tree));
        assertEq(token.balanceOf(address(settlement)), 0, "fully claimed");
    }

    function test_claim_revertsForUnknownEpoch() public {
        (bytes32[] memory tree, uint256 aliceAmount,) = _tree2(80 ether);
        AttributionSettlement.Claim memory c = _claimOf(modelId, 1, alice, aliceAmount, tree);
        vm.expectRevert(abi.encodeWithSelector(AttributionSettlement.UnknownEpoch.selector, modelId, 1));
        settlement.claim(c);
    }

    function test_claim_revertsWhenClaimedTwice() public {
        (uint64 epoch, bytes32[] memory tree, uint256 aliceAmount,) = _settleAll(modelId);
        AttributionSettlement.Claim memory c = _claimOf(modelId, epoch, alice, aliceAmount, tree);
        settlement.claim(c);
        vm.expectRevert(abi.encodeWithSelector(AttributionSettlement.AlreadyClaimed.selector, modelId, epoch, c.index));
        settlement.claim(c);
    }

    function test_claim_revertsForAnotherLeafIndex() public {
        (uint64 epoch, bytes32[] memory tree, uint256 aliceAmount,) = _settleAll(modelId);
        AttributionSettlement.Claim memory c = _claimOf(modelId, epoch, alice, aliceAmount, tree);
        c.index = 1 - c.index; // the proof is for (index, account, amount); another index is another leaf
        vm.expectRevert(abi.encodeWithSelector(AttributionSettlement.InvalidProof.selector, modelId, epoch, alice));
        settlement.claim(c);
        c.index += 256; // same bit in another bitmap word
        vm.expectRevert(abi.encodeWithSelector(AttributionSettlement.InvalidProof.selector, modelId, epoch, alice));
        settlement.claim(c);
    }

    function test_claim_revertsForInvalidProof() public {
        (uint64 epoch, bytes32[] memory tree, uint256 aliceAmount, uint256 bobAmount) = _settleAll(modelId);
        AttributionSettlement.Claim memory c = _claimOf(modelId, epoch, alice, aliceAmount, tree);
        c.amount += 1;
        vm.expectRevert(abi.encodeWithSelector(AttributionSettlement.InvalidProof.selector, modelId, epoch, alice));
        settlement.claim(c);

        c = _claimOf(modelId, epoch, bob, bobAmount, tree);
        c.account = stranger; // someone else's leaf
        vm.expectRevert(abi.encodeWithSelector(AttributionSettlement.InvalidProof.selector, modelId, epoch, stranger));
        settlement.claim(c);

        c = _claimOf(modelId, epoch, alice, aliceAmount, tree);
        c.proof = new bytes32[](0);
        vm.expectRevert(abi.encodeWithSelector(AttributionSettlement.InvalidProof.selector, modelId, epoch, alice));
        settlement.claim(c);
    }

    function test_claim_neverExceedsCap() public {
        // A quorum signs a root whose leaves add up to more than the signed totals.
        address[] memory accounts = new address[](2);
        accounts[0] = alice;
        accounts[1] = bob;
        uint256[] memory amounts = new uint256[](2);
        amounts[0] = 50 ether;
        amounts[1] = 50 ether;
        bytes32[] memory tree = Merkle.build(accounts, amounts);
        _settle(_fullAttestation(modelId, tree[0]));

        settlement.claim(_claimOf(modelId, 1, alice, 50 ether, tree));
        AttributionSettlement.Claim memory c = _claimOf(modelId, 1, bob, 50 ether, tree);
        vm.expectRevert(abi.encodeWithSelector(AttributionSettlement.ClaimCapExceeded.selector, modelId, 1));
        settlement.claim(c);
        assertEq(token.balanceOf(address(settlement)), 30 ether, "the rest of the cap stays");
    }

    function test_claim_revertsWhenPaused() public {
        (uint64 epoch, bytes32[] memory tree, uint256 aliceAmount,) = _settleAll(modelId);
        AttributionSettlement.Claim memory c = _claimOf(modelId, epoch, alice, aliceAmount, tree);
        AttributionSettlement.Claim[] memory cs = new AttributionSettlement.Claim[](1);
        cs[0] = c;
        vm.prank(admin);
        settlement.pause();
        vm.expectRevert(Pausable.EnforcedPause.selector);
        settlement.claim(c);
        vm.expectRevert(Pausable.EnforcedPause.selector);
        settlement.claimMany(cs);
        vm.prank(admin);
        settlement.unpause();
        settlement.claim(c);
    }

    // ---------------------------------------------------------------- claimMany

    function test_claimMany_acrossEpochsAndModels() public {
        (uint64 e1, bytes32[] memory t1, uint256 a1,) = _settleAll(modelId);
        _fees(modelId, 10 ether);
        (uint64 e2, bytes32[] memory t2, uint256 a2,) = _settleAll(modelId);
        uint256 other = _registerModel(builder, "provenant/demo-2", datanetId, _ids(bobContribution));
        _fees(other, 30 ether);
        (uint64 e3, bytes32[] memory t3, uint256 a3,) = _settleAll(other);

        AttributionSettlement.Claim[] memory cs = new AttributionSettlement.Claim[](3);
        cs[0] = _claimOf(modelId, e1, alice, a1, t1);
        cs[1] = _claimOf(modelId, e2, alice, a2, t2);
        cs[2] = _claimOf(other, e3, alice, a3, t3);
        uint256 before = token.balanceOf(alice);
        vm.expectEmit(true, true, true, true, address(settlement));
        emit AttributionSettlement.Claimed(modelId, e1, alice, a1);
        vm.expectEmit(true, true, true, true, address(settlement));
        emit AttributionSettlement.Claimed(modelId, e2, alice, a2);
        vm.expectEmit(true, true, true, true, address(settlement));
        emit AttributionSettlement.Claimed(other, e3, alice, a3);
        vm.expectEmit(true, true, false, true, address(token));
        emit IERC20.Transfer(address(settlement), alice, a1 + a2 + a3); // one transfer
        settlement.claimMany(cs);
        assertEq(token.balanceOf(alice), before + a1 + a2 + a3, "paid");
        assertTrue(settlement.isClaimed(other, e3, cs[2].index), "flag");
    }

    function test_claimMany_emptyIsNoop() public {
        uint256 held = token.balanceOf(address(settlement));
        settlement.claimMany(new AttributionSettlement.Claim[](0));
        assertEq(token.balanceOf(address(settlement)), held, "nothing moved");
    }

    function test_claimMany_revertsForMixedAccountsOrDuplicates() public {
        (uint64 epoch, bytes32[] memory tree, uint256 aliceAmount, uint256 bobAmount) = _settleAll(modelId);
        AttributionSettlement.Claim[] memory cs = new AttributionSettlement.Claim[](2);
        cs[0] = _claimOf(modelId, epoch, alice, aliceAmount, tree);
        cs[1] = _claimOf(modelId, epoch, bob, bobAmount, tree);
        vm.expectRevert(abi.encodeWithSelector(AttributionSettlement.MixedAccounts.selector, 1, bob, alice));
        settlement.claimMany(cs);

        cs[1] = cs[0];
        vm.expectRevert(
            abi.encodeWithSelector(AttributionSettlement.AlreadyClaimed.selector, modelId, epoch, cs[0].index)
        );
        settlement.claimMany(cs);
    }

    // ---------------------------------------------------------------- merkle interoperability

    /// @dev Vector produced by `StandardMerkleTree.of(values, ["uint256", "address", "uint256"])`
    /// of npm openzeppelin merkle-tree 1.0.8, values (i, accounts[i], amounts[i]).
    function test_merkle_matchesJavaScriptLibrary() public {
        address[] memory accounts = new address[](5);
        uint256[] memory amounts = new uint256[](5);
        accounts[0] = 0x1111111111111111111111111111111111111111;
        accounts[1] = 0x2222222222222222222222222222222222222222;
        accounts[2] = 0x3333333333333333333333333333333333333333;
        accounts[3] = 0x4444444444444444444444444444444444444444;
        accounts[4] = 0x5555555555555555555555555555555555555555;
        amounts[0] = 5 ether;
        amounts[1] = 2.5 ether;
        amounts[2] = 1;
        amounts[3] = 1234567890;
        amounts[4] = 42;
        bytes32 jsRoot = 0x2759dfa5aa29f9617847bbf2897ef0c8074bb7a615851cd387812258219f4f3d;
        bytes32[] memory tree = Merkle.build(accounts, amounts);
        assertEq(tree[0], jsRoot, "root");

        bytes32[] memory p = Merkle.proofAt(tree, 3, accounts[3], amounts[3]);
        assertEq(p.length, 2, "proof length");
        assertEq(p[0], 0x864aeed7b0b2280614a993529f60f945f555003ed8815ba2510661db9138c4e0, "p0");
        assertEq(p[1], 0x88e65534e1f4ccd32fb56dce45aed520fef211a40c68c057c64f86382a339a18, "p1");
        p = Merkle.proofAt(tree, 0, accounts[0], amounts[0]);
        assertEq(p.length, 3, "proof length 0");
        assertEq(p[0], 0x191d0f7d65eab0fa6c201d27df14a838bda49373c2ccb0fa0263334fcebd4d0e, "q0");
        assertEq(p[1], 0xb073825d500211f87b4403e77622a9c288e297f202335a9bfb1588e11ae8ee8b, "q1");
        assertEq(p[2], 0x298366b8b65dd0cfbb1db5f6cef4157139e344f53ff45262771f09db300417e5, "q2");

        // The contract accepts the JavaScript library's proofs.
        AttributionSettlement.Attestation memory a = _attestation(modelId, 1, 10 ether, 70 ether, jsRoot);
        _settle(a);
        for (uint256 i = 0; i < 5; i++) {
            settlement.claim(_claimOf(modelId, 1, accounts[i], amounts[i], tree));
            assertEq(token.balanceOf(accounts[i]), amounts[i], "claimed");
        }
    }

    // ---------------------------------------------------------------- pause

    function test_pause_onlyPauser() public {
        bytes32 role = settlement.PAUSER_ROLE();
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, alice, role));
        settlement.pause();
        vm.prank(admin);
        settlement.pause();
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, alice, role));
        settlement.unpause();
        vm.prank(admin);
        settlement.unpause();
        assertFalse(settlement.paused(), "unpaused");
    }
}
