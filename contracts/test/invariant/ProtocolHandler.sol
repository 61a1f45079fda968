// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {CheatCodes} from "../utils/Test.sol";
import {Merkle} from "../utils/Merkle.sol";
import {Strings} from "@openzeppelin/contracts/utils/Strings.sol";
import {ProvenantToken} from "../../src/ProvenantToken.sol";
import {DatanetRegistry} from "../../src/DatanetRegistry.sol";
import {ModelRegistry} from "../../src/ModelRegistry.sol";
import {UsageEscrow} from "../../src/UsageEscrow.sol";
import {AttributionSettlement} from "../../src/AttributionSettlement.sol";

/// @notice Drives the whole protocol with random but mostly well-formed actions (contributions
/// and verdicts, deposits, voucher charges, fee payments, withdrawals, quorum settlements,
/// claims, model registrations, pauses, quorum and attributor changes), plus attacks that must
/// always fail (replayed / expired / wrong-model / wrong-epoch / wrong-chain / wrong-contract /
/// tampered / high-s / below-quorum settlements, double and inflated claims, lineages with
/// unapproved contributions). Every protocol call is wrapped in try/catch so the ghost state
/// records exactly what succeeded.
contract ProtocolHandler is CheatCodes {
    struct System {
        ProvenantToken token;
        DatanetRegistry datanets;
        ModelRegistry models;
        UsageEscrow escrow;
        AttributionSettlement settlement;
        AttributionSettlement twin;
        address admin;
        address curator;
        address builder;
        address payer;
        uint256 serverPk;
        uint256[5] attributorPks;
        uint256[3] consumerPks;
        address[3] contributors;
        address[4] payees;
        uint256[2] datanetIds;
        uint256[2] modelIds;
    }

    struct EpochGhost {
        bytes32 root;
        uint256 cap;
        uint256 claimed;
        uint256[4] alloc;
    }

    uint256 internal constant SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;
    uint256 internal constant OUTSIDER_PK = 0x0BAD0BAD;
    string internal constant RESULTS_CID = "bafy-results";

    ProvenantToken public token;
    DatanetRegistry public datanets;
    ModelRegistry public models;
    UsageEscrow public escrow;
    AttributionSettlement public settlement;
    AttributionSettlement internal twin;
    address internal admin;
    address internal curator;
    address internal builder;
    address internal payer;
    uint256 internal serverPk;
    uint256[5] internal attributorPks;
    uint256[3] internal consumerPks;
    address[3] internal consumers;
    address[3] internal contributors;
    address[4] internal payees;
    uint256[2] internal datanetIds;
    uint256[2] internal modelIds;

    // ---------------------------------------------------------------- ghost state

    uint256 public ghostStakesHeld;
    uint256 public ghostDeposited;
    uint256 public ghostWithdrawn;
    uint256 public ghostCharged;
    uint256 public ghostPaid;
    uint256 public ghostReleased;
    uint256 public ghostCapsSettled;
    uint256 public ghostClaimedTotal;
    mapping(uint256 modelId => uint256) public ghostDust;
    mapping(uint256 modelId => uint64) public ghostEpochCount;
    mapping(uint256 modelId => mapping(uint64 epoch => EpochGhost)) internal _epochs;
    mapping(uint256 modelId => mapping(uint64 epoch => mapping(uint256 payee => uint256))) public ghostClaimedBy;
    mapping(uint256 modelId => bytes) internal _lastSettleCall;

    uint256 public ghostSettleCount;
    uint256 public ghostClaimCount;
    uint256 public ghostDefectAttempts;
    uint256 public ghostDoubleClaims;
    uint256 public ghostInflatedClaims;
    uint256 public ghostBadSettles;
    uint256 public ghostBelowQuorumSettles;
    uint256 public ghostBadRegistrations;
    uint256 public ghostPausedMoves;
    uint256 public ghostVoucherReplays;
    mapping(address consumer => mapping(uint256 modelId => uint256)) public ghostSpent;
    mapping(uint256 modelId => uint256) public ghostPaidTo;
    mapping(uint256 modelId => bytes) internal _lastChargeCall;
    uint256[] internal _registered;
    mapping(uint256 modelId => uint256[]) internal _lineage;

    mapping(string action => uint256) public calls;
    uint256 internal _nonce;

    constructor(System memory s) {
        token = s.token;
        datanets = s.datanets;
        models = s.models;
        escrow = s.escrow;
        settlement = s.settlement;
        twin = s.twin;
        admin = s.admin;
        curator = s.curator;
        builder = s.builder;
        payer = s.payer;
        serverPk = s.serverPk;
        attributorPks = s.attributorPks;
        consumerPks = s.consumerPks;
        for (uint256 i = 0; i < 3; i++) {
            consumers[i] = vm.addr(s.consumerPks[i]);
        }
        contributors = s.contributors;
        payees = s.payees;
        datanetIds = s.datanetIds;
        modelIds = s.modelIds;
    }

    struct Snapshot {
        bool[3] paused;
        uint256[3] held;
        bytes32[3] books;
    }

    /// @dev Whatever an action does, a contract that was paused before it holds the same balance
    /// and the same books (stakes and verdicts; deposits, fees and sequence numbers; epochs) after.
    modifier tracked(string memory action) {
        Snapshot memory snap = _snapshot(action);
        _;
        _checkPaused(snap);
    }

    function _snapshot(string memory action) internal returns (Snapshot memory snap) {
        calls[action]++;
        snap.paused = [datanets.paused(), escrow.paused(), settlement.paused()];
        snap.held = _holdings();
        snap.books = _books();
    }

    function _checkPaused(Snapshot memory snap) internal {
        uint256[3] memory held = _holdings();
        bytes32[3] memory books = _books();
        for (uint256 i = 0; i < 3; i++) {
            if (snap.paused[i] && (held[i] != snap.held[i] || books[i] != snap.books[i])) ghostPausedMoves++;
        }
    }

    function _books() internal view returns (bytes32[3] memory b) {
        b[0] = keccak256(
            abi.encode(
                datanets.contributionCount(),
                datanets.datanetCount(),
                datanets.getDatanet(datanetIds[0]).version,
                datanets.getDatanet(datanetIds[1]).version
            )
        );
        bytes memory escrowBooks;
        bytes memory settlementBooks;
        for (uint256 k = 0; k < 2; k++) {
            uint256 m = modelIds[k];
            escrowBooks = bytes.concat(
                escrowBooks,
                abi.encode(escrow.chargeSeq(m), escrow.settledSeq(m), escrow.unsettledFees(m)),
                abi.encode(escrow.depositOf(consumers[0], m), escrow.depositOf(consumers[1], m), escrow.depositOf(consumers[2], m))
            );
            settlementBooks = bytes.concat(settlementBooks, abi.encode(settlement.lastEpoch(m), settlement.carriedDust(m)));
        }
        b[1] = keccak256(escrowBooks);
        b[2] = keccak256(bytes.concat(settlementBooks, abi.encode(ghostClaimCount)));
    }

    function _holdings() internal view returns (uint256[3] memory h) {
        h[0] = token.balanceOf(address(datanets));
        h[1] = token.balanceOf(address(escrow));
        h[2] = token.balanceOf(address(settlement));
    }

    // ================================================================ datanets

    function contribute(uint256 actorSeed, uint256 dnSeed) external tracked("contribute") {
        address who = contributors[actorSeed % 3];
        uint256 dn = datanetIds[dnSeed % 2];
        uint256 stake = datanets.getDatanet(dn).stake;
        bytes32 contentHash = keccak256(abi.encode("content", ++_nonce));
        vm.prank(who);
        try datanets.contribute(dn, contentHash, "bafy-contribution", 2048, 16) {
            ghostStakesHeld += stake;
        } catch {}
    }

    function approve(uint256 seed, uint256 countSeed) external tracked("approve") {
        uint256 dn = datanetIds[seed % 2];
        uint256[] memory pending = _pendingIn(dn, seed >> 8, bound(countSeed, 1, 8));
        if (pending.length == 0) return;
        uint256 stakes = 0;
        for (uint256 i = 0; i < pending.length; i++) {
            stakes += datanets.getContribution(pending[i]).stake;
        }
        vm.prank(curator);
        try datanets.approve(dn, pending) {
            ghostStakesHeld -= stakes;
        } catch {}
    }

    function reject(uint256 seed, uint8 reason) external tracked("reject") {
        uint256 id = _someContribution(seed);
        if (id == 0) return;
        uint256 stake = datanets.getContribution(id).stake;
        vm.prank(curator);
        try datanets.reject(id, reason) {
            ghostStakesHeld -= stake;
        } catch {}
    }

    function withdrawContribution(uint256 seed) external tracked("withdrawContribution") {
        uint256 id = _someContribution(seed);
        if (id == 0) return;
        DatanetRegistry.Contribution memory c = datanets.getContribution(id);
        vm.prank(c.contributor);
        try datanets.withdraw(id) {
            ghostStakesHeld -= c.stake;
        } catch {}
    }

    /// @dev Pending contributions of `dn`, at most `max`, scanning from a random offset.
    function _pendingIn(uint256 dn, uint256 offset, uint256 max) internal view returns (uint256[] memory ids) {
        uint256 count = datanets.contributionCount();
        uint256[] memory found = new uint256[](max);
        uint256 n = 0;
        for (uint256 k = 0; k < count && n < max; k++) {
            uint256 id = 1 + (offset + k) % count;
            (uint256 d, DatanetRegistry.Status st) = datanets.datanetAndStatusOf(id);
            if (d == dn && st == DatanetRegistry.Status.Pending) found[n++] = id;
        }
        ids = new uint256[](n);
        for (uint256 i = 0; i < n; i++) {
            ids[i] = found[i];
        }
        // Ascending order is not required by `approve`; keep it anyway for readable traces.
        for (uint256 i = 1; i < n; i++) {
            for (uint256 j = i; j > 0 && ids[j - 1] > ids[j]; j--) {
                (ids[j - 1], ids[j]) = (ids[j], ids[j - 1]);
            }
        }
    }

    /// @dev Mostly a pending contribution (so verdicts succeed), sometimes any (so they fail).
    function _someContribution(uint256 seed) internal view returns (uint256) {
        uint256 count = datanets.contributionCount();
        if (count == 0) return 0;
        if (seed % 4 != 0) {
            uint256[] memory p = _pendingIn(datanetIds[(seed >> 4) % 2], seed >> 8, 1);
            if (p.length == 1) return p[0];
        }
        return 1 + (seed >> 8) % count;
    }

    // ================================================================ models

    function registerModel(uint256 seed, uint256 sizeSeed) external tracked("registerModel") {
        uint256 count = datanets.contributionCount();
        uint256 n = bound(sizeSeed, 1, 3);
        if (count < n) return;
        uint256[] memory ids = new uint256[](n);
        uint256 start = 1 + seed % (count - n + 1);
        uint256 id = start;
        for (uint256 i = 0; i < n; i++) {
            ids[i] = id;
            id += 1 + (seed >> (8 * (i + 1))) % 2; // ascending, sometimes skipping one
            if (id > count) id = count; // duplicates make it fail, which is fine
        }
        bool allApproved = true;
        for (uint256 i = 0; i < n; i++) {
            allApproved = allApproved && datanets.statusOf(ids[i]) == DatanetRegistry.Status.Approved;
        }
        ModelRegistry.ModelSpec memory spec = _spec(ids);
        vm.prank(builder);
        try models.registerModel(spec) returns (uint256 modelId) {
            if (!allApproved) ghostBadRegistrations++;
            _registered.push(modelId);
            _lineage[modelId] = ids;
        } catch {}
    }

    function _spec(uint256[] memory ids) internal returns (ModelRegistry.ModelSpec memory) {
        uint256[] memory dns = new uint256[](2);
        dns[0] = datanetIds[0];
        dns[1] = datanetIds[1];
        uint256 nonce = ++_nonce;
        return ModelRegistry.ModelSpec({
            name: string.concat("invariant-model-", Strings.toString(nonce)),
            baseModel: "base",
            datanetIds: dns,
            contributionIds: ids,
            lineageRoot: keccak256(abi.encode("lineage", nonce)),
            configHash: bytes32(nonce),
            adapterCid: "bafy-adapter",
            adapterHash: keccak256(abi.encode("adapter", nonce)),
            manifestCid: "bafy-manifest",
            parentId: 0,
            pricePerCall: 1,
            server: vm.addr(serverPk)
        });
    }

    // ================================================================ escrow

    function deposit(uint256 consumerSeed, uint256 modelSeed, uint256 amount) external tracked("deposit") {
        address who = consumers[consumerSeed % 3];
        uint256 m = modelIds[modelSeed % 2];
        uint256 a = bound(amount, 1, 1_000 ether);
        vm.prank(who);
        try escrow.deposit(m, a) {
            ghostDeposited += a;
        } catch {}
    }

    function charge(uint256 consumerSeed, uint256 modelSeed, uint256 amount, bool batch) external tracked("charge") {
        uint256 m = modelIds[modelSeed % 2];
        uint256 n = batch ? 2 : 1;
        UsageEscrow.Voucher[] memory vs = new UsageEscrow.Voucher[](n);
        bytes[] memory sigs = new bytes[](n);
        uint256 total = 0;
        for (uint256 i = 0; i < n; i++) {
            uint256 delta;
            (vs[i], sigs[i], delta) = _voucherFor((consumerSeed + i) % 3, m, amount >> (8 * i));
            total += delta;
        }
        vm.prank(vm.addr(serverPk));
        try escrow.charge(m, vs, sigs) {
            ghostCharged += total;
            for (uint256 i = 0; i < n; i++) {
                ghostSpent[vs[i].consumer][m] = vs[i].cumulativeAmount;
            }
            _lastChargeCall[m] = abi.encodeCall(escrow.charge, (m, vs, sigs));
        } catch {}
    }

    /// @dev The server submits the model's last charged batch again: it must never charge.
    function replayCharge(uint256 modelSeed) external tracked("replayCharge") {
        uint256 m = modelIds[modelSeed % 2];
        bytes memory data = _lastChargeCall[m];
        if (data.length == 0) return;
        vm.prank(vm.addr(serverPk));
        (bool ok,) = address(escrow).call(data);
        if (ok) ghostVoucherReplays++;
    }

    /// @dev A signed voucher of consumer `c` for `delta` more than it has spent: mostly
    /// affordable (topping the deposit up when low), sometimes one wei beyond the deposit.
    function _voucherFor(uint256 c, uint256 m, uint256 seed)
        internal
        returns (UsageEscrow.Voucher memory v, bytes memory sig, uint256 delta)
    {
        address who = consumers[c];
        uint256 available = escrow.depositOf(who, m);
        if (available < 1 ether && seed % 16 != 0) {
            vm.prank(who);
            try escrow.deposit(m, 10 ether) {
                ghostDeposited += 10 ether;
                available += 10 ether;
            } catch {}
        }
        delta = seed % 16 == 0 ? available + 1 : bound(seed, 1, available == 0 ? 1 : available);
        v = UsageEscrow.Voucher(who, m, escrow.spentOf(who, m) + delta, block.timestamp + 1 hours);
        sig = _sig(consumerPks[c], escrow.voucherDigest(v));
    }

    function payFees(uint256 modelSeed, uint256 amount) external tracked("payFees") {
        uint256 m = modelIds[modelSeed % 2];
        uint256 a = bound(amount, 1, 100 ether);
        vm.prank(payer);
        try escrow.payFees(m, a) {
            ghostPaid += a;
            ghostPaidTo[m] += a;
        } catch {}
    }

    function withdrawDeposit(uint256 consumerSeed, uint256 modelSeed, uint256 amount) external tracked("withdrawDeposit") {
        address who = consumers[consumerSeed % 3];
        uint256 m = modelIds[modelSeed % 2];
        if (escrow.withdrawableAt(who, m) == 0) {
            vm.prank(who);
            try escrow.requestWithdrawal(m) {} catch {}
        }
        vm.warp(block.timestamp + escrow.withdrawDelay());
        uint256 available = escrow.depositOf(who, m);
        uint256 a = bound(amount, 1, available + 1);
        vm.prank(who);
        try escrow.withdraw(m, a) {
            ghostWithdrawn += a;
        } catch {}
    }

    // ================================================================ settlement

    struct SettlePlan {
        AttributionSettlement.Attestation a;
        uint256[4] alloc;
        bytes[] sigs;
        bool enough;
        uint256 released;
        uint256 previousDust;
    }

    function settle(uint256 modelSeed, uint256 seqSeed, uint256 cutSeed, uint256 allocSeed)
        external
        tracked("settle")
    {
        uint256 m = modelIds[modelSeed % 2];
        if (escrow.chargeSeq(m) == escrow.settledSeq(m)) {
            // Nothing charged since the last epoch: route some fees in first.
            uint256 amount = bound(cutSeed >> 128, 1, 50 ether);
            vm.prank(payer);
            try escrow.payFees(m, amount) {
                ghostPaid += amount;
                ghostPaidTo[m] += amount;
            } catch {
                return;
            }
        }
        SettlePlan memory plan = _plan(m, seqSeed, cutSeed, allocSeed);
        try settlement.settle(plan.a, plan.sigs) {
            if (!plan.enough) ghostBelowQuorumSettles++;
            ghostSettleCount++;
            _recordSettlement(plan.a, plan.alloc, plan.released, plan.previousDust);
            _lastSettleCall[m] = abi.encodeCall(AttributionSettlement.settle, (plan.a, plan.sigs));
        } catch {}
    }

    function _plan(uint256 m, uint256 seqSeed, uint256 cutSeed, uint256 allocSeed)
        internal
        view
        returns (SettlePlan memory plan)
    {
        uint64 settled = escrow.settledSeq(m);
        // forge-lint: disable-next-line(unsafe-typecast)
        uint64 upto = settled + 1 + uint64(seqSeed % (escrow.chargeSeq(m) - settled)); // < chargeSeq, a uint64
        plan.a = _attestation(m, upto, cutSeed);
        plan.alloc = _allocations(plan.a.curatorsTotal + plan.a.contributorsTotal, allocSeed);
        plan.a.payoutRoot = Merkle.root(_payees(), _toMemory(plan.alloc));
        uint256[] memory signers;
        (signers, plan.enough) = _signers(seqSeed >> 64);
        plan.sigs = _signAll(settlement.attestationDigest(plan.a), signers);
        plan.released = escrow.cumulativeFeesAt(m, upto) - escrow.cumulativeFeesAt(m, settled);
        plan.previousDust = settlement.carriedDust(m);
    }

    function _recordSettlement(
        AttributionSettlement.Attestation memory a,
        uint256[4] memory alloc,
        uint256 released,
        uint256 previousDust
    ) internal {
        uint256 cap = a.curatorsTotal + a.contributorsTotal;
        ghostEpochCount[a.modelId] = a.epoch;
        EpochGhost storage e = _epochs[a.modelId][a.epoch];
        e.root = a.payoutRoot;
        e.cap = cap;
        e.alloc = alloc;
        ghostReleased += released;
        ghostCapsSettled += cap;
        ghostDust[a.modelId] = released + previousDust - a.protocolAmount - a.ownerAmount - cap;
    }

    /// @dev A well-formed attestation of the next epoch of `m` up to `upto` (allocations cut at random).
    function _attestation(uint256 m, uint64 upto, uint256 cutSeed)
        internal
        view
        returns (AttributionSettlement.Attestation memory a)
    {
        uint256 available =
            escrow.cumulativeFeesAt(m, upto) - escrow.cumulativeFeesAt(m, escrow.settledSeq(m)) + settlement.carriedDust(m);
        (uint16 pb, uint16 ob, uint16 cbps,) = settlement.split();
        uint256 p = (available * pb) / 10_000;
        uint256 o = (available * ob) / 10_000;
        uint256 cb = (available * cbps) / 10_000;
        uint256 kb = available - p - o - cb;
        a = AttributionSettlement.Attestation({
            modelId: m,
            epoch: settlement.lastEpoch(m) + 1,
            uptoSeq: upto,
            feeTotal: available,
            protocolAmount: p,
            ownerAmount: o,
            curatorsTotal: cutSeed % 3 == 0 ? cb : (cb * (cutSeed % 101)) / 100,
            contributorsTotal: (cutSeed >> 8) % 3 == 0 ? kb : (kb * ((cutSeed >> 8) % 101)) / 100,
            payoutRoot: bytes32(0),
            resultsCid: RESULTS_CID,
            deadline: block.timestamp + 1 hours
        });
    }

    /// @dev Four payee allocations summing to at most `cap`, or (one time in four) to more than
    /// `cap`: a quorum may sign a root that promises more than the epoch holds.
    function _allocations(uint256 cap, uint256 seed) internal pure returns (uint256[4] memory alloc) {
        uint256 total = seed % 4 == 0 ? cap + cap / 2 + 1 : cap - ((seed >> 8) % (cap / 10 + 1));
        uint256 left = total;
        for (uint256 i = 0; i < 3; i++) {
            alloc[i] = (left * ((seed >> (16 + 8 * i)) % 256)) / 255;
            left -= alloc[i];
        }
        alloc[3] = left;
    }

    /// @dev A random subset, in ascending address order, of the registered attributors; at
    /// least a quorum when that many are registered (`enough` says whether it is).
    function _signers(uint256 seed) internal view returns (uint256[] memory pks, bool enough) {
        bytes32 role = settlement.ATTRIBUTOR_ROLE();
        uint256 q = settlement.quorum();
        bool[5] memory pick;
        uint256 picked = 0;
        for (uint256 i = 0; i < 5; i++) {
            if (!settlement.hasRole(role, vm.addr(attributorPks[i]))) continue;
            if ((seed >> i) & 1 == 1) {
                pick[i] = true;
                picked++;
            }
        }
        for (uint256 i = 0; i < 5 && picked < q; i++) {
            if (!pick[i] && settlement.hasRole(role, vm.addr(attributorPks[i]))) {
                pick[i] = true;
                picked++;
            }
        }
        enough = picked >= q;
        pks = new uint256[](picked);
        uint256 n = 0;
        for (uint256 i = 0; i < 5; i++) {
            if (pick[i]) pks[n++] = attributorPks[i];
        }
    }

    function claim(uint256 modelSeed, uint256 epochSeed, uint256 payeeSeed) external tracked("claim") {
        uint256 m = modelIds[modelSeed % 2];
        uint64 count = ghostEpochCount[m];
        if (count == 0) return;
        // forge-lint: disable-next-line(unsafe-typecast)
        uint64 e = 1 + uint64(epochSeed % count); // < count, a uint64
        uint256 p = payeeSeed % 4;
        AttributionSettlement.Claim memory c = _claimFor(m, e, p);
        bool wasClaimed = settlement.isClaimed(m, e, p);
        try settlement.claim(c) {
            if (wasClaimed) ghostDoubleClaims++;
            ghostClaimCount++;
            _recordClaim(m, e, p);
            // A second try must always fail.
            try settlement.claim(c) {
                ghostDoubleClaims++;
            } catch {}
        } catch {}

        // An inflated amount with the genuine proof must always fail.
        c.amount += 1 + (payeeSeed >> 8) % 1 ether;
        try settlement.claim(c) {
            ghostInflatedClaims++;
        } catch {}
    }

    function claimMany(uint256 payeeSeed, uint256 maskSeed) external tracked("claimMany") {
        uint256 p = payeeSeed % 4;
        AttributionSettlement.Claim[] memory all = new AttributionSettlement.Claim[](10);
        uint256 n = 0;
        bool anyClaimed = false;
        for (uint256 k = 0; k < 2 && n < 10; k++) {
            uint256 m = modelIds[k];
            for (uint64 e = 1; e <= ghostEpochCount[m] && n < 10; e++) {
                if ((maskSeed >> (n % 256)) & 1 == 0) continue;
                all[n++] = _claimFor(m, e, p);
                anyClaimed = anyClaimed || settlement.isClaimed(m, e, p);
            }
        }
        AttributionSettlement.Claim[] memory cs = new AttributionSettlement.Claim[](n);
        for (uint256 i = 0; i < n; i++) {
            cs[i] = all[i];
        }
        try settlement.claimMany(cs) {
            if (anyClaimed) ghostDoubleClaims++;
            ghostClaimCount += n;
            for (uint256 i = 0; i < n; i++) {
                _recordClaim(cs[i].modelId, cs[i].epoch, p);
            }
        } catch {}
    }

    function _claimFor(uint256 m, uint64 e, uint256 p) internal view returns (AttributionSettlement.Claim memory) {
        uint256[4] memory alloc = _epochs[m][e].alloc;
        bytes32[] memory tree = Merkle.build(_payees(), _toMemory(alloc));
        // A payee's leaf index is its position in the payee list.
        return AttributionSettlement.Claim({
            modelId: m,
            epoch: e,
            index: p,
            account: payees[p],
            amount: alloc[p],
            proof: Merkle.proofAt(tree, p, payees[p], alloc[p])
        });
    }

    function _recordClaim(uint256 m, uint64 e, uint256 p) internal {
        uint256 amount = _epochs[m][e].alloc[p];
        ghostClaimedBy[m][e][p] += amount;
        _epochs[m][e].claimed += amount;
        ghostClaimedTotal += amount;
    }

    // ================================================================ attacks on settle

    /// @dev A settlement that is well-formed except for one defect; it must never go through.
    function settleWithDefect(uint256 kind, uint256 modelSeed, uint256 seed) external tracked("settleWithDefect") {
        uint256 m = modelIds[modelSeed % 2];
        kind = kind % 12;
        bool ok;
        if (kind == 0) {
            ok = _replay(m);
        } else if (kind == 9) {
            ok = _settleSignedElsewhere(m, seed, true);
        } else if (kind == 10) {
            ok = _settleSignedElsewhere(m, seed, false);
        } else {
            ok = _settleDefective(m, kind, seed);
        }
        if (ok) {
            if (kind >= 6 && kind <= 8) ghostBelowQuorumSettles++;
            else ghostBadSettles++;
        }
    }

    function _replay(uint256 m) internal returns (bool ok) {
        bytes memory data = _lastSettleCall[m];
        if (data.length == 0) return false;
        ghostDefectAttempts++;
        (ok,) = address(settlement).call(data);
    }

    function _settleDefective(uint256 m, uint256 kind, uint256 seed) internal returns (bool ok) {
        uint64 charged = escrow.chargeSeq(m);
        if (charged == escrow.settledSeq(m)) return false;
        AttributionSettlement.Attestation memory a = _attestation(m, charged, seed);
        a.payoutRoot = keccak256(abi.encode("root", seed));
        if (kind == 1) a.deadline = block.timestamp - 1; // expired
        if (kind == 3) a.epoch += 1; // skips an epoch
        if (kind == 4) {
            if (a.epoch == 1) return false;
            a.epoch -= 1; // re-settles a settled epoch
        }
        (uint256[] memory signers, bool enough) = _signers(seed);
        if (!enough) return false;
        bytes[] memory sigs = _signAll(settlement.attestationDigest(a), signers);
        if (kind == 2) a.modelId = modelIds[0] == m ? modelIds[1] : modelIds[0]; // signed for another model
        if (kind == 5) sigs[seed % sigs.length] = _highS(sigs[seed % sigs.length]);
        if (kind == 6) sigs = _truncate(_signAll(settlement.attestationDigest(a), signers), settlement.quorum() - 1);
        if (kind == 7) sigs = _withDuplicate(settlement.attestationDigest(a), signers);
        if (kind == 8) sigs = _withOutsider(settlement.attestationDigest(a), signers);
        if (kind == 11) a.payoutRoot = keccak256(abi.encode("tampered", seed)); // changed after signing
        ghostDefectAttempts++;
        try settlement.settle(a, sigs) {
            ok = true;
        } catch {}
    }

    /// @dev Signed over another chain's domain (`otherChain`) or the twin contract's domain.
    function _settleSignedElsewhere(uint256 m, uint256 seed, bool otherChain) internal returns (bool ok) {
        uint64 charged = escrow.chargeSeq(m);
        if (charged == escrow.settledSeq(m)) return false;
        AttributionSettlement.Attestation memory a = _attestation(m, charged, seed);
        a.payoutRoot = keccak256(abi.encode("root", seed));
        (uint256[] memory signers, bool enough) = _signers(seed);
        if (!enough) return false;
        bytes32 digest;
        if (otherChain) {
            uint256 chain = block.chainid;
            vm.chainId(chain + 1 + seed % 1000);
            digest = settlement.attestationDigest(a);
            vm.chainId(chain);
        } else {
            digest = twin.attestationDigest(a);
        }
        bytes[] memory sigs = _signAll(digest, signers);
        ghostDefectAttempts++;
        try settlement.settle(a, sigs) {
            ok = true;
        } catch {}
    }

    /// @dev quorum - 1 distinct registered signers, padded to quorum with a repeat of the last.
    function _withDuplicate(bytes32 digest, uint256[] memory signers) internal view returns (bytes[] memory sigs) {
        uint256 q = settlement.quorum();
        if (q < 2) return new bytes[](0);
        sigs = new bytes[](q);
        for (uint256 i = 0; i < q - 1; i++) {
            sigs[i] = _sig(signers[i], digest);
        }
        sigs[q - 1] = sigs[q - 2];
    }

    /// @dev quorum - 1 registered signers plus one outsider, in ascending address order.
    function _withOutsider(bytes32 digest, uint256[] memory signers) internal view returns (bytes[] memory sigs) {
        uint256 q = settlement.quorum();
        uint256[] memory pks = new uint256[](q);
        for (uint256 i = 0; i < q - 1; i++) {
            pks[i] = signers[i];
        }
        pks[q - 1] = OUTSIDER_PK;
        for (uint256 i = 1; i < q; i++) {
            for (uint256 j = i; j > 0 && vm.addr(pks[j - 1]) > vm.addr(pks[j]); j--) {
                (pks[j - 1], pks[j]) = (pks[j], pks[j - 1]);
            }
        }
        sigs = _signAll(digest, pks);
    }

    function _truncate(bytes[] memory sigs, uint256 n) internal pure returns (bytes[] memory out) {
        out = new bytes[](n);
        for (uint256 i = 0; i < n; i++) {
            out[i] = sigs[i];
        }
    }

    // ================================================================ administration

    function pause(uint256 which, uint256 coin) external tracked("pause") {
        if (coin % 2 == 0) return; // pause half as often as the other actions run
        vm.startPrank(admin);
        if (which % 4 == 0 && !datanets.paused()) datanets.pause();
        else if (which % 4 == 1 && !models.paused()) models.pause();
        else if (which % 4 == 2 && !escrow.paused()) escrow.pause();
        else if (which % 4 == 3 && !settlement.paused()) settlement.pause();
        vm.stopPrank();
    }

    function unpauseAll() external tracked("unpauseAll") {
        vm.startPrank(admin);
        if (datanets.paused()) datanets.unpause();
        if (models.paused()) models.unpause();
        if (escrow.paused()) escrow.unpause();
        if (settlement.paused()) settlement.unpause();
        vm.stopPrank();
    }

    /// @dev Attempts every token-moving entry point of the paused contracts (they must all fail).
    function pokePaused(uint256 seed) external tracked("pokePaused") {
        uint256 m = modelIds[seed % 2];
        address who = consumers[seed % 3];
        if (datanets.paused()) {
            vm.prank(contributors[seed % 3]);
            try datanets.contribute(datanetIds[0], keccak256(abi.encode(seed)), "bafy", 1, 1) {} catch {}
            uint256 id = _someContribution(seed);
            vm.prank(curator);
            try datanets.reject(id, 1) {} catch {}
        }
        if (escrow.paused()) {
            vm.prank(who);
            try escrow.deposit(m, 1 ether) {} catch {}
            vm.prank(payer);
            try escrow.payFees(m, 1 ether) {} catch {}
            vm.prank(who);
            try escrow.withdraw(m, 1) {} catch {}
        }
        if (settlement.paused() || escrow.paused()) {
            uint64 charged = escrow.chargeSeq(m);
            if (charged > escrow.settledSeq(m)) {
                AttributionSettlement.Attestation memory a = _attestation(m, charged, seed);
                a.payoutRoot = keccak256(abi.encode(seed));
                (uint256[] memory signers,) = _signers(seed);
                bytes[] memory sigs = _signAll(settlement.attestationDigest(a), signers);
                try settlement.settle(a, sigs) {} catch {}
            }
        }
        if (settlement.paused() && ghostEpochCount[m] > 0) {
            try settlement.claim(_claimFor(m, 1, seed % 4)) {} catch {}
        }
    }

    function setQuorum(uint256 q) external tracked("setQuorum") {
        vm.prank(admin);
        settlement.setQuorum(uint8(bound(q, 1, 5)));
    }

    function toggleAttributor(uint256 i) external tracked("toggleAttributor") {
        if ((i >> 8) % 2 == 0) return; // half as often as the other actions
        address who = vm.addr(attributorPks[i % 5]);
        bytes32 role = settlement.ATTRIBUTOR_ROLE();
        bool has = settlement.hasRole(role, who);
        vm.prank(admin);
        if (has) settlement.revokeRole(role, who);
        else settlement.grantRole(role, who);
    }

    function warp(uint256 secs) external tracked("warp") {
        vm.warp(block.timestamp + bound(secs, 1, 2 days));
    }

    // ================================================================ views for the invariants

    function epochGhost(uint256 m, uint64 e)
        external
        view
        returns (bytes32 root, uint256 cap, uint256 claimed, uint256[4] memory alloc)
    {
        EpochGhost storage g = _epochs[m][e];
        return (g.root, g.cap, g.claimed, g.alloc);
    }

    function registeredModels() external view returns (uint256[] memory) {
        return _registered;
    }

    function lineageOf(uint256 modelId) external view returns (uint256[] memory) {
        return _lineage[modelId];
    }

    function chargeModels() external view returns (uint256[2] memory) {
        return modelIds;
    }

    function consumerList() external view returns (address[3] memory) {
        return consumers;
    }

    function payeeList() external view returns (address[4] memory) {
        return payees;
    }

    function contributorList() external view returns (address[3] memory) {
        return contributors;
    }

    // ================================================================ helpers

    function _payees() internal view returns (address[] memory accounts) {
        accounts = new address[](4);
        for (uint256 i = 0; i < 4; i++) {
            accounts[i] = payees[i];
        }
    }

    function _toMemory(uint256[4] memory a) internal pure returns (uint256[] memory out) {
        out = new uint256[](4);
        for (uint256 i = 0; i < 4; i++) {
            out[i] = a[i];
        }
    }

    function _sig(uint256 pk, bytes32 digest) internal pure returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(pk, digest);
        return abi.encodePacked(r, s, v);
    }

    function _signAll(bytes32 digest, uint256[] memory pks) internal pure returns (bytes[] memory sigs) {
        sigs = new bytes[](pks.length);
        for (uint256 i = 0; i < pks.length; i++) {
            sigs[i] = _sig(pks[i], digest);
        }
    }

    function _highS(bytes memory sig) internal pure returns (bytes memory) {
        bytes32 r;
        bytes32 s;
        uint8 v;
        assembly {
            r := mload(add(sig, 32))
            s := mload(add(sig, 64))
            v := byte(0, mload(add(sig, 96)))
        }
        return abi.encodePacked(r, bytes32(SECP256K1_N - uint256(s)), v == 27 ? uint8(28) : uint8(27));
    }
}
