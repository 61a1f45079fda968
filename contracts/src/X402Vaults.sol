// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC3009} from "@openzeppelin/contracts/interfaces/draft-IERC3009.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Create2} from "@openzeppelin/contracts/utils/Create2.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {ModelVault} from "./ModelVault.sol";
import {ModelRegistry} from "./ModelRegistry.sol";
import {UsageEscrow} from "./UsageEscrow.sol";

/// @title X402Vaults
/// @notice x402 "exact" payments into the models' escrowed fees. The official x402 client signs
/// an EIP-3009 `transferWithAuthorization` to `payTo` with a random nonce, and anyone may submit
/// it; so the model is bound by `payTo`: each model has its own vault, a ModelVault at the
/// CREATE2 address `vaultOf(modelId)`. Two ways in, both ending in `UsageEscrow.payFees` (one
/// charge sequence number each, settled like voucher charges):
/// - `chargeX402` (the model's server, after answering): submits the authorization to the vault,
///   checks the vault's balance rose by exactly the authorized value in this very call, and
///   credits that amount, naming the payer and nonce so settlement can tie the charge to the
///   logged call. An authorization is never credited from its signed fields alone: EIP-3009
///   records only (authorizer, nonce), so the credit is the measured transfer.
/// - `sweep` (anyone): credits whatever the vault holds otherwise (an authorization someone else
///   submitted directly, plain transfers) as a direct fee payment, split by the epoch's calls.
contract X402Vaults is ReentrancyGuard {
    using SafeERC20 for IERC20;

    /// @notice An EIP-3009 TransferWithAuthorization to the model's vault, as the payer signed it.
    struct Authorization {
        address from;
        uint256 value;
        uint256 validAfter;
        uint256 validBefore;
        bytes32 nonce;
        uint8 v;
        bytes32 r;
        bytes32 s;
    }

    /// @notice The fee token (EIP-3009).
    IERC20 public immutable token;
    /// @notice The escrow whose model fees the vaults pay into.
    UsageEscrow public immutable escrow;
    /// @notice The model registry (servers and existence).
    ModelRegistry public immutable models;
    /// @notice keccak256 of ModelVault's creation code (the CREATE2 init code hash).
    bytes32 public immutable vaultCodeHash;

    /// @notice The vault of `modelId` was deployed at `vault`.
    event VaultCreated(uint256 indexed modelId, address vault);
    /// @notice An x402 payment by `payer` (EIP-3009 `nonce`) entered model `modelId`'s fees as charge `seq`.
    event X402Charged(uint256 indexed modelId, address indexed payer, uint64 indexed seq, uint256 amount, bytes32 nonce);
    /// @notice The vault's other holdings entered model `modelId`'s fees as charge `seq`.
    event VaultSwept(uint256 indexed modelId, address indexed vault, uint64 indexed seq, uint256 amount);

    /// @notice A zero address was given.
    error ZeroAddress();
    /// @notice The escrow pays in another token.
    error TokenMismatch(address escrowToken, address token);
    /// @notice No such model.
    error UnknownModel(uint256 modelId);
    /// @notice The caller is not the model's registered server.
    error NotModelServer(uint256 modelId, address caller);
    /// @notice The authorization moves nothing.
    error ZeroAmount();
    /// @notice The vault holds nothing to sweep.
    error NothingToSweep(uint256 modelId);
    /// @notice The vault received another amount than the authorization's value.
    error TransferMismatch(uint256 expected, uint256 received);

    /// @param token_ the fee token (must support EIP-3009 transferWithAuthorization)
    /// @param escrow_ the usage escrow (its token must be `token_`)
    constructor(IERC20 token_, UsageEscrow escrow_) {
        if (address(token_) == address(0) || address(escrow_) == address(0)) revert ZeroAddress();
        if (address(escrow_.token()) != address(token_)) revert TokenMismatch(address(escrow_.token()), address(token_));
        token = token_;
        escrow = escrow_;
        models = escrow_.models();
        vaultCodeHash = keccak256(type(ModelVault).creationCode);
        token_.forceApprove(address(escrow_), type(uint256).max);
    }

    /// @notice The x402 `payTo` address of a model (deployed or not yet).
    /// @param modelId the model
    function vaultOf(uint256 modelId) public view returns (address) {
        return Create2.computeAddress(bytes32(modelId), vaultCodeHash);
    }

    /// @notice Deploy a model's vault (idempotent; `chargeX402` and `sweep` deploy it on demand).
    /// @param modelId the model
    /// @return vault the vault's address
    function createVault(uint256 modelId) external returns (address vault) {
        if (!models.exists(modelId)) revert UnknownModel(modelId);
        return _vault(modelId);
    }

    /// @notice Submit an x402 payment to model `modelId`'s vault and credit it to the model's fees;
    /// only the model's registered server (which logs the call the payment paid for).
    /// @param modelId the model paid
    /// @param a the payer's signed EIP-3009 authorization (its `to` is `vaultOf(modelId)`)
    /// @return seq the charge sequence number of this payment
    function chargeX402(uint256 modelId, Authorization calldata a) external nonReentrant returns (uint64 seq) {
        (, address server) = models.ownerAndServerOf(modelId);
        if (msg.sender != server) revert NotModelServer(modelId, msg.sender);
        if (a.value == 0) revert ZeroAmount();
        address vault = _vault(modelId);
        uint256 before = token.balanceOf(vault);
        IERC3009(address(token)).transferWithAuthorization(
            a.from, vault, a.value, a.validAfter, a.validBefore, a.nonce, a.v, a.r, a.s
        );
        uint256 received = token.balanceOf(vault) - before;
        if (received != a.value) revert TransferMismatch(a.value, received);
        seq = _credit(modelId, vault, received);
        emit X402Charged(modelId, a.from, seq, received, a.nonce);
    }

    /// @notice Credit everything a model's vault holds to the model's fees (anyone may call).
    /// @param modelId the model
    /// @return seq the charge sequence number of the sweep
    function sweep(uint256 modelId) external nonReentrant returns (uint64 seq) {
        if (!models.exists(modelId)) revert UnknownModel(modelId);
        address vault = vaultOf(modelId);
        uint256 amount = token.balanceOf(vault);
        if (amount == 0) revert NothingToSweep(modelId);
        _vault(modelId);
        seq = _credit(modelId, vault, amount);
        emit VaultSwept(modelId, vault, seq, amount);
    }

    function _vault(uint256 modelId) private returns (address vault) {
        vault = vaultOf(modelId);
        if (vault.code.length == 0) {
            vault = address(new ModelVault{salt: bytes32(modelId)}());
            emit VaultCreated(modelId, vault);
        }
    }

    /// @dev Vault -> this contract -> the escrow's fees (payFees pulls with the standing approval).
    function _credit(uint256 modelId, address vault, uint256 amount) private returns (uint64 seq) {
        ModelVault(vault).pull(token, amount);
        seq = escrow.payFees(modelId, amount);
    }
}
