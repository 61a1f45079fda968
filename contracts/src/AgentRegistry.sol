// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {ERC721} from "@openzeppelin/contracts/token/ERC721/ERC721.sol";
import {ERC721URIStorage} from "@openzeppelin/contracts/token/ERC721/extensions/ERC721URIStorage.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";

/// @title AgentRegistry
/// @notice Provenant's agent identities, implementing the ERC-8004 ("Trustless Agents") Identity
/// Registry interface: each agent is an ERC-721 token whose id is the agent id and whose tokenURI
/// (the "agentURI") points at the agent's registration file in the content store (`ipfs://<cid>`),
/// holding its endpoints and its operator address.
/// @dev Beyond ERC-8004, each agent has an **operator**: the key that signs the agent's action
/// receipts. Verifiers read it from here (never from a request or a receipt field). Only the
/// agent's owner (the token holder) sets or changes it; a transfer of the agent clears both the
/// operator and the agent wallet, so a previous owner's keys cannot act for the new owner.
/// As in ERC-8004, the agent wallet starts as the registering address and lives in the reserved
/// metadata key "agentWallet" (abi.encodePacked(address)); the operator is mirrored the same way
/// under the reserved key "operator", so generic ERC-8004 readers see both through getMetadata.
contract AgentRegistry is ERC721URIStorage, EIP712 {
    /// @notice An on-chain metadata entry (ERC-8004 `MetadataEntry`).
    struct MetadataEntry {
        string metadataKey;
        bytes metadataValue;
    }

    /// @dev The agent wallet's proof of control (ERC-8004 `setAgentWallet`).
    bytes32 public constant AGENT_WALLET_SET_TYPEHASH =
        keccak256("AgentWalletSet(uint256 agentId,address newWallet,address owner,uint256 deadline)");
    /// @dev Reserved metadata keys: written only through their own functions.
    bytes32 private constant _WALLET_KEY = keccak256("agentWallet");
    bytes32 private constant _OPERATOR_KEY = keccak256("operator");
    /// @dev How far ahead an agent-wallet signature may be dated.
    uint256 public constant MAX_DEADLINE_DELAY = 1 days;

    /// @notice Number of agents ever registered; ids run from 1 to agentCount.
    uint256 public agentCount;

    mapping(uint256 agentId => mapping(string metadataKey => bytes)) private _metadata;
    mapping(uint256 agentId => address) private _operators;

    /// @notice ERC-8004: a new agent was minted to `owner` with `agentURI`.
    event Registered(uint256 indexed agentId, string agentURI, address indexed owner);
    /// @notice ERC-8004: the agent's registration file moved to `newURI`.
    event URIUpdated(uint256 indexed agentId, string newURI, address indexed updatedBy);
    /// @notice ERC-8004: an on-chain metadata entry was written.
    event MetadataSet(
        uint256 indexed agentId, string indexed indexedMetadataKey, string metadataKey, bytes metadataValue
    );
    /// @notice The key that signs the agent's action receipts changed (zero: none, the agent cannot act).
    event OperatorSet(uint256 indexed agentId, address indexed previousOperator, address indexed newOperator);

    /// @notice The caller is not the agent's owner.
    error NotAgentOwner(uint256 agentId, address caller);
    /// @notice A reserved metadata key ("agentWallet", "operator") was written through setMetadata.
    error ReservedMetadataKey(string metadataKey);
    /// @notice The agent URI is empty.
    error EmptyAgentURI();
    /// @notice A zero address was given where a key is required.
    error ZeroAddress();
    /// @notice The wallet signature's deadline has passed or is too far ahead.
    error BadDeadline(uint256 deadline);
    /// @notice The wallet signature does not come from `newWallet`.
    error InvalidWalletSignature(address newWallet);

    constructor() ERC721("Provenant Agent", "AGENT") EIP712("Provenant AgentRegistry", "1") {}

    // ------------------------------------------------------------------ registration

    /// @notice ERC-8004: register an agent with no URI yet (set it later with setAgentURI).
    function register() external returns (uint256 agentId) {
        agentId = _mintAgent("");
    }

    /// @notice ERC-8004: register an agent whose registration file is at `agentURI`.
    function register(string calldata agentURI) external returns (uint256 agentId) {
        if (bytes(agentURI).length == 0) revert EmptyAgentURI();
        agentId = _mintAgent(agentURI);
    }

    /// @notice ERC-8004: register an agent with its URI and on-chain metadata entries.
    function register(string calldata agentURI, MetadataEntry[] calldata metadata)
        external
        returns (uint256 agentId)
    {
        if (bytes(agentURI).length == 0) revert EmptyAgentURI();
        agentId = _mintAgent(agentURI);
        for (uint256 i = 0; i < metadata.length; ++i) {
            _setMetadata(agentId, metadata[i].metadataKey, metadata[i].metadataValue);
        }
    }

    /// @notice Register an agent and name its operator (the receipt-signing key) in one call.
    /// @param agentURI the registration file's URI (`ipfs://<cid>`); it lists the same operator.
    /// @param operator the key that signs the agent's action receipts.
    function registerAgent(string calldata agentURI, address operator) external returns (uint256 agentId) {
        if (bytes(agentURI).length == 0) revert EmptyAgentURI();
        if (operator == address(0)) revert ZeroAddress();
        agentId = _mintAgent(agentURI);
        _setOperator(agentId, operator);
    }

    /// @notice ERC-8004: point the agent at a new registration file (owner only).
    function setAgentURI(uint256 agentId, string calldata newURI) external {
        _checkOwner(agentId);
        if (bytes(newURI).length == 0) revert EmptyAgentURI();
        _setTokenURI(agentId, newURI);
        emit URIUpdated(agentId, newURI, msg.sender);
    }

    // ------------------------------------------------------------------ metadata

    /// @notice ERC-8004: read an on-chain metadata entry (empty when unset).
    function getMetadata(uint256 agentId, string calldata metadataKey) external view returns (bytes memory) {
        _requireOwned(agentId);
        return _metadata[agentId][metadataKey];
    }

    /// @notice ERC-8004: write an on-chain metadata entry (owner only; reserved keys refused).
    function setMetadata(uint256 agentId, string calldata metadataKey, bytes calldata metadataValue) external {
        _checkOwner(agentId);
        _setMetadata(agentId, metadataKey, metadataValue);
    }

    // ------------------------------------------------------------------ agent wallet (ERC-8004)

    /// @notice ERC-8004: the agent's payment wallet (zero when unset).
    function getAgentWallet(uint256 agentId) external view returns (address) {
        _requireOwned(agentId);
        return address(bytes20(_metadata[agentId]["agentWallet"]));
    }

    /// @notice ERC-8004: set the agent's payment wallet, proven by `newWallet`'s EIP-712 signature
    /// (or ERC-1271 for contract wallets) over (agentId, newWallet, owner, deadline).
    function setAgentWallet(uint256 agentId, address newWallet, uint256 deadline, bytes calldata signature)
        external
    {
        address owner = _checkOwner(agentId);
        if (newWallet == address(0)) revert ZeroAddress();
        if (block.timestamp > deadline || deadline > block.timestamp + MAX_DEADLINE_DELAY) {
            revert BadDeadline(deadline);
        }
        bytes32 digest = walletDigest(agentId, newWallet, owner, deadline);
        if (!SignatureChecker.isValidSignatureNow(newWallet, digest, signature)) {
            revert InvalidWalletSignature(newWallet);
        }
        _setWallet(agentId, newWallet);
    }

    /// @notice ERC-8004: clear the agent's payment wallet (owner only).
    function unsetAgentWallet(uint256 agentId) external {
        _checkOwner(agentId);
        _setWallet(agentId, address(0));
    }

    /// @notice The EIP-712 digest `newWallet` signs to accept being the agent's wallet.
    function walletDigest(uint256 agentId, address newWallet, address owner, uint256 deadline)
        public
        view
        returns (bytes32)
    {
        return _hashTypedDataV4(keccak256(abi.encode(AGENT_WALLET_SET_TYPEHASH, agentId, newWallet, owner, deadline)));
    }

    // ------------------------------------------------------------------ operator (Provenant)

    /// @notice The key that signs the agent's action receipts (zero: none).
    function operatorOf(uint256 agentId) external view returns (address) {
        _requireOwned(agentId);
        return _operators[agentId];
    }

    /// @notice Set or change the agent's operator (owner only); zero revokes it.
    function setOperator(uint256 agentId, address newOperator) external {
        _checkOwner(agentId);
        _setOperator(agentId, newOperator);
    }

    /// @notice Whether agent `agentId` exists.
    function exists(uint256 agentId) external view returns (bool) {
        return _ownerOf(agentId) != address(0);
    }

    // ------------------------------------------------------------------ internals

    function _mintAgent(string memory agentURI) private returns (uint256 agentId) {
        agentId = ++agentCount;
        _mint(msg.sender, agentId);
        if (bytes(agentURI).length != 0) _setTokenURI(agentId, agentURI);
        emit Registered(agentId, agentURI, msg.sender);
        _setWallet(agentId, msg.sender);
    }

    function _checkOwner(uint256 agentId) private view returns (address owner) {
        owner = _requireOwned(agentId);
        if (owner != msg.sender) revert NotAgentOwner(agentId, msg.sender);
    }

    function _setMetadata(uint256 agentId, string calldata key, bytes calldata value) private {
        bytes32 keyHash = keccak256(bytes(key));
        if (keyHash == _WALLET_KEY || keyHash == _OPERATOR_KEY) revert ReservedMetadataKey(key);
        _metadata[agentId][key] = value;
        emit MetadataSet(agentId, key, key, value);
    }

    function _setWallet(uint256 agentId, address wallet) private {
        _setReserved(agentId, "agentWallet", wallet);
    }

    function _setOperator(uint256 agentId, address operator) private {
        address previous = _operators[agentId];
        _operators[agentId] = operator;
        _setReserved(agentId, "operator", operator);
        emit OperatorSet(agentId, previous, operator);
    }

    /// @dev A reserved key holds abi.encodePacked(address), or nothing when the address is zero.
    function _setReserved(uint256 agentId, string memory key, address value) private {
        bytes memory packed = value == address(0) ? bytes("") : abi.encodePacked(value);
        _metadata[agentId][key] = packed;
        emit MetadataSet(agentId, key, key, packed);
    }

    /// @dev On a transfer between holders, clear the operator and the wallet (ERC-8004 clears the
    /// wallet on transfer; the operator follows the same reasoning: it was the old owner's key).
    function _update(address to, uint256 tokenId, address auth) internal override returns (address from) {
        from = super._update(to, tokenId, auth);
        if (from != address(0) && to != address(0)) {
            if (_metadata[tokenId]["agentWallet"].length != 0) _setWallet(tokenId, address(0));
            if (_operators[tokenId] != address(0)) _setOperator(tokenId, address(0));
        }
    }
}
