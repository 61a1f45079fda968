// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {Fixture} from "../utils/Fixture.sol";
import {ProtocolHandler} from "./ProtocolHandler.sol";
import {DatanetRegistry} from "../../src/DatanetRegistry.sol";
import {ModelRegistry} from "../../src/ModelRegistry.sol";
import {AttributionSettlement} from "../../src/AttributionSettlement.sol";
import {PaymentsHandler} from "./PaymentsHandler.sol";
import {X402Vaults} from "../../src/X402Vaults.sol";
import {RoyaltyRouter} from "../../src/RoyaltyRouter.sol";
import {AgentRegistry} from "../../src/AgentRegistry.sol";

/// @notice Protocol-wide invariants under random sequences of handler actions:
/// (1) token conservation to the wei, fixed supply, vouchers never overcharge; (2) claims within allocations, never twice;
/// (3) settled roots never change; (4) defective signatures never settle; (5) fewer than a
/// quorum of distinct registered signers never settle; (6) registered lineages hold only
/// approved contributions; (7) a paused contract moves no tokens. Conservation covers the x402
/// vaults (balances not yet swept) and agents' royalties (PaymentsHandler).
contract ProtocolInvariants is Fixture {
    ProtocolHandler internal handler;
    PaymentsHandler internal payments;
    X402Vaults internal x402;
    RoyaltyRouter internal router;
    address internal agentPayer = address(0xA6E7);
    address internal carol = address(0xCA201);
    uint256 internal consumer3Pk = 0xC0F3;
    address internal payer = address(0xFEE5);
    address[4] internal payees = [address(0xBE01), address(0xBE02), address(0xBE03), address(0xBE04)];
    uint256 internal datanet2;
    uint256 internal model2;
    uint256[] internal lineage1;
    uint256[] internal lineage2;
    address[] internal holders;

    function setUp() public override {
        super.setUp();
        vm.warp(1_800_000_000);
        address consumer3 = vm.addr(consumer3Pk);
        address[3] memory extra = [carol, consumer3, payer];
        for (uint256 i = 0; i < extra.length; i++) {
            _fund(extra[i], FUNDS);
            vm.startPrank(extra[i]);
            token.approve(address(datanets), type(uint256).max);
            token.approve(address(escrow), type(uint256).max);
            vm.stopPrank();
        }
        datanet2 = _createDatanet(3 ether, false, true); // slashes rejected stakes
        uint256 c = _contribute(carol, datanet2, 3);
        _approve(datanet2, _ids(c));
        model2 = _registerModel(builder, "provenant/demo-2", datanet2, _ids(c));
        lineage1 = _ids(aliceContribution, bobContribution);
        lineage2 = _ids(c);

        AttributionSettlement twin =
            new AttributionSettlement(token, escrow, admin, protocolTreasury, _defaultSplit(), SPLIT_DELAY);
        bytes32 role = twin.ATTRIBUTOR_ROLE();
        vm.startPrank(admin);
        for (uint256 i = 0; i < 5; i++) {
            twin.grantRole(role, attributors[i]);
        }
        vm.stopPrank();

        ProtocolHandler.System memory s;
        s.token = token;
        s.datanets = datanets;
        s.models = models;
        s.escrow = escrow;
        s.settlement = settlement;
        s.twin = twin;
        s.admin = admin;
        s.curator = curator;
        s.builder = builder;
        s.payer = payer;
        s.serverPk = serverPk;
        s.attributorPks = attributorPks;
        s.consumerPks = [consumerPk, consumer2Pk, consumer3Pk];
        s.contributors = [alice, bob, carol];
        s.payees = payees;
        s.datanetIds = [datanetId, datanet2];
        s.modelIds = [modelId, model2];
        handler = new ProtocolHandler(s);

        x402 = new X402Vaults(token, escrow);
        AgentRegistry agents = new AgentRegistry();
        router = new RoyaltyRouter(token, escrow, agents);
        vm.prank(agentPayer);
        uint256 agentId = agents.registerAgent("ipfs://agent", address(0x0BE7));
        _fund(agentPayer, FUNDS);
        vm.prank(agentPayer);
        token.approve(address(router), type(uint256).max);
        payments = new PaymentsHandler(
            token, escrow, x402, router, agentId, agentPayer, serverPk, [consumerPk, consumer2Pk, consumer3Pk],
            [modelId, model2]
        );

        address[19] memory h = [
            address(this), alice, bob, carol, consumer, consumer2, consumer3, payer, payees[0], payees[1],
            payees[2], payees[3], protocolTreasury, builder, slashTreasury, datanetOwner, address(datanets),
            address(escrow), address(settlement)
        ];
        for (uint256 i = 0; i < h.length; i++) {
            holders.push(h[i]);
        }
        holders.push(agentPayer);
        holders.push(address(x402));
        holders.push(address(router));
        holders.push(x402.vaultOf(modelId));
        holders.push(x402.vaultOf(model2));

        targetContract(address(handler));
        bytes4[] memory selectors = new bytes4[](20);
        selectors[0] = ProtocolHandler.contribute.selector;
        selectors[1] = ProtocolHandler.approve.selector;
        selectors[2] = ProtocolHandler.reject.selector;
        selectors[3] = ProtocolHandler.withdrawContribution.selector;
        selectors[4] = ProtocolHandler.registerModel.selector;
        selectors[5] = ProtocolHandler.deposit.selector;
        selectors[6] = ProtocolHandler.charge.selector;
        selectors[7] = ProtocolHandler.payFees.selector;
        selectors[8] = ProtocolHandler.withdrawDeposit.selector;
        selectors[9] = ProtocolHandler.settle.selector;
        selectors[10] = ProtocolHandler.claim.selector;
        selectors[11] = ProtocolHandler.claimMany.selector;
        selectors[12] = ProtocolHandler.settleWithDefect.selector;
        selectors[13] = ProtocolHandler.pause.selector;
        selectors[14] = ProtocolHandler.unpauseAll.selector;
        selectors[15] = ProtocolHandler.pokePaused.selector;
        selectors[16] = ProtocolHandler.setQuorum.selector;
        selectors[17] = ProtocolHandler.toggleAttributor.selector;
        selectors[18] = ProtocolHandler.warp.selector;
        selectors[19] = ProtocolHandler.replayCharge.selector;
        targetSelector(FuzzSelector({addr: address(handler), selectors: selectors}));

        targetContract(address(payments));
        bytes4[] memory moneySelectors = new bytes4[](5);
        moneySelectors[0] = PaymentsHandler.x402Pay.selector;
        moneySelectors[1] = PaymentsHandler.replayX402.selector;
        moneySelectors[2] = PaymentsHandler.intoVault.selector;
        moneySelectors[3] = PaymentsHandler.sweep.selector;
        moneySelectors[4] = PaymentsHandler.routeRoyalty.selector;
        targetSelector(FuzzSelector({addr: address(payments), selectors: moneySelectors}));
    }

    // ---------------------------------------------------------------- (1) conservation

    function invariant_tokenConservation() public view {
        uint256 stakes = 0;
        for (uint256 id = 1; id <= datanets.contributionCount(); id++) {
            stakes += datanets.getContribution(id).stake;
        }
        uint256[2] memory ms = handler.chargeModels();
        address[3] memory cs = handler.consumerList();
        uint256 deposits = 0;
        uint256 unsettled = 0;
        uint256 unclaimed = 0;
        uint256 dust = 0;
        uint256 vaults = 0;
        for (uint256 k = 0; k < 2; k++) {
            uint256 m = ms[k];
            uint256 held = token.balanceOf(x402.vaultOf(m));
            assertEq(held, payments.ghostVaultHeld(m), "vault = what reached it and was not swept");
            vaults += held;
            for (uint256 i = 0; i < 3; i++) {
                deposits += escrow.depositOf(cs[i], m);
            }
            uint256 fees = escrow.unsettledFees(m);
            assertEq(
                fees,
                escrow.cumulativeFeesAt(m, escrow.chargeSeq(m)) - escrow.cumulativeFeesAt(m, escrow.settledSeq(m)),
                "unsettled = charged after the settled seq"
            );
            unsettled += fees;
            for (uint64 e = 1; e <= settlement.lastEpoch(m); e++) {
                (, uint96 left) = settlement.epochs(m, e);
                unclaimed += left;
            }
            assertEq(settlement.carriedDust(m), handler.ghostDust(m), "dust");
            dust += settlement.carriedDust(m);
        }

        uint256 registryBalance = token.balanceOf(address(datanets));
        uint256 escrowBalance = token.balanceOf(address(escrow));
        uint256 settlementBalance = token.balanceOf(address(settlement));
        assertEq(registryBalance, stakes, "registry = stakes held");
        assertEq(stakes, handler.ghostStakesHeld(), "stakes = ghost");
        assertEq(escrowBalance, deposits + unsettled, "escrow = deposits + unsettled");
        assertEq(
            deposits,
            handler.ghostDeposited() - handler.ghostWithdrawn() - handler.ghostCharged(),
            "deposits = deposited - withdrawn - charged"
        );
        assertEq(
            unsettled,
            handler.ghostCharged() + handler.ghostPaid() + payments.ghostCredited() - handler.ghostReleased(),
            "unsettled = charged + paid + x402/swept/royalties - released"
        );
        assertEq(settlementBalance, unclaimed + dust, "settlement = unclaimed + dust");
        assertEq(unclaimed, handler.ghostCapsSettled() - handler.ghostClaimedTotal(), "unclaimed = caps - claims");
        assertEq(token.balanceOf(address(x402)), 0, "the x402 vaults contract holds nothing between calls");
        assertEq(token.balanceOf(address(router)), 0, "the royalty router holds nothing between calls");
        assertEq(
            registryBalance + escrowBalance + settlementBalance + vaults,
            deposits + unsettled + unclaimed + dust + stakes + vaults,
            "contracts hold exactly what they owe"
        );
    }

    function invariant_totalSupplyConstant() public view {
        assertEq(token.totalSupply(), SUPPLY, "supply");
        uint256 sum = 0;
        for (uint256 i = 0; i < holders.length; i++) {
            sum += token.balanceOf(holders[i]);
        }
        assertEq(sum, SUPPLY, "every token is with a known holder");
    }

    /// @dev Every model's charged fees are exactly its consumers' highest charged cumulative
    /// vouchers plus direct payments; a replayed batch never charges.
    function invariant_vouchersNeverOvercharge() public view {
        uint256[2] memory ms = handler.chargeModels();
        address[3] memory cs = handler.consumerList();
        for (uint256 k = 0; k < 2; k++) {
            uint256 m = ms[k];
            uint256 spent = 0;
            for (uint256 i = 0; i < 3; i++) {
                assertEq(escrow.spentOf(cs[i], m), handler.ghostSpent(cs[i], m), "spent = highest charged voucher");
                spent += escrow.spentOf(cs[i], m);
            }
            assertEq(
                spent + handler.ghostPaidTo(m) + payments.ghostCreditedTo(m),
                escrow.cumulativeFeesAt(m, escrow.chargeSeq(m)),
                "fees = vouchers + payments + x402/swept/royalties"
            );
        }
        assertEq(handler.ghostVoucherReplays(), 0, "a replayed voucher batch charged");
        assertEq(payments.ghostReplays(), 0, "a replayed authorization or royalty, or a stranger's routing, credited");
    }

    // ---------------------------------------------------------------- (2) claims

    function invariant_claimsWithinAllocations() public view {
        uint256[2] memory ms = handler.chargeModels();
        address[4] memory ps = handler.payeeList();
        uint256[4] memory received;
        uint256[4] memory allocated;
        for (uint256 k = 0; k < 2; k++) {
            uint256 m = ms[k];
            for (uint64 e = 1; e <= settlement.lastEpoch(m); e++) {
                (, uint256 cap, uint256 ghostClaimed, uint256[4] memory alloc) = handler.epochGhost(m, e);
                (, uint96 left) = settlement.epochs(m, e);
                assertLe(left, cap, "epoch claims never above cap");
                assertEq(cap - left, ghostClaimed, "epoch claims = ghost");
                for (uint256 p = 0; p < 4; p++) {
                    uint256 by = handler.ghostClaimedBy(m, e, p);
                    assertLe(by, alloc[p], "never above allocation");
                    if (settlement.isClaimed(m, e, p)) assertEq(by, alloc[p], "claimed exactly once");
                    else assertEq(by, 0, "unclaimed pays nothing");
                    received[p] += by;
                    allocated[p] += alloc[p];
                }
            }
        }
        for (uint256 p = 0; p < 4; p++) {
            assertEq(token.balanceOf(ps[p]), received[p], "payee holds exactly its claims");
            assertLe(received[p], allocated[p], "payee never above its allocations");
        }
        assertEq(handler.ghostDoubleClaims(), 0, "double claims");
        assertEq(handler.ghostInflatedClaims(), 0, "inflated claims");
    }

    // ---------------------------------------------------------------- (3) roots

    function invariant_settledRootsNeverChange() public view {
        uint256[2] memory ms = handler.chargeModels();
        for (uint256 k = 0; k < 2; k++) {
            uint256 m = ms[k];
            uint64 last = settlement.lastEpoch(m);
            assertEq(last, handler.ghostEpochCount(m), "epochs settled = ghost");
            for (uint64 e = 1; e <= last; e++) {
                (bytes32 root,,,) = handler.epochGhost(m, e);
                (bytes20 onChainRoot,) = settlement.epochs(m, e);
                assertEq(onChainRoot, bytes20(root), "root");
            }
            (bytes20 next,) = settlement.epochs(m, last + 1);
            assertEq(next, bytes20(0), "nothing beyond the last epoch");
        }
    }

    // ---------------------------------------------------------------- (4) and (5) signatures

    function invariant_defectiveSignaturesNeverSettle() public view {
        assertEq(handler.ghostBadSettles(), 0, "a defective attestation settled");
    }

    function invariant_belowQuorumNeverSettles() public view {
        assertEq(handler.ghostBelowQuorumSettles(), 0, "fewer than quorum settled");
    }

    // ---------------------------------------------------------------- (6) lineage

    function invariant_lineageOnlyApproved() public view {
        uint256[] memory extra = handler.registeredModels();
        assertEq(models.modelCount(), 2 + extra.length, "every registration tracked");
        for (uint256 id = 1; id <= models.modelCount(); id++) {
            uint256[] memory lineage =
                id == modelId ? lineage1 : id == model2 ? lineage2 : handler.lineageOf(id);
            ModelRegistry.Model memory m = models.getModel(id);
            assertEq(m.contributionIdsHash, keccak256(abi.encodePacked(lineage)), "lineage ids");
            for (uint256 i = 0; i < lineage.length; i++) {
                assertTrue(
                    datanets.statusOf(lineage[i]) == DatanetRegistry.Status.Approved,
                    "a registered lineage holds a contribution that is not approved"
                );
            }
        }
        assertEq(handler.ghostBadRegistrations(), 0, "unapproved contribution registered");
    }

    // ---------------------------------------------------------------- (7) pause

    function invariant_pausedMovesNoTokens() public view {
        assertEq(handler.ghostPausedMoves(), 0, "a paused contract moved tokens");
    }

    // ---------------------------------------------------------------- handler sanity


    /// @dev A scripted run proving the handler's paths are live (settle, claim, attacks) so the
    /// invariants above are not vacuous.
    function test_handlerExercisesEveryPath() public {
        handler.contribute(0, 0);
        handler.contribute(1, 1);
        handler.approve(0, 8);
        handler.contribute(2, 1);
        handler.reject(1, 2);
        handler.contribute(0, 0);
        handler.withdrawContribution(4);
        handler.registerModel(0, 2);
        handler.deposit(0, 0, 50 ether);
        handler.charge(0, 0, 3 ether + 0x0505, true);
        handler.payFees(1, 5 ether);
        payments.x402Pay(0, 0, 1 ether);
        payments.replayX402();
        payments.intoVault(1, 1, 2 ether, true);
        payments.intoVault(2, 1, 3 ether, false);
        payments.sweep(1);
        payments.intoVault(0, 0, 1 ether, true); // left unswept: conservation counts it in the vault
        payments.routeRoyalty(1 ether, 2 ether, 3, false);
        payments.routeRoyalty(1 ether, 2 ether, 3, false); // the same action again: refused
        payments.routeRoyalty(1 ether, 2 ether, 4, true); // a stranger: refused
        assertEq(payments.ghostCredited(), 1 ether + 5 ether + 3 ether, "x402 + sweep + royalty credited");
        assertEq(payments.ghostVaultHeld(modelId), 1 ether, "unswept");
        handler.settle(0, 0, 0, 1);
        handler.settle(1, 0, 0, 1);
        assertEq(handler.ghostSettleCount(), 2, "settled");
        assertGt(handler.ghostCharged(), 0, "charged");
        for (uint256 p = 0; p < 4; p++) {
            handler.claim(0, 0, p);
        }
        handler.claimMany(1, type(uint256).max);
        assertGt(handler.ghostClaimCount(), 0, "claimed");
        handler.charge(1, 0, 2 ether + 0x0505, false);
        handler.replayCharge(0);
        for (uint256 kind = 0; kind < 12; kind++) {
            handler.settleWithDefect(kind, 0, kind * 7919);
        }
        assertGe(handler.ghostDefectAttempts(), 11, "attacks attempted");
        handler.pause(2, 1);
        handler.pokePaused(0);
        handler.unpauseAll();
        handler.withdrawDeposit(0, 0, 1 ether);
        handler.setQuorum(5);
        handler.toggleAttributor(1 + 256);
        handler.settle(0, 0, 0, 0); // four registered signers, quorum five: must not settle
        assertEq(handler.ghostSettleCount(), 2, "no settle below quorum");

        invariant_tokenConservation();
        invariant_totalSupplyConstant();
        invariant_vouchersNeverOvercharge();
        invariant_claimsWithinAllocations();
        invariant_settledRootsNeverChange();
        invariant_defectiveSignaturesNeverSettle();
        invariant_belowQuorumNeverSettles();
        invariant_lineageOnlyApproved();
        invariant_pausedMovesNoTokens();
    }
}
