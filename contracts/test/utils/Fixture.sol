// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {Test} from "./Test.sol";
import {Merkle} from "./Merkle.sol";
import {ProvenantToken} from "../../src/ProvenantToken.sol";
import {DatanetRegistry} from "../../src/DatanetRegistry.sol";
import {ModelRegistry} from "../../src/ModelRegistry.sol";
import {UsageEscrow} from "../../src/UsageEscrow.sol";
import {AttributionSettlement} from "../../src/AttributionSettlement.sol";

/// @notice The deployed, wired protocol every test starts from: token, registries, escrow and
/// settlement (split 500 / 1500 / 1000 / 7000 bps, five registered attributors, quorum 3), a
/// Datanet with two approved contributions and one registered model with a serving key.
abstract contract Fixture is Test {
    uint256 internal constant SUPPLY = 1_000_000_000 ether;
    uint256 internal constant WITHDRAW_DELAY = 1 days;
    uint256 internal constant SPLIT_DELAY = 2 days;
    uint256 internal constant STAKE = 10 ether;
    uint256 internal constant FUNDS = 1_000_000 ether;
    uint8 internal constant QUORUM = 3;
    uint16 internal constant PROTOCOL_BPS = 500;
    uint16 internal constant OWNER_BPS = 1500;
    uint16 internal constant CURATORS_BPS = 1000;
    uint16 internal constant CONTRIBUTORS_BPS = 7000;
    string internal constant RESULTS_CID = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4";

    ProvenantToken internal token;
    DatanetRegistry internal datanets;
    ModelRegistry internal models;
    UsageEscrow internal escrow;
    AttributionSettlement internal settlement;

    address internal admin = address(0xAD00);
    address internal protocolTreasury = address(0x7EA5);
    address internal datanetOwner = address(0xD0);
    address internal curator = address(0xC0C0);
    address internal slashTreasury = address(0x51A5);
    address internal alice = address(0xA11CE);
    address internal bob = address(0xB0B);
    address internal builder = address(0xB1D);
    address internal stranger = address(0x5712);

    uint256 internal serverPk = 0x5E7E7;
    address internal server;
    uint256 internal consumerPk = 0xC0F1;
    address internal consumer;
    uint256 internal consumer2Pk = 0xC0F2;
    address internal consumer2;

    /// @dev Sorted by ascending address, as `settle` wants its signatures.
    uint256[5] internal attributorPks;
    address[5] internal attributors;

    uint256 internal datanetId;
    uint256 internal aliceContribution;
    uint256 internal bobContribution;
    uint256 internal modelId;

    function setUp() public virtual {
        server = vm.addr(serverPk);
        consumer = vm.addr(consumerPk);
        consumer2 = vm.addr(consumer2Pk);
        _deploy();
        _seed();
    }

    // ---------------------------------------------------------------- deployment

    function _deploy() internal {
        token = new ProvenantToken(address(this), SUPPLY);
        datanets = new DatanetRegistry(token, admin);
        models = new ModelRegistry(datanets, admin);
        escrow = new UsageEscrow(token, models, WITHDRAW_DELAY, admin);
        settlement = new AttributionSettlement(token, escrow, admin, protocolTreasury, _defaultSplit(), SPLIT_DELAY);
        vm.prank(admin);
        escrow.setSettlement(address(settlement));

        uint256[5] memory pks = [uint256(0xA771), 0xA772, 0xA773, 0xA774, 0xA775];
        for (uint256 i = 0; i < pks.length; i++) {
            for (uint256 j = i + 1; j < pks.length; j++) {
                if (vm.addr(pks[j]) < vm.addr(pks[i])) (pks[i], pks[j]) = (pks[j], pks[i]);
            }
        }
        bytes32 role = settlement.ATTRIBUTOR_ROLE();
        vm.startPrank(admin);
        for (uint256 i = 0; i < pks.length; i++) {
            attributorPks[i] = pks[i];
            attributors[i] = vm.addr(pks[i]);
            settlement.grantRole(role, attributors[i]);
        }
        settlement.setQuorum(QUORUM);
        vm.stopPrank();

        vm.label(address(token), "token");
        vm.label(address(datanets), "datanets");
        vm.label(address(models), "models");
        vm.label(address(escrow), "escrow");
        vm.label(address(settlement), "settlement");
    }

    function _seed() internal {
        address[4] memory funded = [alice, bob, consumer, consumer2];
        for (uint256 i = 0; i < funded.length; i++) {
            _fund(funded[i], FUNDS);
            vm.startPrank(funded[i]);
            token.approve(address(datanets), type(uint256).max);
            token.approve(address(escrow), type(uint256).max);
            vm.stopPrank();
        }
        datanetId = _createDatanet(STAKE, false, false);
        aliceContribution = _contribute(alice, datanetId, 1);
        bobContribution = _contribute(bob, datanetId, 2);
        _approve(datanetId, _ids(aliceContribution, bobContribution));
        modelId = _registerModel(builder, "provenant/demo-1", datanetId, _ids(aliceContribution, bobContribution));
    }

    function _fund(address to, uint256 amount) internal {
        assertTrue(token.transfer(to, amount), "fund");
    }

    function _defaultSplit() internal pure returns (AttributionSettlement.Split memory) {
        return AttributionSettlement.Split({
            protocolBps: PROTOCOL_BPS,
            ownerBps: OWNER_BPS,
            curatorsBps: CURATORS_BPS,
            contributorsBps: CONTRIBUTORS_BPS
        });
    }

    // ---------------------------------------------------------------- datanets and models

    function _createDatanet(uint256 stake, bool allowlisted, bool slashOnReject) internal returns (uint256) {
        address[] memory curators = new address[](1);
        curators[0] = curator;
        vm.prank(datanetOwner);
        return datanets.createDatanet("bafy-datanet-meta", "CC-BY-4.0", curators, slashTreasury, stake, allowlisted, slashOnReject);
    }

    function _contribute(address who, uint256 dnId, uint256 salt) internal returns (uint256) {
        vm.prank(who);
        return datanets.contribute(dnId, keccak256(abi.encode("content", salt)), "bafy-contribution", 1024, 10);
    }

    function _approve(uint256 dnId, uint256[] memory ids) internal {
        vm.prank(curator);
        datanets.approve(dnId, ids);
    }

    function _spec(string memory name, uint256 dnId, uint256[] memory contributionIds)
        internal
        view
        returns (ModelRegistry.ModelSpec memory spec)
    {
        uint256[] memory dnIds = new uint256[](1);
        dnIds[0] = dnId;
        spec = ModelRegistry.ModelSpec({
            name: name,
            baseModel: "sentence-transformers/all-MiniLM-L6-v2",
            datanetIds: dnIds,
            contributionIds: contributionIds,
            lineageRoot: keccak256(abi.encode("lineage", name)),
            configHash: keccak256("lora r=8 alpha=16"),
            adapterCid: "bafy-adapter",
            adapterHash: keccak256("adapter bytes"),
            manifestCid: "bafy-manifest",
            parentId: 0,
            pricePerCall: 1e15,
            server: server
        });
    }

    function _registerModel(address owner, string memory name, uint256 dnId, uint256[] memory contributionIds)
        internal
        returns (uint256)
    {
        ModelRegistry.ModelSpec memory spec = _spec(name, dnId, contributionIds);
        vm.prank(owner);
        return models.registerModel(spec);
    }

    function _ids(uint256 a) internal pure returns (uint256[] memory ids) {
        ids = new uint256[](1);
        ids[0] = a;
    }

    function _ids(uint256 a, uint256 b) internal pure returns (uint256[] memory ids) {
        ids = new uint256[](2);
        ids[0] = a;
        ids[1] = b;
    }

    // ---------------------------------------------------------------- escrow

    function _sig(uint256 pk, bytes32 digest) internal pure returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(pk, digest);
        return abi.encodePacked(r, s, v);
    }

    function _voucher(uint256 pk, uint256 mId, uint256 cumulative)
        internal
        view
        returns (UsageEscrow.Voucher memory v, bytes memory sig)
    {
        v = UsageEscrow.Voucher({
            consumer: vm.addr(pk),
            modelId: mId,
            cumulativeAmount: cumulative,
            deadline: block.timestamp + 1 days
        });
        sig = _sig(pk, escrow.voucherDigest(v));
    }

    function _deposit(address who, uint256 mId, uint256 amount) internal {
        vm.prank(who);
        escrow.deposit(mId, amount);
    }

    /// @dev One voucher, charged by the model's server.
    function _charge(uint256 pk, uint256 mId, uint256 cumulative) internal returns (uint64 seq) {
        (UsageEscrow.Voucher memory v, bytes memory sig) = _voucher(pk, mId, cumulative);
        UsageEscrow.Voucher[] memory vs = new UsageEscrow.Voucher[](1);
        vs[0] = v;
        bytes[] memory sigs = new bytes[](1);
        sigs[0] = sig;
        vm.prank(server);
        return escrow.charge(mId, vs, sigs);
    }

    /// @dev Deposit and charge `amount` of new fees from `consumer` into model `mId`.
    function _fees(uint256 mId, uint256 amount) internal returns (uint64 seq) {
        _deposit(consumer, mId, amount);
        return _charge(consumerPk, mId, escrow.spentOf(consumer, mId) + amount);
    }

    // ---------------------------------------------------------------- settlement

    function _budgets(uint256 available)
        internal
        view
        returns (uint256 protocolAmount, uint256 ownerAmount, uint256 curatorsBudget, uint256 contributorsBudget)
    {
        (uint16 p, uint16 o, uint16 c,) = settlement.split();
        protocolAmount = (available * p) / 10_000;
        ownerAmount = (available * o) / 10_000;
        curatorsBudget = (available * c) / 10_000;
        contributorsBudget = available - protocolAmount - ownerAmount - curatorsBudget;
    }

    /// @dev What settling `mId` up to `uptoSeq` makes available (released fees plus carried dust).
    function _available(uint256 mId, uint64 uptoSeq) internal view returns (uint256) {
        uint64 from = escrow.settledSeq(mId);
        return escrow.cumulativeFeesAt(mId, uptoSeq) - escrow.cumulativeFeesAt(mId, from) + settlement.carriedDust(mId);
    }

    /// @dev The next epoch's attestation of `mId` up to `uptoSeq` with the given allocation totals.
    function _attestation(uint256 mId, uint64 uptoSeq, uint256 curatorsTotal, uint256 contributorsTotal, bytes32 root)
        internal
        view
        returns (AttributionSettlement.Attestation memory a)
    {
        uint256 available = _available(mId, uptoSeq);
        (uint256 p, uint256 o,,) = _budgets(available);
        a = AttributionSettlement.Attestation({
            modelId: mId,
            epoch: settlement.lastEpoch(mId) + 1,
            uptoSeq: uptoSeq,
            feeTotal: available,
            protocolAmount: p,
            ownerAmount: o,
            curatorsTotal: curatorsTotal,
            contributorsTotal: contributorsTotal,
            payoutRoot: root,
            resultsCid: RESULTS_CID,
            deadline: block.timestamp + 1 hours
        });
    }

    /// @dev The next epoch's attestation of `mId` over all charged fees, budgets fully allocated.
    function _fullAttestation(uint256 mId, bytes32 root) internal view returns (AttributionSettlement.Attestation memory) {
        uint64 upto = escrow.chargeSeq(mId);
        (,, uint256 cb, uint256 kb) = _budgets(_available(mId, upto));
        return _attestation(mId, upto, cb, kb, root);
    }

    /// @dev Signatures of the first `n` attributors (ascending addresses).
    function _attest(AttributionSettlement.Attestation memory a, uint256 n) internal view returns (bytes[] memory sigs) {
        bytes32 digest = settlement.attestationDigest(a);
        sigs = new bytes[](n);
        for (uint256 i = 0; i < n; i++) {
            sigs[i] = _sig(attributorPks[i], digest);
        }
    }

    function _settle(AttributionSettlement.Attestation memory a) internal {
        bytes[] memory sigs = _attest(a, QUORUM);
        settlement.settle(a, sigs);
    }

    /// @dev A two-leaf payout tree (alice, bob) whose amounts sum to `total`.
    function _tree2(uint256 total) internal view returns (bytes32[] memory tree, uint256 aliceAmount, uint256 bobAmount) {
        aliceAmount = total / 3;
        bobAmount = total - aliceAmount;
        address[] memory accounts = new address[](2);
        accounts[0] = alice;
        accounts[1] = bob;
        uint256[] memory amounts = new uint256[](2);
        amounts[0] = aliceAmount;
        amounts[1] = bobAmount;
        tree = Merkle.build(accounts, amounts);
    }

    function _claimOf(uint256 mId, uint64 epoch, address account, uint256 amount, bytes32[] memory tree)
        internal
        pure
        returns (AttributionSettlement.Claim memory)
    {
        (uint256 index, bytes32[] memory path) = Merkle.proof(tree, account, amount);
        return AttributionSettlement.Claim({
            modelId: mId, epoch: epoch, index: index, account: account, amount: amount, proof: path
        });
    }

    /// @dev High-s twin of a 65-byte signature: same signer, s' = n - s, v flipped.
    function _highS(bytes memory sig) internal pure returns (bytes memory) {
        bytes32 r;
        bytes32 s;
        uint8 v;
        assembly {
            r := mload(add(sig, 32))
            s := mload(add(sig, 64))
            v := byte(0, mload(add(sig, 96)))
        }
        uint256 n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;
        return abi.encodePacked(r, bytes32(n - uint256(s)), v == 27 ? uint8(28) : uint8(27));
    }
}
