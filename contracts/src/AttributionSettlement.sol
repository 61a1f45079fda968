// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {AccessControlEnumerable} from "@openzeppelin/contracts/access/extensions/AccessControlEnumerable.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {ModelRegistry} from "./ModelRegistry.sol";
import {UsageEscrow} from "./UsageEscrow.sol";

/// @title AttributionSettlement
/// @notice Settles a model's escrowed fees epoch by epoch on the word of a quorum of
/// registered attributors. Each settlement releases the model's fees up to a charge sequence
/// number from the escrow, splits them by the on-chain basis-point split (protocol / model
/// owner / curators / contributors), pays the protocol and owner shares, and records a Merkle
/// root of (account, amount) allocations for curators and contributors, who claim with a
/// proof (pull). What the signed totals leave of the curators' and contributors' budgets is
/// carried to the model's next epoch, never lost.
contract AttributionSettlement is AccessControlEnumerable, Pausable, EIP712 {
    using SafeERC20 for IERC20;

    /// @notice What a quorum of attributors signs for one epoch of one model.
    struct Attestation {
        uint256 modelId;
        uint64 epoch;
        uint64 uptoSeq;
        uint256 feeTotal;
        uint256 protocolAmount;
        uint256 ownerAmount;
        uint256 curatorsTotal;
        uint256 contributorsTotal;
        bytes32 payoutRoot;
        string resultsCid;
        uint256 deadline;
    }

    struct Split {
        uint16 protocolBps;
        uint16 ownerBps;
        uint16 curatorsBps;
        uint16 contributorsBps;
    }

    struct Epoch {
        bytes32 payoutRoot;
        uint256 claimCap;
        uint256 claimed;
    }

    struct Claim {
        uint256 modelId;
        uint64 epoch;
        address account;
        uint256 amount;
        bytes32[] proof;
    }

    bytes32 public constant ATTRIBUTOR_ROLE = keccak256("ATTRIBUTOR_ROLE");
    bytes32 public constant PAUSER_ROLE = keccak256("PAUSER_ROLE");
    bytes32 public constant ATTESTATION_TYPEHASH = keccak256(
        "Attestation(uint256 modelId,uint64 epoch,uint64 uptoSeq,uint256 feeTotal,uint256 protocolAmount,"
        "uint256 ownerAmount,uint256 curatorsTotal,uint256 contributorsTotal,bytes32 payoutRoot,string resultsCid,"
        "uint256 deadline)"
    );
    uint16 public constant BPS = 10_000;

    IERC20 public immutable token;
    UsageEscrow public immutable escrow;
    ModelRegistry public immutable models;
    uint256 public immutable splitDelay;

    address public protocolTreasury;
    uint8 public quorum;
    Split public split;
    Split public pendingSplit;
    uint256 public pendingSplitEta;

    mapping(uint256 modelId => uint64) public lastEpoch;
    mapping(uint256 modelId => uint256) public carriedDust;
    mapping(uint256 modelId => mapping(uint64 epoch => Epoch)) public epochs;
    mapping(uint256 modelId => mapping(uint64 epoch => mapping(address account => bool))) public claimed;

    event QuorumSet(uint8 quorum);
    event ProtocolTreasurySet(address treasury);
    event SplitProposed(uint16 protocolBps, uint16 ownerBps, uint16 curatorsBps, uint16 contributorsBps, uint256 eta);
    event SplitSet(uint16 protocolBps, uint16 ownerBps, uint16 curatorsBps, uint16 contributorsBps);
    event EpochSettled(
        uint256 indexed modelId, uint64 indexed epoch, uint64 uptoSeq, bytes32 payoutRoot, uint256 claimCap, string resultsCid
    );
    event EpochSplit(
        uint256 indexed modelId,
        uint64 indexed epoch,
        uint256 feeTotal,
        uint256 protocolAmount,
        uint256 ownerAmount,
        uint256 curatorsTotal,
        uint256 contributorsTotal,
        uint256 carriedDust
    );
    event Claimed(uint256 indexed modelId, uint64 indexed epoch, address indexed account, uint256 amount);

    error ZeroAddress();
    error BadSplit();
    error BadQuorum(uint8 quorum);
    error NoPendingSplit();
    error SplitNotReady(uint256 eta);
    error Expired(uint256 deadline);
    error EpochOutOfOrder(uint64 epoch, uint64 expected);
    error TooFewSignatures(uint256 given, uint8 quorum);
    error SignersNotAscending(uint256 index);
    error NotAttributor(address signer);
    error FeeMismatch(uint256 signed, uint256 available);
    error EmptyRoot();
    error ReleaseMismatch(uint256 expected, uint256 released);
    error SplitMismatch(string role, uint256 signed, uint256 expected);
    error UnknownEpoch(uint256 modelId, uint64 epoch);
    error AlreadyClaimed(uint256 modelId, uint64 epoch, address account);
    error InvalidProof(uint256 modelId, uint64 epoch, address account);
    error ClaimCapExceeded(uint256 modelId, uint64 epoch);

    /// @param token_ the fee token
    /// @param escrow_ the usage escrow that releases fees to this contract
    /// @param admin receives DEFAULT_ADMIN_ROLE and PAUSER_ROLE
    /// @param protocolTreasury_ receives the protocol share
    /// @param initialSplit the fee split; sums to 10,000 basis points
    /// @param splitDelay_ seconds between proposing and applying a new split
    constructor(
        IERC20 token_,
        UsageEscrow escrow_,
        address admin,
        address protocolTreasury_,
        Split memory initialSplit,
        uint256 splitDelay_
    ) EIP712("Provenant AttributionSettlement", "1") {
        if (address(token_) == address(0) || address(escrow_) == address(0)) revert ZeroAddress();
        if (admin == address(0) || protocolTreasury_ == address(0)) revert ZeroAddress();
        _checkSplit(initialSplit);
        token = token_;
        escrow = escrow_;
        models = escrow_.models();
        splitDelay = splitDelay_;
        protocolTreasury = protocolTreasury_;
        split = initialSplit;
        quorum = 1;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(PAUSER_ROLE, admin);
        emit ProtocolTreasurySet(protocolTreasury_);
        emit SplitSet(initialSplit.protocolBps, initialSplit.ownerBps, initialSplit.curatorsBps, initialSplit.contributorsBps);
        emit QuorumSet(1);
    }

    /// @notice Set how many distinct registered attributors must sign a settlement.
    /// @param quorum_ M of M-of-N; at least 1 and at most the number of registered attributors
    function setQuorum(uint8 quorum_) external onlyRole(DEFAULT_ADMIN_ROLE) {
        // A quorum above the registered attributors would block every settlement.
        if (quorum_ == 0 || quorum_ > getRoleMemberCount(ATTRIBUTOR_ROLE)) revert BadQuorum(quorum_);
        quorum = quorum_;
        emit QuorumSet(quorum_);
    }

    /// @notice Set the account that receives the protocol share.
    /// @param treasury the new treasury
    function setProtocolTreasury(address treasury) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (treasury == address(0)) revert ZeroAddress();
        protocolTreasury = treasury;
        emit ProtocolTreasurySet(treasury);
    }

    /// @notice Propose a new fee split; it applies after `splitDelay` seconds.
    /// @param next the new split; sums to 10,000 basis points
    function proposeSplit(Split calldata next) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _checkSplit(next);
        pendingSplit = next;
        pendingSplitEta = block.timestamp + splitDelay;
        emit SplitProposed(next.protocolBps, next.ownerBps, next.curatorsBps, next.contributorsBps, pendingSplitEta);
    }

    /// @notice Apply the proposed split once its delay has passed.
    function executeSplit() external onlyRole(DEFAULT_ADMIN_ROLE) {
        uint256 eta = pendingSplitEta;
        if (eta == 0) revert NoPendingSplit();
        if (block.timestamp < eta) revert SplitNotReady(eta);
        Split memory next = pendingSplit;
        split = next;
        pendingSplitEta = 0;
        emit SplitSet(next.protocolBps, next.ownerBps, next.curatorsBps, next.contributorsBps);
    }

    /// @notice Settle the next epoch of a model. Verifies a quorum of distinct registered
    /// attributors (signers in ascending address order) over the EIP-712 attestation, releases
    /// the model's fees up to `a.uptoSeq` from the escrow, checks the signed split against the
    /// on-chain split, pays the protocol and owner shares, and records the payout root.
    /// @param a the attestation
    /// @param signatures the attributors' EIP-712 signatures, ordered by ascending signer address
    function settle(Attestation calldata a, bytes[] calldata signatures) external whenNotPaused {
        if (block.timestamp > a.deadline) revert Expired(a.deadline);
        uint64 expected = lastEpoch[a.modelId] + 1;
        if (a.epoch != expected) revert EpochOutOfOrder(a.epoch, expected);
        _checkSignatures(attestationDigest(a), signatures);
        uint256 cap = a.curatorsTotal + a.contributorsTotal;
        if (a.payoutRoot == bytes32(0) && cap != 0) revert EmptyRoot();

        // Checks-effects-interactions: read what the escrow will release, record the epoch,
        // then pull the fees and pay out.
        uint256 released = escrow.releasable(a.modelId, a.uptoSeq);
        uint256 dust = _checkSplitAmounts(a, released + carriedDust[a.modelId]);
        lastEpoch[a.modelId] = a.epoch;
        carriedDust[a.modelId] = dust;
        epochs[a.modelId][a.epoch] = Epoch({payoutRoot: a.payoutRoot, claimCap: cap, claimed: 0});
        emit EpochSettled(a.modelId, a.epoch, a.uptoSeq, a.payoutRoot, cap, a.resultsCid);
        emit EpochSplit(
            a.modelId, a.epoch, a.feeTotal, a.protocolAmount, a.ownerAmount, a.curatorsTotal, a.contributorsTotal, dust
        );

        uint256 pulled = escrow.release(a.modelId, a.uptoSeq);
        if (pulled != released) revert ReleaseMismatch(released, pulled);
        (address owner,) = models.ownerAndServerOf(a.modelId);
        if (a.protocolAmount > 0) token.safeTransfer(protocolTreasury, a.protocolAmount);
        if (a.ownerAmount > 0) token.safeTransfer(owner, a.ownerAmount);
    }

    /// @notice Claim one allocation with its Merkle proof; the tokens go to `c.account`.
    /// @param c the model, epoch, account, amount and proof
    function claim(Claim calldata c) external whenNotPaused {
        _claim(c);
        token.safeTransfer(c.account, c.amount);
    }

    /// @notice Claim several allocations (many epochs, many models) in one transaction. All
    /// must be for the same account; the tokens are transferred once.
    /// @param claims the claims
    function claimMany(Claim[] calldata claims) external whenNotPaused {
        if (claims.length == 0) return;
        address account = claims[0].account;
        uint256 total = 0;
        for (uint256 i = 0; i < claims.length; i++) {
            if (claims[i].account != account) revert InvalidProof(claims[i].modelId, claims[i].epoch, claims[i].account);
            _claim(claims[i]);
            total += claims[i].amount;
        }
        token.safeTransfer(account, total);
    }

    /// @notice Pause settlements and claims.
    function pause() external onlyRole(PAUSER_ROLE) {
        _pause();
    }

    /// @notice Resume after a pause.
    function unpause() external onlyRole(PAUSER_ROLE) {
        _unpause();
    }

    /// @notice The EIP-712 digest attributors sign for an attestation.
    /// @param a the attestation
    function attestationDigest(Attestation calldata a) public view returns (bytes32) {
        bytes32 structHash = keccak256(
            abi.encode(
                ATTESTATION_TYPEHASH,
                a.modelId,
                a.epoch,
                a.uptoSeq,
                a.feeTotal,
                a.protocolAmount,
                a.ownerAmount,
                a.curatorsTotal,
                a.contributorsTotal,
                a.payoutRoot,
                keccak256(bytes(a.resultsCid)),
                a.deadline
            )
        );
        return _hashTypedDataV4(structHash);
    }

    /// @notice The EIP-712 domain separator (chain id and this contract are bound into it).
    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    function _checkSignatures(bytes32 digest, bytes[] calldata signatures) private view {
        if (signatures.length < quorum) revert TooFewSignatures(signatures.length, quorum);
        address previous = address(0);
        for (uint256 i = 0; i < signatures.length; i++) {
            // ECDSA.recover rejects malleable (high-s) signatures.
            address signer = ECDSA.recover(digest, signatures[i]);
            if (signer <= previous) revert SignersNotAscending(i);
            if (!hasRole(ATTRIBUTOR_ROLE, signer)) revert NotAttributor(signer);
            previous = signer;
        }
    }

    function _checkSplitAmounts(Attestation calldata a, uint256 available) private view returns (uint256 dust) {
        if (a.feeTotal != available) revert FeeMismatch(a.feeTotal, available);
        Split memory s = split;
        uint256 protocolAmount = (available * s.protocolBps) / BPS;
        uint256 ownerAmount = (available * s.ownerBps) / BPS;
        uint256 curatorsBudget = (available * s.curatorsBps) / BPS;
        uint256 contributorsBudget = available - protocolAmount - ownerAmount - curatorsBudget;
        if (a.protocolAmount != protocolAmount) revert SplitMismatch("protocol", a.protocolAmount, protocolAmount);
        if (a.ownerAmount != ownerAmount) revert SplitMismatch("owner", a.ownerAmount, ownerAmount);
        if (a.curatorsTotal > curatorsBudget) revert SplitMismatch("curators", a.curatorsTotal, curatorsBudget);
        if (a.contributorsTotal > contributorsBudget) {
            revert SplitMismatch("contributors", a.contributorsTotal, contributorsBudget);
        }
        dust = (curatorsBudget - a.curatorsTotal) + (contributorsBudget - a.contributorsTotal);
    }

    function _claim(Claim calldata c) private {
        Epoch storage e = epochs[c.modelId][c.epoch];
        if (e.payoutRoot == bytes32(0)) revert UnknownEpoch(c.modelId, c.epoch);
        if (claimed[c.modelId][c.epoch][c.account]) revert AlreadyClaimed(c.modelId, c.epoch, c.account);
        bytes32 leaf = keccak256(bytes.concat(keccak256(abi.encode(c.account, c.amount))));
        if (!MerkleProof.verifyCalldata(c.proof, e.payoutRoot, leaf)) revert InvalidProof(c.modelId, c.epoch, c.account);
        uint256 total = e.claimed + c.amount;
        if (total > e.claimCap) revert ClaimCapExceeded(c.modelId, c.epoch);
        e.claimed = total;
        claimed[c.modelId][c.epoch][c.account] = true;
        emit Claimed(c.modelId, c.epoch, c.account, c.amount);
    }

    function _checkSplit(Split memory s) private pure {
        if (uint256(s.protocolBps) + s.ownerBps + s.curatorsBps + s.contributorsBps != BPS) revert BadSplit();
    }
}
