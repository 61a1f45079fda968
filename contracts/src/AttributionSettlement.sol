// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {AccessControlEnumerable} from "@openzeppelin/contracts/access/extensions/AccessControlEnumerable.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {ModelRegistry} from "./ModelRegistry.sol";
import {UsageEscrow} from "./UsageEscrow.sol";

/// @title AttributionSettlement
/// @notice Settles a model's escrowed fees epoch by epoch on the word of a quorum of
/// registered attributors. Each settlement releases the model's fees up to a charge sequence
/// number from the escrow, splits them by the on-chain basis-point split (protocol / model
/// owner / curators / contributors), pays the protocol and owner shares, and records a Merkle
/// root of (index, account, amount) allocations for curators and contributors, who claim with
/// a proof (pull). What the signed totals leave of the curators' and contributors' budgets is
/// carried to the model's next epoch, never lost.
/// @dev Gas layout (measured in contracts/test/Gas.t.sol): claims are recorded in a bitmap keyed
/// by leaf index (256 claims per storage slot, as Uniswap's MerkleDistributor does); an epoch
/// is one slot holding the first 20 bytes of its payout root and what is left to claim of its
/// signed totals (so a root whose leaves promise more can never pay out other epochs' tokens);
/// a model's last epoch and carried dust share one slot. A 160-bit root commitment keeps claims
/// unforgeable: a claim the quorum did not sign needs a second preimage of it (2^160 work);
/// collisions (2^80) would only help whoever builds the tree, i.e. the quorum that decides the
/// allocations anyway. The full root is in the EpochSettled event and the signed attestation.
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

    /// @dev One storage slot per model. uint96 holds 79 billion tokens of 18 decimals, far
    /// above the fixed supply; SafeCast reverts rather than truncate.
    struct ModelBook {
        uint64 lastEpoch;
        uint96 carriedDust;
    }

    /// @dev One storage slot per settled epoch: the payout root's first 20 bytes and what is
    /// left to claim of the epoch's curators' and contributors' totals.
    struct EpochBook {
        bytes20 rootPrefix;
        uint96 unclaimed;
    }

    struct Claim {
        uint256 modelId;
        uint64 epoch;
        uint256 index;
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

    mapping(uint256 modelId => ModelBook) private _books;
    mapping(uint256 modelId => mapping(uint64 epoch => EpochBook)) public epochs;
    mapping(uint256 modelId => mapping(uint64 epoch => mapping(uint256 word => uint256))) private _claimedBits;

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
    error AlreadyClaimed(uint256 modelId, uint64 epoch, uint256 index);
    error InvalidProof(uint256 modelId, uint64 epoch, address account);
    error ClaimCapExceeded(uint256 modelId, uint64 epoch);
    error MixedAccounts(uint256 index, address account, address expected);

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
        ModelBook memory book = _books[a.modelId];
        if (a.epoch != book.lastEpoch + 1) revert EpochOutOfOrder(a.epoch, book.lastEpoch + 1);
        _checkSignatures(attestationDigest(a), signatures);
        uint256 cap = a.curatorsTotal + a.contributorsTotal;
        if (bytes20(a.payoutRoot) == bytes20(0) && cap != 0) revert EmptyRoot();

        // Checks-effects-interactions: the signed fee total must be what the escrow releases plus
        // the dust carried in; record the epoch first, then pull the fees (the escrow reverts on
        // a wrong sequence, and a release that differs from the signed total reverts it all).
        if (a.feeTotal < book.carriedDust) revert FeeMismatch(a.feeTotal, book.carriedDust);
        uint256 expectedRelease = a.feeTotal - book.carriedDust;
        uint256 dust = _checkSplitAmounts(a);
        _books[a.modelId] = ModelBook({lastEpoch: a.epoch, carriedDust: SafeCast.toUint96(dust)});
        epochs[a.modelId][a.epoch] = EpochBook({rootPrefix: bytes20(a.payoutRoot), unclaimed: SafeCast.toUint96(cap)});
        emit EpochSettled(a.modelId, a.epoch, a.uptoSeq, a.payoutRoot, cap, a.resultsCid);
        emit EpochSplit(
            a.modelId, a.epoch, a.feeTotal, a.protocolAmount, a.ownerAmount, a.curatorsTotal, a.contributorsTotal, dust
        );

        uint256 pulled = escrow.release(a.modelId, a.uptoSeq);
        if (pulled != expectedRelease) revert FeeMismatch(a.feeTotal, pulled + book.carriedDust);
        if (a.protocolAmount > 0) token.safeTransfer(protocolTreasury, a.protocolAmount);
        if (a.ownerAmount > 0) token.safeTransfer(models.ownerOf(a.modelId), a.ownerAmount);
    }

    /// @notice Claim one allocation with its Merkle proof; the tokens go to `c.account`.
    /// @param c the model, epoch, leaf index, account, amount and proof
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
            Claim calldata c = claims[i];
            if (c.account != account) revert MixedAccounts(i, c.account, account);
            _claim(c);
            total += c.amount;
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

    /// @notice The last settled epoch of a model (0 before the first).
    /// @param modelId the model
    function lastEpoch(uint256 modelId) external view returns (uint64) {
        return _books[modelId].lastEpoch;
    }

    /// @notice What the signed totals left of a model's curators' and contributors' budgets,
    /// carried into its next epoch's fee total.
    /// @param modelId the model
    function carriedDust(uint256 modelId) external view returns (uint256) {
        return _books[modelId].carriedDust;
    }

    /// @notice Whether the leaf at `index` of an epoch's payout tree has been claimed.
    /// @param modelId the model
    /// @param epoch the epoch
    /// @param index the leaf's index in the payout tree
    function isClaimed(uint256 modelId, uint64 epoch, uint256 index) public view returns (bool) {
        uint256 bit = 1 << (index & 0xff);
        return _claimedBits[modelId][epoch][index >> 8] & bit != 0;
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

    function _checkSplitAmounts(Attestation calldata a) private view returns (uint256 dust) {
        uint256 available = a.feeTotal;
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

    /// @dev Verifies one claim, marks its leaf and takes its amount off the epoch's unclaimed.
    function _claim(Claim calldata c) private {
        EpochBook memory e = epochs[c.modelId][c.epoch];
        if (e.rootPrefix == bytes20(0)) revert UnknownEpoch(c.modelId, c.epoch);
        mapping(uint256 word => uint256) storage bits = _claimedBits[c.modelId][c.epoch];
        uint256 word = bits[c.index >> 8];
        uint256 bit = 1 << (c.index & 0xff);
        if (word & bit != 0) revert AlreadyClaimed(c.modelId, c.epoch, c.index);
        bytes32 leaf = keccak256(bytes.concat(keccak256(abi.encode(c.index, c.account, c.amount))));
        if (bytes20(MerkleProof.processProofCalldata(c.proof, leaf)) != e.rootPrefix) {
            revert InvalidProof(c.modelId, c.epoch, c.account);
        }
        if (c.amount > e.unclaimed) revert ClaimCapExceeded(c.modelId, c.epoch);
        bits[c.index >> 8] = word | bit;
        // c.amount <= e.unclaimed, a uint96, so the cast cannot truncate.
        // forge-lint: disable-next-line(unsafe-typecast)
        epochs[c.modelId][c.epoch].unclaimed = e.unclaimed - uint96(c.amount);
        emit Claimed(c.modelId, c.epoch, c.account, c.amount);
    }

    function _checkSplit(Split memory s) private pure {
        if (uint256(s.protocolBps) + s.ownerBps + s.curatorsBps + s.contributorsBps != BPS) revert BadSplit();
    }
}
