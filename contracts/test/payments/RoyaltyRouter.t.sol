// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {Fixture} from "../utils/Fixture.sol";
import {RoyaltyRouter} from "../../src/RoyaltyRouter.sol";
import {AgentRegistry} from "../../src/AgentRegistry.sol";
import {UsageEscrow} from "../../src/UsageEscrow.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Errors} from "@openzeppelin/contracts/interfaces/draft-IERC6093.sol";

/// @notice An agent routes a royalty share of an action's earnings into models' fees.
contract RoyaltyRouterTest is Fixture {
    RoyaltyRouter internal router;
    AgentRegistry internal agents;
    address internal agentOwner = address(0xA6E7);
    address internal operator = address(0x0BE7);
    uint256 internal agentId;
    uint256 internal model2;
    bytes32 internal constant ACTION = keccak256("action receipt");

    function setUp() public override {
        super.setUp();
        agents = new AgentRegistry();
        router = new RoyaltyRouter(token, escrow, agents);
        vm.prank(agentOwner);
        agentId = agents.registerAgent("ipfs://agent", operator);
        model2 = _registerModel(builder, "provenant/second", datanetId, _ids(aliceContribution));
        _fund(agentOwner, 100 ether);
        _fund(operator, 100 ether);
        vm.prank(agentOwner);
        token.approve(address(router), type(uint256).max);
        vm.prank(operator);
        token.approve(address(router), type(uint256).max);
    }

    function _two(uint256 a, uint256 b) internal pure returns (uint256[] memory xs) {
        xs = new uint256[](2);
        xs[0] = a;
        xs[1] = b;
    }

    function test_constructor_refusesZeroAndOtherToken() public {
        vm.expectRevert(RoyaltyRouter.ZeroAddress.selector);
        new RoyaltyRouter(IERC20(address(0)), escrow, agents);
        vm.expectRevert(RoyaltyRouter.ZeroAddress.selector);
        new RoyaltyRouter(token, escrow, AgentRegistry(address(0)));
        vm.expectRevert(abi.encodeWithSelector(RoyaltyRouter.TokenMismatch.selector, address(token), address(agents)));
        new RoyaltyRouter(IERC20(address(agents)), escrow, agents);
    }

    function test_routeRoyalty_creditsEachModelAsNextCharge() public {
        _fees(modelId, 3 ether); // seq 1 on model 1
        vm.expectEmit(true, true, true, true, address(router));
        emit RoyaltyRouted(agentId, modelId, 2, 1 ether, ACTION);
        vm.expectEmit(true, true, true, true, address(router));
        emit RoyaltyRouted(agentId, model2, 1, 2 ether, ACTION);
        vm.prank(operator);
        uint64[] memory seqs = router.routeRoyalty(agentId, _two(modelId, model2), _two(1 ether, 2 ether), ACTION);
        assertEq(seqs[0], 2, "model 1 seq");
        assertEq(seqs[1], 1, "model 2 seq");
        assertEq(escrow.unsettledFees(modelId), 4 ether, "model 1 fees");
        assertEq(escrow.unsettledFees(model2), 2 ether, "model 2 fees");
        assertEq(token.balanceOf(operator), 97 ether, "operator paid the sum");
        assertEq(token.balanceOf(address(router)), 0, "router holds nothing");
        assertTrue(router.routed(agentId, ACTION), "recorded");
    }

    event RoyaltyRouted(
        uint256 indexed agentId, uint256 indexed modelId, uint64 indexed seq, uint256 amount, bytes32 actionHash
    );

    function test_routeRoyalty_ownerAndWalletMayRoute() public {
        assertTrue(router.isActor(agentId, agentOwner), "owner");
        assertTrue(router.isActor(agentId, operator), "operator");
        assertFalse(router.isActor(agentId, stranger), "stranger");
        assertFalse(router.isActor(999, agentOwner), "unknown agent");
        vm.prank(agentOwner);
        router.routeRoyalty(agentId, _ids(modelId), _ids(5), ACTION);
        assertEq(escrow.unsettledFees(modelId), 5, "routed");
    }

    function test_routeRoyalty_refusesStrangerAndUnknownAgent() public {
        _fund(stranger, 1 ether);
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(RoyaltyRouter.NotAgentActor.selector, agentId, stranger));
        router.routeRoyalty(agentId, _ids(modelId), _ids(1), ACTION);
        vm.prank(operator);
        vm.expectRevert(abi.encodeWithSelector(RoyaltyRouter.NotAgentActor.selector, 42, operator));
        router.routeRoyalty(42, _ids(modelId), _ids(1), ACTION);
    }

    function test_routeRoyalty_refusesReplayedAction() public {
        vm.prank(operator);
        router.routeRoyalty(agentId, _ids(modelId), _ids(1), ACTION);
        vm.prank(operator);
        vm.expectRevert(abi.encodeWithSelector(RoyaltyRouter.AlreadyRouted.selector, agentId, ACTION));
        router.routeRoyalty(agentId, _ids(modelId), _ids(1), ACTION);
    }

    function test_routeRoyalty_refusesBadInputAtomically() public {
        vm.startPrank(operator);
        vm.expectRevert(abi.encodeWithSelector(RoyaltyRouter.BadLengths.selector, 2, 1));
        router.routeRoyalty(agentId, _two(modelId, model2), _ids(1), ACTION);
        vm.expectRevert(abi.encodeWithSelector(RoyaltyRouter.BadLengths.selector, 0, 0));
        router.routeRoyalty(agentId, new uint256[](0), new uint256[](0), ACTION);
        vm.expectRevert(abi.encodeWithSelector(UsageEscrow.UnknownModel.selector, 99));
        router.routeRoyalty(agentId, _two(modelId, 99), _two(1, 1), ACTION);
        vm.expectRevert(UsageEscrow.ZeroAmount.selector);
        router.routeRoyalty(agentId, _two(modelId, model2), _two(1, 0), ACTION);
        vm.stopPrank();
        assertEq(escrow.chargeSeq(modelId), 0, "nothing charged");
        assertEq(token.balanceOf(operator), 100 ether, "nothing pulled");
        assertFalse(router.routed(agentId, ACTION), "not recorded");
    }

    function test_routeRoyalty_refusesWithoutAllowance() public {
        address wallet = address(0x3A11E7);
        vm.prank(agentOwner);
        agents.transferFrom(agentOwner, wallet, agentId); // new owner: no approval given
        _fund(wallet, 1 ether);
        vm.prank(wallet);
        vm.expectRevert(
            abi.encodeWithSelector(IERC20Errors.ERC20InsufficientAllowance.selector, address(router), 0, 1)
        );
        router.routeRoyalty(agentId, _ids(modelId), _ids(1), ACTION);
        assertFalse(router.isActor(agentId, operator), "transfer cleared the old operator");
    }

    /// @dev Any split over two models: the payer pays the sum, each model's fees rise by its part.
    function testFuzz_routeRoyalty_conserves(uint256 a, uint256 b, bytes32 action) public {
        a = bound(a, 1, 40 ether);
        b = bound(b, 1, 40 ether);
        uint256 escrowBefore = token.balanceOf(address(escrow));
        vm.prank(operator);
        router.routeRoyalty(agentId, _two(modelId, model2), _two(a, b), action);
        assertEq(token.balanceOf(operator), 100 ether - a - b, "paid");
        assertEq(escrow.unsettledFees(modelId), a, "model 1");
        assertEq(escrow.unsettledFees(model2), b, "model 2");
        assertEq(token.balanceOf(address(escrow)) - escrowBefore, a + b, "escrow holds the sum");
    }
}
