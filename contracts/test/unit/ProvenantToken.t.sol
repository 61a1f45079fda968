// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {Test} from "../utils/Test.sol";
import {ProvenantToken} from "../../src/ProvenantToken.sol";
import {IERC20Errors} from "@openzeppelin/contracts/interfaces/draft-IERC6093.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";
import {ERC3009} from "@openzeppelin/contracts/token/ERC20/extensions/draft-ERC3009.sol";

contract ProvenantTokenTest is Test {
    uint256 internal constant SUPPLY = 1_000_000_000 ether;
    bytes32 internal constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 internal constant PERMIT_TYPEHASH =
        keccak256("Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)");
    bytes32 internal constant TRANSFER_TYPEHASH = keccak256(
        "TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)"
    );
    bytes32 internal constant RECEIVE_TYPEHASH = keccak256(
        "ReceiveWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)"
    );
    bytes32 internal constant CANCEL_TYPEHASH = keccak256("CancelAuthorization(address authorizer,bytes32 nonce)");

    ProvenantToken internal token;
    uint256 internal ownerPk = 0x0A;
    address internal owner;
    address internal spender = address(0x5BE);
    address internal payTo = address(0x9A7);

    function setUp() public {
        owner = vm.addr(ownerPk);
        token = new ProvenantToken(address(this), SUPPLY);
        assertTrue(token.transfer(owner, 1_000 ether), "fund");
        vm.warp(1_700_000_000);
    }

    function _digest(bytes32 structHash) internal view returns (bytes32) {
        return keccak256(abi.encodePacked("\x19\x01", token.DOMAIN_SEPARATOR(), structHash));
    }

    function test_constructor_mintsFixedSupply() public view {
        assertEq(token.totalSupply(), SUPPLY, "supply");
        assertEq(token.balanceOf(address(this)), SUPPLY - 1_000 ether, "holder");
        assertEq(token.name(), "Provenant");
        assertEq(token.symbol(), "PVN");
        assertEq(token.decimals(), 18, "decimals");
    }

    function test_domainSeparator_matchesEip712() public view {
        bytes32 expected = keccak256(
            abi.encode(DOMAIN_TYPEHASH, keccak256("Provenant"), keccak256("1"), block.chainid, address(token))
        );
        assertEq(token.DOMAIN_SEPARATOR(), expected, "domain");
    }

    function test_transferAndTransferFrom() public {
        vm.prank(owner);
        token.approve(spender, 10 ether);
        vm.prank(spender);
        assertTrue(token.transferFrom(owner, payTo, 4 ether), "transferFrom");
        assertEq(token.balanceOf(payTo), 4 ether, "to");
        assertEq(token.allowance(owner, spender), 6 ether, "allowance");

        vm.prank(spender);
        vm.expectRevert(abi.encodeWithSelector(IERC20Errors.ERC20InsufficientAllowance.selector, spender, 6 ether, 7 ether));
        token.transferFrom(owner, payTo, 7 ether); // forge-lint: disable-line(erc20-unchecked-transfer)

        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(IERC20Errors.ERC20InsufficientBalance.selector, owner, 996 ether, 2_000 ether));
        token.transfer(payTo, 2_000 ether); // forge-lint: disable-line(erc20-unchecked-transfer)
    }

    function test_permit_setsAllowance() public {
        uint256 deadline = block.timestamp + 1 hours;
        bytes32 digest = _digest(keccak256(abi.encode(PERMIT_TYPEHASH, owner, spender, 5 ether, 0, deadline)));
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(ownerPk, digest);
        token.permit(owner, spender, 5 ether, deadline, v, r, s);
        assertEq(token.allowance(owner, spender), 5 ether, "allowance");
        assertEq(token.nonces(owner), 1, "nonce");

        // The same signature cannot be used twice: the nonce moved, so it recovers another signer.
        vm.expectRevert();
        token.permit(owner, spender, 5 ether, deadline, v, r, s);
    }

    function test_permit_revertsWhenExpired() public {
        uint256 deadline = block.timestamp - 1;
        bytes32 digest = _digest(keccak256(abi.encode(PERMIT_TYPEHASH, owner, spender, 5 ether, 0, deadline)));
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(ownerPk, digest);
        vm.expectRevert(abi.encodeWithSelector(ERC20Permit.ERC2612ExpiredSignature.selector, deadline));
        token.permit(owner, spender, 5 ether, deadline, v, r, s);
    }

    function test_permit_revertsForWrongSigner() public {
        uint256 deadline = block.timestamp + 1;
        bytes32 digest = _digest(keccak256(abi.encode(PERMIT_TYPEHASH, owner, spender, 5 ether, 0, deadline)));
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(0xBAD, digest);
        vm.expectRevert(abi.encodeWithSelector(ERC20Permit.ERC2612InvalidSigner.selector, vm.addr(0xBAD), owner));
        token.permit(owner, spender, 5 ether, deadline, v, r, s);
    }

    function _authorization(bytes32 typehash, address to, uint256 value, uint256 after_, uint256 before, bytes32 nonce)
        internal
        view
        returns (uint8 v, bytes32 r, bytes32 s)
    {
        bytes32 digest = _digest(keccak256(abi.encode(typehash, owner, to, value, after_, before, nonce)));
        return vm.sign(ownerPk, digest);
    }

    function test_transferWithAuthorization_anyoneSubmitsOnce() public {
        bytes32 nonce = keccak256("x402-1");
        uint256 before = block.timestamp + 60;
        (uint8 v, bytes32 r, bytes32 s) = _authorization(TRANSFER_TYPEHASH, payTo, 3 ether, 0, before, nonce);
        vm.prank(spender);
        token.transferWithAuthorization(owner, payTo, 3 ether, 0, before, nonce, v, r, s);
        assertEq(token.balanceOf(payTo), 3 ether, "paid");
        assertTrue(token.authorizationState(owner, nonce), "nonce used");

        vm.expectRevert(abi.encodeWithSelector(ERC3009.ERC3009UsedAuthorization.selector, owner, nonce));
        token.transferWithAuthorization(owner, payTo, 3 ether, 0, before, nonce, v, r, s);
    }

    function test_transferWithAuthorization_revertsOutsideWindowOrForgery() public {
        bytes32 nonce = keccak256("x402-2");
        uint256 after_ = block.timestamp + 10;
        uint256 before = block.timestamp + 60;
        (uint8 v, bytes32 r, bytes32 s) = _authorization(TRANSFER_TYPEHASH, payTo, 1 ether, after_, before, nonce);
        vm.expectRevert(abi.encodeWithSelector(ERC3009.ERC3009InvalidAuthorizationTime.selector, after_, before));
        token.transferWithAuthorization(owner, payTo, 1 ether, after_, before, nonce, v, r, s);

        vm.expectRevert(ERC3009.ERC3009InvalidSignature.selector);
        token.transferWithAuthorization(owner, payTo, 2 ether, after_, before, nonce, v, r, s);
    }

    function test_receiveWithAuthorization_onlyPayee() public {
        bytes32 nonce = keccak256("x402-3");
        uint256 before = block.timestamp + 60;
        (uint8 v, bytes32 r, bytes32 s) = _authorization(RECEIVE_TYPEHASH, payTo, 2 ether, 0, before, nonce);
        vm.prank(spender);
        vm.expectRevert(abi.encodeWithSelector(IERC20Errors.ERC20InvalidReceiver.selector, payTo));
        token.receiveWithAuthorization(owner, payTo, 2 ether, 0, before, nonce, v, r, s);

        vm.prank(payTo);
        token.receiveWithAuthorization(owner, payTo, 2 ether, 0, before, nonce, v, r, s);
        assertEq(token.balanceOf(payTo), 2 ether, "received");
    }

    function test_cancelAuthorization_burnsNonce() public {
        bytes32 nonce = keccak256("x402-4");
        (uint8 cv, bytes32 cr, bytes32 cs) = vm.sign(ownerPk, _digest(keccak256(abi.encode(CANCEL_TYPEHASH, owner, nonce))));
        token.cancelAuthorization(owner, nonce, cv, cr, cs);
        assertTrue(token.authorizationState(owner, nonce), "cancelled");

        uint256 before = block.timestamp + 60;
        (uint8 v, bytes32 r, bytes32 s) = _authorization(TRANSFER_TYPEHASH, payTo, 1 ether, 0, before, nonce);
        vm.expectRevert(abi.encodeWithSelector(ERC3009.ERC3009UsedAuthorization.selector, owner, nonce));
        token.transferWithAuthorization(owner, payTo, 1 ether, 0, before, nonce, v, r, s);
    }
}
