// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {Test} from "../utils/Test.sol";
import {AgentRegistry} from "../../src/AgentRegistry.sol";
import {IERC721Errors} from "@openzeppelin/contracts/interfaces/draft-IERC6093.sol";

/// @notice Unit and fuzz tests of the ERC-8004 identity registry with Provenant's operator key.
contract AgentRegistryTest is Test {
    AgentRegistry internal registry;
    address internal alice = address(0xA11CE);
    address internal bob = address(0xB0B);
    address internal operator = address(0x0BE7);
    uint256 internal walletKey = 0xA9E47;
    string internal constant URI = "ipfs://bafkreiagentregistrationfile";

    function setUp() public {
        registry = new AgentRegistry();
    }

    function _registerAlice() internal returns (uint256 agentId) {
        vm.prank(alice);
        agentId = registry.registerAgent(URI, operator);
    }

    // ---------------------------------------------------------------- registration

    function test_registerAgent_mintsTokenWithUriAndOperator() public {
        vm.expectEmit(true, true, false, true, address(registry));
        emit AgentRegistry.Registered(1, URI, alice);
        vm.expectEmit(true, true, true, true, address(registry));
        emit AgentRegistry.OperatorSet(1, address(0), operator);
        uint256 agentId = _registerAlice();
        assertEq(agentId, 1, "first id");
        assertEq(registry.ownerOf(agentId), alice, "owner");
        assertEq(registry.tokenURI(agentId), URI, "uri");
        assertEq(registry.operatorOf(agentId), operator, "operator");
        assertEq(keccak256(registry.getMetadata(agentId, "operator")), keccak256(abi.encodePacked(operator)));
        assertEq(registry.getAgentWallet(agentId), alice, "wallet defaults to the owner");
        assertEq(registry.agentCount(), 1, "count");
        assertTrue(registry.exists(agentId), "exists");
        assertFalse(registry.exists(2), "no agent 2");
    }

    function test_register_erc8004Overloads() public {
        vm.startPrank(bob);
        uint256 a = registry.register();
        uint256 b = registry.register(URI);
        AgentRegistry.MetadataEntry[] memory entries = new AgentRegistry.MetadataEntry[](1);
        entries[0] = AgentRegistry.MetadataEntry("endpoint", bytes("http://127.0.0.1:8000"));
        uint256 c = registry.register(URI, entries);
        vm.stopPrank();
        assertEq(a, 1);
        assertEq(b, 2);
        assertEq(c, 3);
        assertEq(registry.tokenURI(a), "", "no uri");
        assertEq(registry.operatorOf(b), address(0), "no operator");
        assertEq(keccak256(registry.getMetadata(c, "endpoint")), keccak256(bytes("http://127.0.0.1:8000")));
    }

    function test_register_refusesEmptyUriAndZeroOperator() public {
        vm.expectRevert(AgentRegistry.EmptyAgentURI.selector);
        registry.register("");
        vm.expectRevert(AgentRegistry.EmptyAgentURI.selector);
        registry.registerAgent("", operator);
        vm.expectRevert(AgentRegistry.ZeroAddress.selector);
        registry.registerAgent(URI, address(0));
        assertEq(registry.agentCount(), 0, "nothing registered");
    }

    function test_register_refusesReservedMetadataKeys() public {
        AgentRegistry.MetadataEntry[] memory entries = new AgentRegistry.MetadataEntry[](1);
        entries[0] = AgentRegistry.MetadataEntry("operator", abi.encode(bob));
        vm.expectRevert(abi.encodeWithSelector(AgentRegistry.ReservedMetadataKey.selector, "operator"));
        registry.register(URI, entries);
        entries[0] = AgentRegistry.MetadataEntry("agentWallet", abi.encode(bob));
        vm.expectRevert(abi.encodeWithSelector(AgentRegistry.ReservedMetadataKey.selector, "agentWallet"));
        registry.register(URI, entries);
    }

    function test_supportsErc721AndMetadataInterfaces() public view {
        assertTrue(registry.supportsInterface(0x80ac58cd), "ERC-721");
        assertTrue(registry.supportsInterface(0x5b5e139f), "ERC-721 metadata");
        assertFalse(registry.supportsInterface(0xffffffff), "none");
        assertEq(registry.name(), "Provenant Agent");
    }

    // ---------------------------------------------------------------- owner-only changes

    function test_setOperator_ownerOnly() public {
        uint256 agentId = _registerAlice();
        vm.prank(bob);
        vm.expectRevert(abi.encodeWithSelector(AgentRegistry.NotAgentOwner.selector, agentId, bob));
        registry.setOperator(agentId, bob);
        vm.prank(operator); // the operator itself cannot rotate the key
        vm.expectRevert(abi.encodeWithSelector(AgentRegistry.NotAgentOwner.selector, agentId, operator));
        registry.setOperator(agentId, bob);
        assertEq(registry.operatorOf(agentId), operator, "unchanged");

        vm.expectEmit(true, true, true, true, address(registry));
        emit AgentRegistry.OperatorSet(agentId, operator, bob);
        vm.prank(alice);
        registry.setOperator(agentId, bob);
        assertEq(registry.operatorOf(agentId), bob, "rotated");
    }

    function test_setAgentURI_and_metadata_ownerOnly() public {
        uint256 agentId = _registerAlice();
        vm.prank(bob);
        vm.expectRevert(abi.encodeWithSelector(AgentRegistry.NotAgentOwner.selector, agentId, bob));
        registry.setAgentURI(agentId, "ipfs://other");
        vm.prank(bob);
        vm.expectRevert(abi.encodeWithSelector(AgentRegistry.NotAgentOwner.selector, agentId, bob));
        registry.setMetadata(agentId, "k", "v");

        vm.expectEmit(true, false, true, true, address(registry));
        emit AgentRegistry.URIUpdated(agentId, "ipfs://other", alice);
        vm.prank(alice);
        registry.setAgentURI(agentId, "ipfs://other");
        assertEq(registry.tokenURI(agentId), "ipfs://other");

        vm.expectEmit(true, true, false, true, address(registry));
        emit AgentRegistry.MetadataSet(agentId, "k", "k", "v");
        vm.prank(alice);
        registry.setMetadata(agentId, "k", "v");
        assertEq(keccak256(registry.getMetadata(agentId, "k")), keccak256("v"));
    }

    function test_unknownAgent_reverts() public {
        vm.expectRevert(abi.encodeWithSelector(IERC721Errors.ERC721NonexistentToken.selector, 7));
        registry.operatorOf(7);
        vm.expectRevert(abi.encodeWithSelector(IERC721Errors.ERC721NonexistentToken.selector, 7));
        registry.setOperator(7, bob);
    }

    // ---------------------------------------------------------------- agent wallet

    function _walletSig(uint256 agentId, address owner, uint256 deadline) internal view returns (bytes memory) {
        address wallet = vm.addr(walletKey);
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(walletKey, registry.walletDigest(agentId, wallet, owner, deadline));
        return abi.encodePacked(r, s, v);
    }

    function test_setAgentWallet_needsTheWalletsSignature() public {
        uint256 agentId = _registerAlice();
        address wallet = vm.addr(walletKey);
        uint256 deadline = block.timestamp + 1 hours;
        bytes memory sig = _walletSig(agentId, alice, deadline);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(AgentRegistry.InvalidWalletSignature.selector, bob));
        registry.setAgentWallet(agentId, bob, deadline, sig);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(AgentRegistry.BadDeadline.selector, block.timestamp + 2 days));
        registry.setAgentWallet(agentId, wallet, block.timestamp + 2 days, sig);

        assertEq(registry.getAgentWallet(agentId), alice, "starts as the registering address");
        vm.expectEmit(true, true, false, true, address(registry));
        emit AgentRegistry.MetadataSet(agentId, "agentWallet", "agentWallet", abi.encodePacked(wallet));
        vm.prank(alice);
        registry.setAgentWallet(agentId, wallet, deadline, sig);
        assertEq(registry.getAgentWallet(agentId), wallet);
        assertEq(keccak256(registry.getMetadata(agentId, "agentWallet")), keccak256(abi.encodePacked(wallet)));

        vm.prank(alice);
        registry.unsetAgentWallet(agentId);
        assertEq(registry.getAgentWallet(agentId), address(0));
    }

    function test_transfer_clearsOperatorAndWallet() public {
        uint256 agentId = _registerAlice();
        uint256 deadline = block.timestamp + 1 hours;
        bytes memory sig = _walletSig(agentId, alice, deadline);
        vm.prank(alice);
        registry.setAgentWallet(agentId, vm.addr(walletKey), deadline, sig);
        vm.expectEmit(true, true, true, true, address(registry));
        emit AgentRegistry.OperatorSet(agentId, operator, address(0));
        vm.prank(alice);
        registry.transferFrom(alice, bob, agentId);
        assertEq(registry.ownerOf(agentId), bob);
        assertEq(registry.operatorOf(agentId), address(0), "operator cleared");
        assertEq(registry.getAgentWallet(agentId), address(0), "wallet cleared");
        vm.prank(alice); // the old owner lost control
        vm.expectRevert(abi.encodeWithSelector(AgentRegistry.NotAgentOwner.selector, agentId, alice));
        registry.setOperator(agentId, alice);
    }

    // ---------------------------------------------------------------- fuzz

    /// @notice Whoever calls, only the owner's change sticks; ids are sequential and unique.
    function testFuzz_onlyOwnerSetsOperator(address caller, address newOperator, uint8 count) public {
        vm.assume(caller != address(0) && caller.code.length == 0);
        uint256 n = bound(count, 1, 8);
        for (uint256 i = 1; i <= n; ++i) {
            vm.prank(alice);
            assertEq(registry.registerAgent(URI, operator), i, "sequential id");
        }
        uint256 agentId = bound(uint256(keccak256(abi.encode(caller, count))), 1, n);
        vm.prank(caller);
        if (caller != alice) {
            vm.expectRevert(abi.encodeWithSelector(AgentRegistry.NotAgentOwner.selector, agentId, caller));
        }
        registry.setOperator(agentId, newOperator);
        assertEq(registry.operatorOf(agentId), caller == alice ? newOperator : operator, "operator");
        assertEq(registry.agentCount(), n, "count");
    }
}
