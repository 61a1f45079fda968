// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";

/// @title DatanetRegistry
/// @notice The on-chain record of Datanets (curated pools of training data) and of every
/// contribution made to them: who contributed which content (hash and IPFS CID), its size
/// and row count, and the curators' verdict. Contribution stakes are held here until the
/// contribution is approved or withdrawn (returned) or rejected (returned, or slashed to
/// the Datanet's treasury when the Datanet says so).
contract DatanetRegistry is AccessControl, Pausable {
    using SafeERC20 for IERC20;

    enum Status {
        None,
        Pending,
        Approved,
        Rejected,
        Withdrawn
    }

    struct Datanet {
        address owner;
        address treasury;
        uint256 stake;
        uint64 version;
        uint64 contributionCount;
        bool allowlisted;
        bool slashOnReject;
        string metadataCid;
        string license;
    }

    struct Contribution {
        uint256 datanetId;
        address contributor;
        bytes32 contentHash;
        uint64 size;
        uint32 rowCount;
        Status status;
        uint256 stake;
        string cid;
    }

    bytes32 public constant PAUSER_ROLE = keccak256("PAUSER_ROLE");

    IERC20 public immutable token;
    uint256 public datanetCount;
    uint256 public contributionCount;

    mapping(uint256 datanetId => Datanet) private _datanets;
    mapping(uint256 contributionId => Contribution) private _contributions;
    mapping(uint256 datanetId => mapping(address account => bool)) public isCurator;
    mapping(uint256 datanetId => mapping(address account => bool)) public isAllowedContributor;
    mapping(address contributor => uint64) public approvedCount;
    mapping(address contributor => uint64) public rejectedCount;

    event DatanetCreated(
        uint256 indexed datanetId,
        address indexed owner,
        string metadataCid,
        string license,
        address treasury,
        uint256 stake,
        bool allowlisted,
        bool slashOnReject
    );
    event CuratorSet(uint256 indexed datanetId, address indexed account, bool enabled);
    event ContributorAllowed(uint256 indexed datanetId, address indexed account, bool allowed);
    event ContributionSubmitted(
        uint256 indexed contributionId,
        uint256 indexed datanetId,
        address indexed contributor,
        bytes32 contentHash,
        string cid,
        uint64 size,
        uint32 rowCount,
        uint256 stake
    );
    event ContributionApproved(uint256 indexed contributionId, uint256 indexed datanetId, address indexed curator);
    event ContributionRejected(
        uint256 indexed contributionId, uint256 indexed datanetId, address indexed curator, uint8 reason, bool slashed
    );
    event ContributionWithdrawn(uint256 indexed contributionId, uint256 indexed datanetId);
    event DatanetVersionIncreased(uint256 indexed datanetId, uint64 version);

    error UnknownDatanet(uint256 datanetId);
    error UnknownContribution(uint256 contributionId);
    error NotCurator(uint256 datanetId, address account);
    error NotDatanetOwner(uint256 datanetId, address account);
    error NotContributor(uint256 contributionId, address account);
    error ContributorNotAllowed(uint256 datanetId, address account);
    error NotPending(uint256 contributionId, Status status);
    error NoCurators();
    error EmptyContribution();
    error EmptyCid();
    error ZeroAddress();
    error EmptyBatch();

    /// @param token_ the ERC-20 in which contribution stakes are paid
    /// @param admin receives DEFAULT_ADMIN_ROLE and PAUSER_ROLE
    constructor(IERC20 token_, address admin) {
        if (address(token_) == address(0) || admin == address(0)) revert ZeroAddress();
        token = token_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(PAUSER_ROLE, admin);
    }

    /// @notice Create a Datanet owned by the caller.
    /// @param metadataCid CID of the Datanet's metadata and rules in the content store
    /// @param license SPDX id (or URL) of the data licence
    /// @param curators accounts allowed to approve and reject contributions (at least one)
    /// @param treasury receives slashed stakes (the caller when zero)
    /// @param stake tokens a contributor locks per contribution (0 for none)
    /// @param allowlisted when true only allowed contributors may contribute
    /// @param slashOnReject when true a rejected contribution's stake goes to the treasury
    /// @return datanetId the new Datanet's id (ids start at 1)
    function createDatanet(
        string calldata metadataCid,
        string calldata license,
        address[] calldata curators,
        address treasury,
        uint256 stake,
        bool allowlisted,
        bool slashOnReject
    ) external whenNotPaused returns (uint256 datanetId) {
        if (bytes(metadataCid).length == 0) revert EmptyCid();
        if (curators.length == 0) revert NoCurators();
        datanetId = ++datanetCount;
        address treasury_ = treasury == address(0) ? msg.sender : treasury;
        Datanet storage d = _datanets[datanetId];
        d.owner = msg.sender;
        d.treasury = treasury_;
        d.stake = stake;
        d.allowlisted = allowlisted;
        d.slashOnReject = slashOnReject;
        d.metadataCid = metadataCid;
        d.license = license;
        emit DatanetCreated(datanetId, msg.sender, metadataCid, license, treasury_, stake, allowlisted, slashOnReject);
        for (uint256 i = 0; i < curators.length; i++) {
            if (curators[i] == address(0)) revert ZeroAddress();
            isCurator[datanetId][curators[i]] = true;
            emit CuratorSet(datanetId, curators[i], true);
        }
    }

    /// @notice Add or remove a curator; only the Datanet's owner.
    /// @param datanetId the Datanet
    /// @param account the curator
    /// @param enabled true to add, false to remove
    function setCurator(uint256 datanetId, address account, bool enabled) external whenNotPaused {
        _requireOwner(datanetId);
        if (account == address(0)) revert ZeroAddress();
        isCurator[datanetId][account] = enabled;
        emit CuratorSet(datanetId, account, enabled);
    }

    /// @notice Allow or disallow a contributor of an allow-listed Datanet; only the owner.
    /// @param datanetId the Datanet
    /// @param account the contributor
    /// @param allowed true to allow
    function setContributorAllowed(uint256 datanetId, address account, bool allowed) external whenNotPaused {
        _requireOwner(datanetId);
        if (account == address(0)) revert ZeroAddress();
        isAllowedContributor[datanetId][account] = allowed;
        emit ContributorAllowed(datanetId, account, allowed);
    }

    /// @notice Record a contribution of content already stored in the content store.
    /// Pulls the Datanet's stake from the caller (approve or permit first).
    /// @param datanetId the Datanet contributed to
    /// @param contentHash sha2-256 of the file's bytes
    /// @param cid the file's CIDv1 (base32)
    /// @param size the file's size in bytes
    /// @param rowCount the number of rows the file holds
    /// @return contributionId the new contribution's id (ids start at 1)
    function contribute(uint256 datanetId, bytes32 contentHash, string calldata cid, uint64 size, uint32 rowCount)
        external
        whenNotPaused
        returns (uint256 contributionId)
    {
        Datanet storage d = _datanet(datanetId);
        if (d.allowlisted && !isAllowedContributor[datanetId][msg.sender]) {
            revert ContributorNotAllowed(datanetId, msg.sender);
        }
        if (size == 0 || rowCount == 0 || contentHash == bytes32(0)) revert EmptyContribution();
        if (bytes(cid).length == 0) revert EmptyCid();
        uint256 stake = d.stake;
        contributionId = ++contributionCount;
        d.contributionCount += 1;
        _contributions[contributionId] = Contribution({
            datanetId: datanetId,
            contributor: msg.sender,
            contentHash: contentHash,
            size: size,
            rowCount: rowCount,
            status: Status.Pending,
            stake: stake,
            cid: cid
        });
        emit ContributionSubmitted(contributionId, datanetId, msg.sender, contentHash, cid, size, rowCount, stake);
        if (stake > 0) token.safeTransferFrom(msg.sender, address(this), stake);
    }

    /// @notice Approve a batch of pending contributions of one Datanet; returns their stakes.
    /// Increases the Datanet's version once per batch.
    /// @param datanetId the Datanet every contribution must belong to
    /// @param contributionIds the contributions to approve
    function approve(uint256 datanetId, uint256[] calldata contributionIds) external whenNotPaused {
        Datanet storage d = _datanet(datanetId);
        if (!isCurator[datanetId][msg.sender]) revert NotCurator(datanetId, msg.sender);
        if (contributionIds.length == 0) revert EmptyBatch();
        for (uint256 i = 0; i < contributionIds.length; i++) {
            uint256 id = contributionIds[i];
            Contribution storage c = _pendingOf(id, datanetId);
            c.status = Status.Approved;
            approvedCount[c.contributor] += 1;
            uint256 stake = c.stake;
            c.stake = 0;
            emit ContributionApproved(id, datanetId, msg.sender);
            if (stake > 0) token.safeTransfer(c.contributor, stake);
        }
        d.version += 1;
        emit DatanetVersionIncreased(datanetId, d.version);
    }

    /// @notice Reject a pending contribution with a reason code. Its stake goes back to the
    /// contributor, or to the Datanet's treasury when the Datanet slashes on rejection.
    /// @param contributionId the contribution
    /// @param reason an application-defined reason code (e.g. 1 spam, 2 off-topic, 3 duplicate)
    function reject(uint256 contributionId, uint8 reason) external whenNotPaused {
        Contribution storage c = _contribution(contributionId);
        uint256 datanetId = c.datanetId;
        if (!isCurator[datanetId][msg.sender]) revert NotCurator(datanetId, msg.sender);
        if (c.status != Status.Pending) revert NotPending(contributionId, c.status);
        c.status = Status.Rejected;
        rejectedCount[c.contributor] += 1;
        uint256 stake = c.stake;
        c.stake = 0;
        Datanet storage d = _datanets[datanetId];
        bool slashed = d.slashOnReject && stake > 0;
        emit ContributionRejected(contributionId, datanetId, msg.sender, reason, slashed);
        if (stake > 0) token.safeTransfer(slashed ? d.treasury : c.contributor, stake);
    }

    /// @notice Withdraw one's own pending contribution; its stake is returned.
    /// @param contributionId the contribution
    function withdraw(uint256 contributionId) external whenNotPaused {
        Contribution storage c = _contribution(contributionId);
        if (c.contributor != msg.sender) revert NotContributor(contributionId, msg.sender);
        if (c.status != Status.Pending) revert NotPending(contributionId, c.status);
        c.status = Status.Withdrawn;
        uint256 stake = c.stake;
        c.stake = 0;
        emit ContributionWithdrawn(contributionId, c.datanetId);
        if (stake > 0) token.safeTransfer(msg.sender, stake);
    }

    /// @notice Pause every state change (and so every token movement) of this registry.
    function pause() external onlyRole(PAUSER_ROLE) {
        _pause();
    }

    /// @notice Resume after a pause.
    function unpause() external onlyRole(PAUSER_ROLE) {
        _unpause();
    }

    /// @notice A Datanet's record; reverts for an unknown id.
    /// @param datanetId the Datanet
    function getDatanet(uint256 datanetId) external view returns (Datanet memory) {
        return _datanet(datanetId);
    }

    /// @notice A contribution's record; reverts for an unknown id.
    /// @param contributionId the contribution
    function getContribution(uint256 contributionId) external view returns (Contribution memory) {
        return _contribution(contributionId);
    }

    /// @notice A contribution's status (None for an unknown id).
    /// @param contributionId the contribution
    function statusOf(uint256 contributionId) external view returns (Status) {
        return _contributions[contributionId].status;
    }

    /// @notice The Datanet a contribution belongs to and its status, for the model registry.
    /// @param contributionId the contribution
    function datanetAndStatusOf(uint256 contributionId) external view returns (uint256 datanetId, Status status) {
        Contribution storage c = _contributions[contributionId];
        return (c.datanetId, c.status);
    }

    /// @notice Whether a Datanet exists.
    /// @param datanetId the Datanet
    function exists(uint256 datanetId) external view returns (bool) {
        return datanetId != 0 && datanetId <= datanetCount;
    }

    function _datanet(uint256 datanetId) private view returns (Datanet storage d) {
        if (datanetId == 0 || datanetId > datanetCount) revert UnknownDatanet(datanetId);
        d = _datanets[datanetId];
    }

    function _contribution(uint256 contributionId) private view returns (Contribution storage c) {
        c = _contributions[contributionId];
        if (c.status == Status.None) revert UnknownContribution(contributionId);
    }

    function _pendingOf(uint256 contributionId, uint256 datanetId) private view returns (Contribution storage c) {
        c = _contribution(contributionId);
        if (c.datanetId != datanetId) revert UnknownContribution(contributionId);
        if (c.status != Status.Pending) revert NotPending(contributionId, c.status);
    }

    function _requireOwner(uint256 datanetId) private view {
        if (_datanet(datanetId).owner != msg.sender) revert NotDatanetOwner(datanetId, msg.sender);
    }
}
