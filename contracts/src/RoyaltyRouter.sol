// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {AgentRegistry} from "./AgentRegistry.sol";
import {UsageEscrow} from "./UsageEscrow.sol";

/// @title RoyaltyRouter
/// @notice Routes an agent's declared royalty share of an action's earnings back to the models
/// whose calls the action relied on. Each model's amount enters its unsettled fees in the escrow
/// as a charge with the next sequence number (`UsageEscrow.payFees`), so it is settled, split by
/// the epoch's aggregate attribution, and claimed exactly like call fees. One routing per
/// (agent, action): the action hash is the agent's signed action receipt's hash.
contract RoyaltyRouter is ReentrancyGuard {
    using SafeERC20 for IERC20;

    /// @notice The fee token.
    IERC20 public immutable token;
    /// @notice The escrow holding the models' fees.
    UsageEscrow public immutable escrow;
    /// @notice The ERC-8004 agent registry (who may route for an agent).
    AgentRegistry public immutable agents;

    /// @notice Whether an agent already routed the royalty of an action.
    mapping(uint256 agentId => mapping(bytes32 actionHash => bool)) public routed;

    /// @notice `amount` of agent `agentId`'s action `actionHash` entered model `modelId`'s fees as charge `seq`.
    event RoyaltyRouted(
        uint256 indexed agentId, uint256 indexed modelId, uint64 indexed seq, uint256 amount, bytes32 actionHash
    );

    /// @notice A zero address was given.
    error ZeroAddress();
    /// @notice The escrow pays in another token.
    error TokenMismatch(address escrowToken, address token);
    /// @notice The caller is not the agent's owner, operator or agent wallet.
    error NotAgentActor(uint256 agentId, address caller);
    /// @notice modelIds and amounts differ in length, or are empty.
    error BadLengths(uint256 models, uint256 amounts);
    /// @notice The action's royalty was already routed.
    error AlreadyRouted(uint256 agentId, bytes32 actionHash);

    /// @param token_ the fee token
    /// @param escrow_ the usage escrow (its token must be `token_`)
    /// @param agents_ the agent registry
    constructor(IERC20 token_, UsageEscrow escrow_, AgentRegistry agents_) {
        if (address(token_) == address(0) || address(escrow_) == address(0) || address(agents_) == address(0)) {
            revert ZeroAddress();
        }
        if (address(escrow_.token()) != address(token_)) revert TokenMismatch(address(escrow_.token()), address(token_));
        token = token_;
        escrow = escrow_;
        agents = agents_;
        token_.forceApprove(address(escrow_), type(uint256).max);
    }

    /// @notice Pull sum(amounts) from the caller and credit each model its amount as a charge.
    /// The caller must be the agent's owner, its operator or its agent wallet (per the registry)
    /// and must have approved this contract.
    /// @param agentId the agent (ERC-8004 id)
    /// @param modelIds the models credited (each must exist)
    /// @param amounts the tokens, in wei, per model (each > 0)
    /// @param actionHash the hash of the earning action's receipt
    /// @return seqs the charge sequence number given to each model's credit
    function routeRoyalty(uint256 agentId, uint256[] calldata modelIds, uint256[] calldata amounts, bytes32 actionHash)
        external
        nonReentrant
        returns (uint64[] memory seqs)
    {
        if (modelIds.length != amounts.length || modelIds.length == 0) {
            revert BadLengths(modelIds.length, amounts.length);
        }
        if (!_isActor(agentId, msg.sender)) revert NotAgentActor(agentId, msg.sender);
        if (routed[agentId][actionHash]) revert AlreadyRouted(agentId, actionHash);
        routed[agentId][actionHash] = true;
        uint256 total = 0;
        for (uint256 i = 0; i < amounts.length; i++) {
            total += amounts[i];
        }
        token.safeTransferFrom(msg.sender, address(this), total);
        seqs = new uint64[](modelIds.length);
        for (uint256 i = 0; i < modelIds.length; i++) {
            // payFees refuses unknown models and zero amounts, reverting the whole routing.
            seqs[i] = escrow.payFees(modelIds[i], amounts[i]);
            emit RoyaltyRouted(agentId, modelIds[i], seqs[i], amounts[i], actionHash);
        }
    }

    /// @notice Whether `account` may route royalties for `agentId` (owner, operator or agent wallet).
    /// @param agentId the agent
    /// @param account the would-be caller
    function isActor(uint256 agentId, address account) external view returns (bool) {
        return _isActor(agentId, account);
    }

    function _isActor(uint256 agentId, address account) private view returns (bool) {
        if (!agents.exists(agentId)) return false;
        return account == agents.ownerOf(agentId) || account == agents.operatorOf(agentId)
            || account == agents.getAgentWallet(agentId);
    }
}
