// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {Fixture} from "./utils/Fixture.sol";
import {Merkle} from "./utils/Merkle.sol";
import {AttributionSettlement} from "../src/AttributionSettlement.sol";
import {DatanetRegistry} from "../src/DatanetRegistry.sol";
import {ModelRegistry} from "../src/ModelRegistry.sol";

/// @notice Gas of the protocol's hot paths, measured with gasleft() around one low-level call
/// whose calldata was prepared in setUp, with every protocol contract cooled first (as in a
/// fresh transaction). Run `forge test --match-path contracts/test/Gas.t.sol -vv` to print.
///
/// `exec` is the gasleft() delta: the callee's execution plus the CALL itself, which includes
/// the 2,600 cold-account charge that a real transaction pays inside its 21,000 instead.
/// `tx` estimates a whole transaction: 21,000 + calldata (EIP-2028, with the EIP-7623 floor)
/// + exec - 2,600.
abstract contract GasBase is Fixture {
    uint256 internal constant TX_BASE = 21_000;
    uint256 internal constant COLD_ACCOUNT = 2_600;

    function _cool() internal {
        vm.cool(address(token));
        vm.cool(address(datanets));
        vm.cool(address(models));
        vm.cool(address(escrow));
        vm.cool(address(settlement));
    }

    function _measure(string memory label, address target, bytes memory data) internal returns (uint256 used) {
        _cool();
        uint256 start = gasleft();
        (bool ok, bytes memory ret) = target.call(data);
        used = start - gasleft();
        if (!ok) {
            assembly {
                revert(add(ret, 32), mload(ret))
            }
        }
        uint256 zeros = 0;
        for (uint256 i = 0; i < data.length; i++) {
            if (data[i] == 0) zeros++;
        }
        uint256 tokens = zeros + 4 * (data.length - zeros);
        uint256 standard = TX_BASE + 4 * tokens + used - COLD_ACCOUNT;
        uint256 floor = TX_BASE + 10 * tokens;
        emit log_named_uint(string.concat(label, " exec"), used);
        emit log_named_uint(string.concat(label, " tx (est.)"), standard > floor ? standard : floor);
        emit log_named_uint(string.concat(label, " calldata bytes"), data.length);
    }
}

/// @notice Claims from epochs whose trees have 100,000 leaves (proof length 17).
contract GasClaimTest is GasBase {
    uint256 internal constant LEAVES = 100_000;
    uint256 internal constant DEPTH = 17; // ceil(log2(100,000))
    uint256 internal constant AMOUNT = 1.234567 ether;
    /// @dev Leaf indexes of the four real leaves: inside one 256-claim bitmap word, as 255 of
    /// every 256 claims of a large epoch are (the first claim of a word pays for a new slot).
    uint256 internal constant FIRST_INDEX = 50_000;

    address internal fresh = address(0xF2E5);
    address internal funded = address(0xF0DD);
    address internal other1 = address(0x0731);
    address internal other2 = address(0x0732);

    bytes internal claimFresh;
    bytes internal claimFunded;
    bytes internal claimManyFresh;
    bytes internal claimManyFunded;
    bytes internal claimFundedNewWord;

    /// @dev The bottom of each tree holds (fresh, funded) and (other1, other2) as two sibling
    /// pairs; the other 15 levels are arbitrary sibling hashes standing in for the rest of the
    /// 100,000 leaves, and the root is whatever they hash to.
    function _epochTree(uint256 salt) internal view returns (bytes32 root, bytes32[][4] memory proofs) {
        bytes32[4] memory leaves = [
            Merkle.leaf(FIRST_INDEX, fresh, AMOUNT),
            Merkle.leaf(FIRST_INDEX + 1, funded, AMOUNT),
            Merkle.leaf(FIRST_INDEX + 2, other1, AMOUNT),
            Merkle.leaf(FIRST_INDEX + 3, other2, AMOUNT)
        ];
        bytes32 left = Merkle.hashPair(leaves[0], leaves[1]);
        bytes32 right = Merkle.hashPair(leaves[2], leaves[3]);
        bytes32[] memory upper = new bytes32[](DEPTH - 2);
        root = Merkle.hashPair(left, right);
        for (uint256 i = 0; i < upper.length; i++) {
            upper[i] = keccak256(abi.encode("sibling", salt, i));
            root = Merkle.hashPair(root, upper[i]);
        }
        for (uint256 k = 0; k < 4; k++) {
            bytes32[] memory p = new bytes32[](DEPTH);
            p[0] = leaves[k ^ 1];
            p[1] = k < 2 ? right : left;
            for (uint256 i = 0; i < upper.length; i++) {
                p[2 + i] = upper[i];
            }
            assert(Merkle.processProof(p, leaves[k]) == root);
            proofs[k] = p;
        }
    }

    function _claim(uint64 epoch, uint256 leafIndex, address account, bytes32[] memory proof)
        internal
        view
        returns (AttributionSettlement.Claim memory)
    {
        return AttributionSettlement.Claim(modelId, epoch, FIRST_INDEX + leafIndex, account, AMOUNT, proof);
    }

    function setUp() public override {
        super.setUp();
        vm.warp(1_800_000_000);
        _fund(funded, 1 ether);
        AttributionSettlement.Claim[] memory manyFresh = new AttributionSettlement.Claim[](10);
        AttributionSettlement.Claim[] memory manyFunded = new AttributionSettlement.Claim[](10);
        for (uint64 epoch = 1; epoch <= 12; epoch++) {
            _fees(modelId, 100 ether);
            (bytes32 root, bytes32[][4] memory proofs) = _epochTree(epoch);
            _settle(_fullAttestation(modelId, root));
            if (epoch == 12) {
                // Nothing of this epoch claimed yet: the claim opens a new bitmap word.
                claimFundedNewWord = abi.encodeCall(AttributionSettlement.claim, (_claim(epoch, 1, funded, proofs[1])));
                break;
            }
            // Another leaf of the same bitmap word was claimed already.
            settlement.claim(_claim(epoch, 2, other1, proofs[2]));
            if (epoch == 1) {
                claimFresh = abi.encodeCall(AttributionSettlement.claim, (_claim(epoch, 0, fresh, proofs[0])));
                claimFunded = abi.encodeCall(AttributionSettlement.claim, (_claim(epoch, 1, funded, proofs[1])));
            } else {
                manyFresh[epoch - 2] = _claim(epoch, 0, fresh, proofs[0]);
                manyFunded[epoch - 2] = _claim(epoch, 1, funded, proofs[1]);
            }
        }
        claimManyFresh = abi.encodeCall(AttributionSettlement.claimMany, (manyFresh));
        claimManyFunded = abi.encodeCall(AttributionSettlement.claimMany, (manyFunded));
        assertEq(LEAVES <= 2 ** DEPTH && LEAVES > 2 ** (DEPTH - 1), true, "depth fits 100,000 leaves");
    }

    function test_gas_claim_freshRecipient_proof17() public {
        _measure("claim (fresh recipient, proof 17)", address(settlement), claimFresh);
        assertEq(token.balanceOf(fresh), AMOUNT, "claimed");
    }

    function test_gas_claim_fundedRecipient_proof17() public {
        _measure("claim (funded recipient, proof 17)", address(settlement), claimFunded);
        assertEq(token.balanceOf(funded), 1 ether + AMOUNT, "claimed");
    }

    function test_gas_claim_fundedRecipient_newBitmapWord() public {
        _measure("claim (funded recipient, first of its bitmap word)", address(settlement), claimFundedNewWord);
        assertEq(token.balanceOf(funded), 1 ether + AMOUNT, "claimed");
    }

    function test_gas_claimMany_10epochs_freshRecipient() public {
        uint256 used = _measure("claimMany 10 epochs (fresh recipient, proof 17)", address(settlement), claimManyFresh);
        emit log_named_uint("claimMany 10 epochs (fresh) exec per epoch", used / 10);
        assertEq(token.balanceOf(fresh), 10 * AMOUNT, "claimed");
    }

    function test_gas_claimMany_10epochs_fundedRecipient() public {
        uint256 used =
            _measure("claimMany 10 epochs (funded recipient, proof 17)", address(settlement), claimManyFunded);
        emit log_named_uint("claimMany 10 epochs (funded) exec per epoch", used / 10);
        assertEq(token.balanceOf(funded), 1 ether + 10 * AMOUNT, "claimed");
    }
}

/// @notice Settling an epoch with a 3-of-5 quorum.
contract GasSettleTest is GasBase {
    bytes internal settleFirst;
    bytes internal settleNext;

    function setUp() public override {
        super.setUp();
        vm.warp(1_800_000_000);
        _fees(modelId, 100 ether);
        AttributionSettlement.Attestation memory a = _fullAttestation(modelId, keccak256("root-1"));
        a.curatorsTotal -= 1; // leaves dust, so the carried dust slot is in use afterwards
        settleFirst = abi.encodeCall(AttributionSettlement.settle, (a, _attest(a, QUORUM)));
    }

    function test_gas_settle_firstEpoch_quorum3of5() public {
        assertEq(settlement.getRoleMemberCount(settlement.ATTRIBUTOR_ROLE()), 5, "five attributors");
        _measure("settle first epoch (3-of-5)", address(settlement), settleFirst);
    }

    function test_gas_settle_nextEpoch_quorum3of5() public {
        (bool ok,) = address(settlement).call(settleFirst);
        assertTrue(ok, "first epoch");
        _fees(modelId, 50 ether);
        AttributionSettlement.Attestation memory a = _fullAttestation(modelId, keccak256("root-2"));
        a.curatorsTotal -= 1;
        settleNext = abi.encodeCall(AttributionSettlement.settle, (a, _attest(a, QUORUM)));
        _measure("settle next epoch (3-of-5)", address(settlement), settleNext);
        assertEq(settlement.lastEpoch(modelId), 2, "settled");
    }
}

/// @notice contribute, and approve one contribution vs a batch of 100.
contract GasDatanetTest is GasBase {
    uint256 internal constant BATCH = 100;
    uint256[] internal pending;

    function setUp() public override {
        super.setUp();
        // One pending contribution of alice keeps the registry's stake balance non-zero, as in
        // steady state. 100 distinct contributors, each with one pending contribution.
        _contribute(alice, datanetId, 1000);
        for (uint256 i = 0; i < BATCH; i++) {
            address who = vm.addr(0xC000 + i);
            _fund(who, STAKE + 1 ether);
            vm.startPrank(who);
            token.approve(address(datanets), type(uint256).max);
            pending.push(datanets.contribute(datanetId, keccak256(abi.encode(i)), "bafkreibatchcontribution", 4096, 32));
            vm.stopPrank();
        }
    }

    function test_gas_contribute_withStake() public {
        bytes memory data = abi.encodeCall(
            DatanetRegistry.contribute,
            (
                datanetId,
                keccak256("new content"),
                "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4",
                65_536,
                500
            )
        );
        vm.prank(bob);
        _measure("contribute (stake 10 PVN)", address(datanets), data);
    }

    function test_gas_contribute_withoutStake() public {
        uint256 free = _createDatanet(0, false, false);
        bytes memory data = abi.encodeCall(
            DatanetRegistry.contribute,
            (
                free,
                keccak256("new content"),
                "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4",
                65_536,
                500
            )
        );
        vm.prank(bob);
        _measure("contribute (no stake)", address(datanets), data);
    }

    function test_gas_approve_one() public {
        bytes memory data = abi.encodeCall(DatanetRegistry.approve, (datanetId, _ids(pending[0])));
        vm.prank(curator);
        _measure("approve 1 contribution", address(datanets), data);
    }

    function test_gas_approve_batchOf100() public {
        bytes memory data = abi.encodeCall(DatanetRegistry.approve, (datanetId, pending));
        vm.prank(curator);
        uint256 used = _measure("approve batch of 100", address(datanets), data);
        emit log_named_uint("approve batch of 100 exec per contribution", used / BATCH);
        assertTrue(datanets.statusOf(pending[BATCH - 1]) == DatanetRegistry.Status.Approved, "approved");
    }
}

/// @notice registerModel with a short and a long lineage.
contract GasModelTest is GasBase {
    uint256[] internal approved;

    function setUp() public override {
        super.setUp();
        for (uint256 i = 0; i < 100; i++) {
            approved.push(_contribute(i % 2 == 0 ? alice : bob, datanetId, 5000 + i));
        }
        _approve(datanetId, approved);
    }

    function _register(string memory label, uint256[] memory ids) internal {
        ModelRegistry.ModelSpec memory spec = _spec("provenant/minilm-legal-v1", datanetId, ids);
        spec.adapterCid = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi";
        spec.manifestCid = "bafybeibwzifw52ttrkqlikfzext5akxu7lz4xiwjgwzmqcpdzmp3n5vnbe";
        bytes memory data = abi.encodeCall(ModelRegistry.registerModel, (spec));
        vm.prank(builder);
        _measure(label, address(models), data);
    }

    function test_gas_registerModel_2contributions() public {
        _register("registerModel (1 datanet, 2 contributions)", _ids(approved[0], approved[1]));
    }

    function test_gas_registerModel_100contributions() public {
        _register("registerModel (1 datanet, 100 contributions)", approved);
    }
}
