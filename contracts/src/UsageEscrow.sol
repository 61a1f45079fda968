// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Permit.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {ModelRegistry} from "./ModelRegistry.sol";

/// @title UsageEscrow
/// @notice Holds consumers' deposits per model and the models' unsettled fees.
/// A model's registered server charges calls in batches with consumer-signed EIP-712
/// vouchers that carry a cumulative amount (a payment channel: never more than the consumer
/// signed, one on-chain charge per batch). Every charge moves tokens from a deposit into the
/// model's unsettled fees under an increasing charge sequence number; the settlement
/// contract releases a model's fees up to a named sequence number, epoch by epoch.
/// A voucher is also a spending cap: `chargeUpTo` moves the consumer's spent total to any amount
/// up to the voucher's cumulative amount, so one voucher signed up front backs many concurrent
/// calls (an API key) and the server charges only what it answered.
contract UsageEscrow is AccessControl, Pausable, EIP712 {
    using SafeERC20 for IERC20;

    struct Voucher {
        address consumer;
        uint256 modelId;
        uint256 cumulativeAmount;
        uint256 deadline;
    }

    bytes32 public constant PAUSER_ROLE = keccak256("PAUSER_ROLE");
    bytes32 public constant VOUCHER_TYPEHASH =
        keccak256("Voucher(address consumer,uint256 modelId,uint256 cumulativeAmount,uint256 deadline)");

    IERC20 public immutable token;
    ModelRegistry public immutable models;
    uint256 public immutable withdrawDelay;
    address public settlement;

    mapping(address consumer => mapping(uint256 modelId => uint256)) public depositOf;
    mapping(address consumer => mapping(uint256 modelId => uint256)) public spentOf;
    mapping(address consumer => mapping(uint256 modelId => uint256)) public withdrawableAt;
    /// @dev Both sequence numbers of a model in one slot: a release reads and writes one slot.
    /// A model's unsettled fees are not stored: they are cumulativeFeesAt(chargeSeq) minus
    /// cumulativeFeesAt(settledSeq), which saves a write on every charge and every release.
    struct Seqs {
        uint64 chargeSeq;
        uint64 settledSeq;
    }

    mapping(uint256 modelId => Seqs) private _seqs;
    mapping(uint256 modelId => mapping(uint64 seq => uint256)) public cumulativeFeesAt;

    event SettlementSet(address settlement);
    event Deposited(address indexed consumer, uint256 indexed modelId, uint256 amount);
    event WithdrawalRequested(address indexed consumer, uint256 indexed modelId, uint256 withdrawableAt);
    event Withdrawn(address indexed consumer, uint256 indexed modelId, uint256 amount);
    event Charged(
        uint256 indexed modelId, address indexed consumer, uint64 indexed seq, uint256 amount, uint256 cumulativeAmount
    );
    event FeesPaid(uint256 indexed modelId, address indexed payer, uint64 indexed seq, uint256 amount);
    event FeesReleased(uint256 indexed modelId, uint64 fromSeq, uint64 toSeq, uint256 amount);

    error ZeroAddress();
    error ZeroAmount();
    error SettlementAlreadySet();
    error NotSettlement(address caller);
    error NotModelServer(uint256 modelId, address caller);
    error UnknownModel(uint256 modelId);
    error LengthMismatch();
    error VoucherForOtherModel(uint256 index, uint256 modelId);
    error VoucherExpired(uint256 index, uint256 deadline);
    error VoucherBadSignature(uint256 index, address signer, address consumer);
    error VoucherNotIncreasing(uint256 index, uint256 cumulativeAmount, uint256 spent);
    error AmountAboveVoucher(uint256 index, uint256 amount, uint256 cumulativeAmount);
    error InsufficientDeposit(address consumer, uint256 modelId, uint256 needed, uint256 available);
    error WithdrawalNotReady(uint256 withdrawableAt);
    error BadSeq(uint64 uptoSeq, uint64 settledSeq, uint64 chargeSeq);

    /// @param token_ the fee token
    /// @param models_ the model registry (servers are read from it)
    /// @param withdrawDelay_ seconds between a withdrawal request and the withdrawal
    /// @param admin receives DEFAULT_ADMIN_ROLE and PAUSER_ROLE
    constructor(IERC20 token_, ModelRegistry models_, uint256 withdrawDelay_, address admin)
        EIP712("Provenant UsageEscrow", "1")
    {
        if (address(token_) == address(0) || address(models_) == address(0) || admin == address(0)) {
            revert ZeroAddress();
        }
        token = token_;
        models = models_;
        withdrawDelay = withdrawDelay_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(PAUSER_ROLE, admin);
    }

    /// @notice Set, once, the settlement contract allowed to release fees.
    /// @param settlement_ the AttributionSettlement contract
    function setSettlement(address settlement_) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (settlement_ == address(0)) revert ZeroAddress();
        if (settlement != address(0)) revert SettlementAlreadySet();
        settlement = settlement_;
        emit SettlementSet(settlement_);
    }

    /// @notice Deposit tokens for calls to a model (approve this contract first).
    /// @param modelId the model the deposit pays for
    /// @param amount tokens, in wei
    function deposit(uint256 modelId, uint256 amount) external whenNotPaused {
        _deposit(modelId, amount);
    }

    /// @notice Deposit with an EIP-2612 permit instead of a prior approve transaction.
    /// @param modelId the model the deposit pays for
    /// @param amount tokens, in wei (also the permit's value)
    /// @param deadline the permit's deadline
    /// @param v permit signature v
    /// @param r permit signature r
    /// @param s permit signature s
    function depositWithPermit(uint256 modelId, uint256 amount, uint256 deadline, uint8 v, bytes32 r, bytes32 s)
        external
        whenNotPaused
    {
        // A front-run permit is harmless: the allowance then already exists.
        try IERC20Permit(address(token)).permit(msg.sender, address(this), amount, deadline, v, r, s) {} catch {}
        _deposit(modelId, amount);
    }

    /// @notice Charge a batch of calls to one model; only the model's registered server.
    /// Each voucher moves (cumulativeAmount - spent) from its consumer's deposit into the
    /// model's unsettled fees. The whole batch is one charge sequence number.
    /// @param modelId the model charged for
    /// @param vouchers consumer-signed cumulative vouchers
    /// @param signatures one EIP-712 signature per voucher, by its consumer
    /// @return seq the charge sequence number of this batch
    function charge(uint256 modelId, Voucher[] calldata vouchers, bytes[] calldata signatures)
        external
        whenNotPaused
        returns (uint64 seq)
    {
        (, address server) = models.ownerAndServerOf(modelId);
        if (msg.sender != server) revert NotModelServer(modelId, msg.sender);
        if (vouchers.length != signatures.length) revert LengthMismatch();
        if (vouchers.length == 0) revert ZeroAmount();
        seq = _seqs[modelId].chargeSeq + 1;
        uint256 total = 0;
        for (uint256 i = 0; i < vouchers.length; i++) {
            total += _applyVoucher(i, modelId, seq, vouchers[i], signatures[i], vouchers[i].cumulativeAmount);
        }
        _recordFees(modelId, seq, total);
    }

    /// @notice Charge a batch of calls to one model against capped vouchers; only the model's
    /// registered server. Each voucher's consumer-signed cumulative amount is a cap: the
    /// consumer's spent total moves to `amounts[i]` (at most the cap, else AmountAboveVoucher;
    /// above the spent total so far, else VoucherNotIncreasing), and (amounts[i] - spent) moves
    /// from the deposit into the model's unsettled fees.
    /// The `Charged` event carries the new spent total as its cumulativeAmount, exactly as
    /// `charge` does. The whole batch is one charge sequence number.
    /// @param modelId the model charged for
    /// @param vouchers consumer-signed vouchers whose cumulative amounts are caps
    /// @param signatures one EIP-712 signature per voucher, by its consumer
    /// @param amounts the consumer's new spent total per voucher (<= its cumulativeAmount)
    /// @return seq the charge sequence number of this batch
    function chargeUpTo(
        uint256 modelId,
        Voucher[] calldata vouchers,
        bytes[] calldata signatures,
        uint256[] calldata amounts
    ) external whenNotPaused returns (uint64 seq) {
        (, address server) = models.ownerAndServerOf(modelId);
        if (msg.sender != server) revert NotModelServer(modelId, msg.sender);
        if (vouchers.length != signatures.length || vouchers.length != amounts.length) revert LengthMismatch();
        if (vouchers.length == 0) revert ZeroAmount();
        seq = _seqs[modelId].chargeSeq + 1;
        uint256 total = 0;
        for (uint256 i = 0; i < vouchers.length; i++) {
            if (amounts[i] > vouchers[i].cumulativeAmount) {
                revert AmountAboveVoucher(i, amounts[i], vouchers[i].cumulativeAmount);
            }
            total += _applyVoucher(i, modelId, seq, vouchers[i], signatures[i], amounts[i]);
        }
        _recordFees(modelId, seq, total);
    }

    /// @notice Pay tokens straight into a model's unsettled fees (an agent's royalty, a swept
    /// x402 vault). They settle exactly like charged calls.
    /// @param modelId the model credited
    /// @param amount tokens, in wei
    /// @return seq the charge sequence number of this payment
    function payFees(uint256 modelId, uint256 amount) external whenNotPaused returns (uint64 seq) {
        if (!models.exists(modelId)) revert UnknownModel(modelId);
        if (amount == 0) revert ZeroAmount();
        seq = _seqs[modelId].chargeSeq + 1;
        _recordFees(modelId, seq, amount);
        emit FeesPaid(modelId, msg.sender, seq, amount);
        token.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice Start the withdrawal delay for one's deposit for a model. The model's server
    /// may still charge signed vouchers until the withdrawal happens.
    /// @param modelId the model
    function requestWithdrawal(uint256 modelId) external whenNotPaused {
        uint256 at = block.timestamp + withdrawDelay;
        withdrawableAt[msg.sender][modelId] = at;
        emit WithdrawalRequested(msg.sender, modelId, at);
    }

    /// @notice Withdraw unspent deposit after the delay.
    /// @param modelId the model
    /// @param amount tokens, in wei
    function withdraw(uint256 modelId, uint256 amount) external whenNotPaused {
        uint256 at = withdrawableAt[msg.sender][modelId];
        if (at == 0 || block.timestamp < at) revert WithdrawalNotReady(at);
        uint256 available = depositOf[msg.sender][modelId];
        if (amount == 0) revert ZeroAmount();
        if (amount > available) revert InsufficientDeposit(msg.sender, modelId, amount, available);
        depositOf[msg.sender][modelId] = available - amount;
        withdrawableAt[msg.sender][modelId] = 0;
        emit Withdrawn(msg.sender, modelId, amount);
        token.safeTransfer(msg.sender, amount);
    }

    /// @notice Release a model's fees charged after the last release up to `uptoSeq` to the
    /// settlement contract; only the settlement contract.
    /// @param modelId the model
    /// @param uptoSeq the last charge sequence number included
    /// @return amount the tokens transferred to the settlement contract
    function release(uint256 modelId, uint64 uptoSeq) external whenNotPaused returns (uint256 amount) {
        if (msg.sender != settlement) revert NotSettlement(msg.sender);
        Seqs memory seqs = _seqs[modelId];
        amount = _releasable(modelId, seqs, uptoSeq);
        _seqs[modelId].settledSeq = uptoSeq;
        emit FeesReleased(modelId, seqs.settledSeq, uptoSeq, amount);
        token.safeTransfer(msg.sender, amount);
    }

    /// @notice The fees `release(modelId, uptoSeq)` would transfer now; reverts as it would.
    /// @param modelId the model
    /// @param uptoSeq the last charge sequence number included
    function releasable(uint256 modelId, uint64 uptoSeq) external view returns (uint256) {
        return _releasable(modelId, _seqs[modelId], uptoSeq);
    }

    /// @notice The number of the model's last charge (or fee payment); 0 before the first.
    /// @param modelId the model
    function chargeSeq(uint256 modelId) external view returns (uint64) {
        return _seqs[modelId].chargeSeq;
    }

    /// @notice The last charge sequence number released to the settlement contract.
    /// @param modelId the model
    function settledSeq(uint256 modelId) external view returns (uint64) {
        return _seqs[modelId].settledSeq;
    }

    /// @notice Fees charged or paid for a model and not yet released to the settlement.
    /// @param modelId the model
    function unsettledFees(uint256 modelId) external view returns (uint256) {
        Seqs memory seqs = _seqs[modelId];
        return cumulativeFeesAt[modelId][seqs.chargeSeq] - cumulativeFeesAt[modelId][seqs.settledSeq];
    }

    /// @notice Pause every token movement of the escrow.
    function pause() external onlyRole(PAUSER_ROLE) {
        _pause();
    }

    /// @notice Resume after a pause.
    function unpause() external onlyRole(PAUSER_ROLE) {
        _unpause();
    }

    /// @notice The EIP-712 digest a consumer signs for a voucher.
    /// @param v the voucher
    function voucherDigest(Voucher calldata v) public view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(abi.encode(VOUCHER_TYPEHASH, v.consumer, v.modelId, v.cumulativeAmount, v.deadline))
        );
    }

    /// @notice The EIP-712 domain separator (chain id and this contract are bound into it).
    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    function _deposit(uint256 modelId, uint256 amount) private {
        if (!models.exists(modelId)) revert UnknownModel(modelId);
        if (amount == 0) revert ZeroAmount();
        depositOf[msg.sender][modelId] += amount;
        emit Deposited(msg.sender, modelId, amount);
        token.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @dev Checks the voucher and moves the consumer's spent total up to `newSpent` (the
    /// voucher's cumulative amount, or for `chargeUpTo` an amount the caller checked is at most it).
    function _applyVoucher(
        uint256 index,
        uint256 modelId,
        uint64 seq,
        Voucher calldata v,
        bytes calldata signature,
        uint256 newSpent
    ) private returns (uint256 delta) {
        if (v.modelId != modelId) revert VoucherForOtherModel(index, v.modelId);
        if (block.timestamp > v.deadline) revert VoucherExpired(index, v.deadline);
        address signer = ECDSA.recover(voucherDigest(v), signature);
        if (signer != v.consumer) revert VoucherBadSignature(index, signer, v.consumer);
        uint256 spent = spentOf[v.consumer][modelId];
        if (newSpent <= spent) revert VoucherNotIncreasing(index, newSpent, spent);
        delta = newSpent - spent;
        uint256 available = depositOf[v.consumer][modelId];
        if (delta > available) revert InsufficientDeposit(v.consumer, modelId, delta, available);
        depositOf[v.consumer][modelId] = available - delta;
        spentOf[v.consumer][modelId] = newSpent;
        emit Charged(modelId, v.consumer, seq, delta, newSpent);
    }

    function _recordFees(uint256 modelId, uint64 seq, uint256 amount) private {
        _seqs[modelId].chargeSeq = seq;
        cumulativeFeesAt[modelId][seq] = cumulativeFeesAt[modelId][seq - 1] + amount;
    }

    function _releasable(uint256 modelId, Seqs memory seqs, uint64 uptoSeq) private view returns (uint256) {
        if (uptoSeq <= seqs.settledSeq || uptoSeq > seqs.chargeSeq) {
            revert BadSeq(uptoSeq, seqs.settledSeq, seqs.chargeSeq);
        }
        return cumulativeFeesAt[modelId][uptoSeq] - cumulativeFeesAt[modelId][seqs.settledSeq];
    }
}
