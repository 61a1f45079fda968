// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {Fixture} from "../utils/Fixture.sol";
import {DatanetRegistry} from "../../src/DatanetRegistry.sol";
import {ModelRegistry} from "../../src/ModelRegistry.sol";
import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";

contract ModelRegistryTest is Fixture {
    function _register(address owner, ModelRegistry.ModelSpec memory spec) internal returns (uint256) {
        vm.prank(owner);
        return models.registerModel(spec);
    }

    function _expectRegisterRevert(ModelRegistry.ModelSpec memory spec, bytes memory err) internal {
        vm.prank(builder);
        vm.expectRevert(err);
        models.registerModel(spec);
    }

    // ---------------------------------------------------------------- constructor

    function test_constructor_setsRegistryAndRoles() public view {
        assertEq(address(models.datanets()), address(datanets), "datanets");
        assertTrue(models.hasRole(models.DEFAULT_ADMIN_ROLE(), admin), "admin");
        assertTrue(models.hasRole(models.PAUSER_ROLE(), admin), "pauser");
    }

    function test_constructor_revertsOnZeroAddress() public {
        vm.expectRevert(ModelRegistry.ZeroAddress.selector);
        new ModelRegistry(DatanetRegistry(address(0)), admin);
        vm.expectRevert(ModelRegistry.ZeroAddress.selector);
        new ModelRegistry(datanets, address(0));
    }

    // ---------------------------------------------------------------- registerModel

    function test_registerModel_recordsLineage() public {
        uint256[] memory ids = _ids(aliceContribution, bobContribution);
        ModelRegistry.ModelSpec memory spec = _spec("provenant/demo-2", datanetId, ids);
        spec.parentId = modelId;
        uint256 expected = models.modelCount() + 1;

        vm.expectEmit(true, true, true, true, address(models));
        emit ModelRegistry.ModelRegistered(expected, builder, modelId, spec.name, spec.lineageRoot, spec.adapterHash);
        vm.expectEmit(true, false, false, true, address(models));
        emit ModelRegistry.ModelLineage(
            expected, spec.baseModel, spec.datanetIds, ids, spec.configHash, spec.adapterCid, spec.manifestCid
        );
        vm.expectEmit(true, false, false, true, address(models));
        emit ModelRegistry.ModelTermsSet(expected, spec.pricePerCall, server);
        uint256 id = _register(builder, spec);

        assertEq(id, expected, "id");
        ModelRegistry.Model memory m = models.getModel(id);
        assertEq(m.owner, builder, "owner");
        assertEq(m.server, server, "server");
        assertEq(m.parentId, modelId, "parent");
        assertEq(m.pricePerCall, spec.pricePerCall, "price");
        assertEq(m.lineageRoot, spec.lineageRoot, "lineage root");
        assertEq(m.configHash, spec.configHash, "config");
        assertEq(m.adapterHash, spec.adapterHash, "adapter hash");
        assertEq(m.contributionIdsHash, keccak256(abi.encodePacked(ids)), "contribution ids hash");
        assertEq(m.name, spec.name);
        assertEq(m.baseModel, spec.baseModel);
        assertEq(m.adapterCid, spec.adapterCid);
        assertEq(m.manifestCid, spec.manifestCid);
        assertEq(models.modelIdByNameHash(keccak256("provenant/demo-2")), id, "by name");
        assertEq(models.datanetIdsOf(id), spec.datanetIds, "datanets");
        (address owner, address srv) = models.ownerAndServerOf(id);
        assertEq(owner, builder, "owner of");
        assertEq(srv, server, "server of");
        assertEq(models.ownerOf(id), builder, "ownerOf");
        assertTrue(models.exists(id), "exists");
    }

    function test_registerModel_acceptsContributionsAcrossDatanets() public {
        uint256 other = _createDatanet(0, false, false);
        uint256 c = _contribute(alice, other, 50);
        _approve(other, _ids(c));
        ModelRegistry.ModelSpec memory spec = _spec("multi", datanetId, _ids(aliceContribution, c));
        uint256[] memory dns = new uint256[](2);
        dns[0] = datanetId;
        dns[1] = other;
        spec.datanetIds = dns;
        uint256 id = _register(alice, spec);
        assertEq(models.datanetIdsOf(id), dns, "datanets");
    }

    function test_registerModel_revertsOnEmptyName() public {
        _expectRegisterRevert(_spec("", datanetId, _ids(aliceContribution)), abi.encodeWithSelector(ModelRegistry.EmptyName.selector));
    }

    function test_registerModel_revertsWhenNameTaken() public {
        _expectRegisterRevert(
            _spec("provenant/demo-1", datanetId, _ids(aliceContribution)),
            abi.encodeWithSelector(ModelRegistry.NameTaken.selector, "provenant/demo-1", modelId)
        );
    }

    function test_registerModel_revertsWithoutDatanets() public {
        ModelRegistry.ModelSpec memory spec = _spec("x", datanetId, _ids(aliceContribution));
        spec.datanetIds = new uint256[](0);
        _expectRegisterRevert(spec, abi.encodeWithSelector(ModelRegistry.NoDatanets.selector));
    }

    function test_registerModel_revertsWithoutContributions() public {
        _expectRegisterRevert(
            _spec("x", datanetId, new uint256[](0)), abi.encodeWithSelector(ModelRegistry.NoContributions.selector)
        );
    }

    function test_registerModel_revertsOnZeroRoot() public {
        ModelRegistry.ModelSpec memory spec = _spec("x", datanetId, _ids(aliceContribution));
        spec.lineageRoot = bytes32(0);
        _expectRegisterRevert(spec, abi.encodeWithSelector(ModelRegistry.ZeroRoot.selector));
    }

    function test_registerModel_revertsOnZeroServer() public {
        ModelRegistry.ModelSpec memory spec = _spec("x", datanetId, _ids(aliceContribution));
        spec.server = address(0);
        _expectRegisterRevert(spec, abi.encodeWithSelector(ModelRegistry.ZeroAddress.selector));
    }

    function test_registerModel_revertsForOthersParent() public {
        ModelRegistry.ModelSpec memory spec = _spec("x", datanetId, _ids(aliceContribution));
        spec.parentId = modelId;
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(ModelRegistry.NotModelOwner.selector, modelId, alice));
        models.registerModel(spec);
    }

    function test_registerModel_revertsForUnknownParent() public {
        ModelRegistry.ModelSpec memory spec = _spec("x", datanetId, _ids(aliceContribution));
        spec.parentId = 42;
        _expectRegisterRevert(spec, abi.encodeWithSelector(ModelRegistry.UnknownModel.selector, 42));
    }

    function test_registerModel_revertsForUnknownDatanet() public {
        ModelRegistry.ModelSpec memory spec = _spec("x", 7, _ids(aliceContribution));
        _expectRegisterRevert(spec, abi.encodeWithSelector(DatanetRegistry.UnknownDatanet.selector, 7));
    }

    function test_registerModel_revertsForPendingContribution() public {
        uint256 c = _contribute(alice, datanetId, 60);
        _expectRegisterRevert(
            _spec("x", datanetId, _ids(aliceContribution, c)),
            abi.encodeWithSelector(ModelRegistry.ContributionNotApproved.selector, c, DatanetRegistry.Status.Pending)
        );
    }

    function test_registerModel_revertsForRejectedContribution() public {
        uint256 c = _contribute(alice, datanetId, 60);
        vm.prank(curator);
        datanets.reject(c, 1);
        _expectRegisterRevert(
            _spec("x", datanetId, _ids(c)),
            abi.encodeWithSelector(ModelRegistry.ContributionNotApproved.selector, c, DatanetRegistry.Status.Rejected)
        );
    }

    function test_registerModel_revertsForWithdrawnContribution() public {
        uint256 c = _contribute(alice, datanetId, 60);
        vm.prank(alice);
        datanets.withdraw(c);
        _expectRegisterRevert(
            _spec("x", datanetId, _ids(c)),
            abi.encodeWithSelector(ModelRegistry.ContributionNotApproved.selector, c, DatanetRegistry.Status.Withdrawn)
        );
    }

    function test_registerModel_revertsForUnknownContribution() public {
        _expectRegisterRevert(
            _spec("x", datanetId, _ids(500)),
            abi.encodeWithSelector(ModelRegistry.ContributionNotApproved.selector, 500, DatanetRegistry.Status.None)
        );
    }

    function test_registerModel_revertsForContributionOutsideDatanets() public {
        uint256 other = _createDatanet(0, false, false);
        uint256 c = _contribute(alice, other, 50);
        _approve(other, _ids(c));
        _expectRegisterRevert(
            _spec("x", datanetId, _ids(aliceContribution, c)),
            abi.encodeWithSelector(ModelRegistry.ContributionOutsideDatanets.selector, c, other)
        );
    }

    function test_registerModel_revertsForUnsortedOrDuplicateIds() public {
        _expectRegisterRevert(
            _spec("x", datanetId, _ids(bobContribution, aliceContribution)),
            abi.encodeWithSelector(ModelRegistry.ContributionIdsNotAscending.selector, 1)
        );
        _expectRegisterRevert(
            _spec("x", datanetId, _ids(aliceContribution, aliceContribution)),
            abi.encodeWithSelector(ModelRegistry.ContributionIdsNotAscending.selector, 1)
        );
    }

    // ---------------------------------------------------------------- setTerms

    function test_setTerms_changesPriceAndServer() public {
        vm.expectEmit(true, false, false, true, address(models));
        emit ModelRegistry.ModelTermsSet(modelId, 7, alice);
        vm.prank(builder);
        models.setTerms(modelId, 7, alice);
        ModelRegistry.Model memory m = models.getModel(modelId);
        assertEq(m.pricePerCall, 7, "price");
        assertEq(m.server, alice, "server");
    }

    function test_setTerms_reverts() public {
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(ModelRegistry.NotModelOwner.selector, modelId, alice));
        models.setTerms(modelId, 7, alice);

        vm.prank(builder);
        vm.expectRevert(ModelRegistry.ZeroAddress.selector);
        models.setTerms(modelId, 7, address(0));

        vm.prank(builder);
        vm.expectRevert(abi.encodeWithSelector(ModelRegistry.UnknownModel.selector, 9));
        models.setTerms(9, 7, alice);
    }

    // ---------------------------------------------------------------- pause

    function test_pause_blocksRegistrationAndTerms() public {
        bytes32 role = models.PAUSER_ROLE();
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, alice, role));
        models.pause();

        vm.prank(admin);
        models.pause();
        ModelRegistry.ModelSpec memory spec = _spec("x", datanetId, _ids(aliceContribution));
        _expectRegisterRevert(spec, abi.encodeWithSelector(Pausable.EnforcedPause.selector));
        vm.prank(builder);
        vm.expectRevert(Pausable.EnforcedPause.selector);
        models.setTerms(modelId, 7, alice);

        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, alice, role));
        models.unpause();
        vm.prank(admin);
        models.unpause();
        _register(builder, spec);
    }

    // ---------------------------------------------------------------- views

    function test_views_revertForUnknownModel() public {
        assertFalse(models.exists(0), "zero");
        assertFalse(models.exists(modelId + 1), "next");
        vm.expectRevert(abi.encodeWithSelector(ModelRegistry.UnknownModel.selector, 0));
        models.getModel(0);
        vm.expectRevert(abi.encodeWithSelector(ModelRegistry.UnknownModel.selector, 2));
        models.datanetIdsOf(2);
        vm.expectRevert(abi.encodeWithSelector(ModelRegistry.UnknownModel.selector, 3));
        models.ownerAndServerOf(3);
        vm.expectRevert(abi.encodeWithSelector(ModelRegistry.UnknownModel.selector, 4));
        models.ownerOf(4);
    }
}
