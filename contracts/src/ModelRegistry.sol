// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {DatanetRegistry} from "./DatanetRegistry.sol";

/// @title ModelRegistry
/// @notice The on-chain record of every model trained in the Model Factory and its lineage:
/// base model, Datanets, the exact approved contributions used (their ids, and a Merkle root
/// over (contribution id, content hash, rows hash) leaves), the training configuration's
/// hash, the adapter's CID and hash, the training manifest's CID and the parent model.
/// The lineage is immutable once registered. The registry refuses any contribution that is
/// not approved at registration time, so a rejected or withdrawn contribution can never be
/// part of a registered lineage.
contract ModelRegistry is AccessControl, Pausable {
    /// @notice What a builder registers. Lineage fields are immutable afterwards.
    struct ModelSpec {
        string name;
        string baseModel;
        uint256[] datanetIds;
        uint256[] contributionIds;
        bytes32 lineageRoot;
        bytes32 configHash;
        string adapterCid;
        bytes32 adapterHash;
        string manifestCid;
        uint256 parentId;
        uint256 pricePerCall;
        address server;
    }

    struct Model {
        address owner;
        address server;
        uint256 parentId;
        uint256 pricePerCall;
        bytes32 lineageRoot;
        bytes32 configHash;
        bytes32 adapterHash;
        bytes32 contributionIdsHash;
        string name;
        string baseModel;
        string adapterCid;
        string manifestCid;
    }

    bytes32 public constant PAUSER_ROLE = keccak256("PAUSER_ROLE");

    DatanetRegistry public immutable datanets;
    uint256 public modelCount;

    mapping(uint256 modelId => Model) private _models;
    mapping(uint256 modelId => uint256[]) private _datanetIds;
    mapping(bytes32 nameHash => uint256 modelId) public modelIdByNameHash;

    event ModelRegistered(
        uint256 indexed modelId,
        address indexed owner,
        uint256 indexed parentId,
        string name,
        bytes32 lineageRoot,
        bytes32 adapterHash
    );
    event ModelLineage(
        uint256 indexed modelId,
        string baseModel,
        uint256[] datanetIds,
        uint256[] contributionIds,
        bytes32 configHash,
        string adapterCid,
        string manifestCid
    );
    event ModelTermsSet(uint256 indexed modelId, uint256 pricePerCall, address server);

    error UnknownModel(uint256 modelId);
    error NameTaken(string name, uint256 modelId);
    error EmptyName();
    error NoDatanets();
    error NoContributions();
    error ZeroRoot();
    error ZeroAddress();
    error NotModelOwner(uint256 modelId, address account);
    error ContributionNotApproved(uint256 contributionId, DatanetRegistry.Status status);
    error ContributionOutsideDatanets(uint256 contributionId, uint256 datanetId);
    error ContributionIdsNotAscending(uint256 index);

    /// @param datanets_ the Datanet registry whose contributions lineages refer to
    /// @param admin receives DEFAULT_ADMIN_ROLE and PAUSER_ROLE
    constructor(DatanetRegistry datanets_, address admin) {
        if (address(datanets_) == address(0) || admin == address(0)) revert ZeroAddress();
        datanets = datanets_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(PAUSER_ROLE, admin);
    }

    /// @notice Register a model owned by the caller, or a new version of one of the caller's
    /// models (`parentId` non-zero). Every Datanet must exist and every contribution must be
    /// approved and belong to one of the Datanets; contribution ids must be strictly ascending.
    /// @param spec the model's name, lineage, terms and serving key
    /// @return modelId the new model's id (ids start at 1)
    function registerModel(ModelSpec calldata spec) external whenNotPaused returns (uint256 modelId) {
        if (bytes(spec.name).length == 0) revert EmptyName();
        bytes32 nameHash = keccak256(bytes(spec.name));
        uint256 taken = modelIdByNameHash[nameHash];
        if (taken != 0) revert NameTaken(spec.name, taken);
        if (spec.datanetIds.length == 0) revert NoDatanets();
        if (spec.contributionIds.length == 0) revert NoContributions();
        if (spec.lineageRoot == bytes32(0)) revert ZeroRoot();
        if (spec.server == address(0)) revert ZeroAddress();
        if (spec.parentId != 0 && _model(spec.parentId).owner != msg.sender) {
            revert NotModelOwner(spec.parentId, msg.sender);
        }
        for (uint256 i = 0; i < spec.datanetIds.length; i++) {
            if (!datanets.exists(spec.datanetIds[i])) revert DatanetRegistry.UnknownDatanet(spec.datanetIds[i]);
        }
        _checkContributions(spec.contributionIds, spec.datanetIds);

        modelId = ++modelCount;
        modelIdByNameHash[nameHash] = modelId;
        _datanetIds[modelId] = spec.datanetIds;
        _models[modelId] = Model({
            owner: msg.sender,
            server: spec.server,
            parentId: spec.parentId,
            pricePerCall: spec.pricePerCall,
            lineageRoot: spec.lineageRoot,
            configHash: spec.configHash,
            adapterHash: spec.adapterHash,
            contributionIdsHash: keccak256(abi.encodePacked(spec.contributionIds)),
            name: spec.name,
            baseModel: spec.baseModel,
            adapterCid: spec.adapterCid,
            manifestCid: spec.manifestCid
        });
        emit ModelRegistered(modelId, msg.sender, spec.parentId, spec.name, spec.lineageRoot, spec.adapterHash);
        emit ModelLineage(
            modelId,
            spec.baseModel,
            spec.datanetIds,
            spec.contributionIds,
            spec.configHash,
            spec.adapterCid,
            spec.manifestCid
        );
        emit ModelTermsSet(modelId, spec.pricePerCall, spec.server);
    }

    /// @notice Change a model's price per call and serving key; only the model's owner.
    /// Lineage fields cannot be changed: register a new version instead.
    /// @param modelId the model
    /// @param pricePerCall the new price per call, in token wei
    /// @param server the key allowed to charge vouchers and sign receipts for the model
    function setTerms(uint256 modelId, uint256 pricePerCall, address server) external whenNotPaused {
        Model storage m = _model(modelId);
        if (m.owner != msg.sender) revert NotModelOwner(modelId, msg.sender);
        if (server == address(0)) revert ZeroAddress();
        m.pricePerCall = pricePerCall;
        m.server = server;
        emit ModelTermsSet(modelId, pricePerCall, server);
    }

    /// @notice Pause registrations and term changes.
    function pause() external onlyRole(PAUSER_ROLE) {
        _pause();
    }

    /// @notice Resume after a pause.
    function unpause() external onlyRole(PAUSER_ROLE) {
        _unpause();
    }

    /// @notice A model's record; reverts for an unknown id.
    /// @param modelId the model
    function getModel(uint256 modelId) external view returns (Model memory) {
        return _model(modelId);
    }

    /// @notice The Datanets a model was trained on.
    /// @param modelId the model
    function datanetIdsOf(uint256 modelId) external view returns (uint256[] memory) {
        _model(modelId);
        return _datanetIds[modelId];
    }

    /// @notice A model's owner and serving key, for the escrow and the settlement.
    /// @param modelId the model
    function ownerAndServerOf(uint256 modelId) external view returns (address owner, address server) {
        Model storage m = _model(modelId);
        return (m.owner, m.server);
    }

    /// @notice A model's owner, who receives the owner share of its fees.
    /// @param modelId the model
    function ownerOf(uint256 modelId) external view returns (address) {
        return _model(modelId).owner;
    }

    /// @notice Whether a model exists.
    /// @param modelId the model
    function exists(uint256 modelId) external view returns (bool) {
        return modelId != 0 && modelId <= modelCount;
    }

    function _checkContributions(uint256[] calldata contributionIds, uint256[] calldata datanetIds) private view {
        for (uint256 i = 0; i < contributionIds.length; i++) {
            if (i > 0 && contributionIds[i] <= contributionIds[i - 1]) revert ContributionIdsNotAscending(i);
            (uint256 datanetId, DatanetRegistry.Status status) = datanets.datanetAndStatusOf(contributionIds[i]);
            if (status != DatanetRegistry.Status.Approved) revert ContributionNotApproved(contributionIds[i], status);
            bool inside = false;
            for (uint256 j = 0; j < datanetIds.length; j++) {
                if (datanetIds[j] == datanetId) {
                    inside = true;
                    break;
                }
            }
            if (!inside) revert ContributionOutsideDatanets(contributionIds[i], datanetId);
        }
    }

    function _model(uint256 modelId) private view returns (Model storage m) {
        if (modelId == 0 || modelId > modelCount) revert UnknownModel(modelId);
        m = _models[modelId];
    }
}
