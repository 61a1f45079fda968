// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {Strings} from "@openzeppelin/contracts/utils/Strings.sol";

/// @notice The forge cheatcodes this suite uses (a subset of forge-std's `Vm`).
interface Vm {
    function prank(address msgSender) external;
    function startPrank(address msgSender) external;
    function stopPrank() external;
    function warp(uint256 newTimestamp) external;
    function chainId(uint256 newChainId) external;
    function sign(uint256 privateKey, bytes32 digest) external pure returns (uint8 v, bytes32 r, bytes32 s);
    function addr(uint256 privateKey) external pure returns (address keyAddr);
    function assume(bool condition) external pure;
    function label(address account, string calldata newLabel) external;
    function expectRevert() external;
    function expectRevert(bytes4 revertData) external;
    function expectRevert(bytes calldata revertData) external;
    function expectEmit(bool checkTopic1, bool checkTopic2, bool checkTopic3, bool checkData, address emitter)
        external;
    function cool(address target) external;
}

/// @notice The cheatcode handle, for contracts that are not tests (invariant handlers).
abstract contract CheatCodes {
    Vm internal constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));

    /// @dev Map `x` into [min, max] without discarding runs (forge-std's `bound`, simplified).
    function bound(uint256 x, uint256 min, uint256 max) internal pure returns (uint256) {
        require(min <= max, "bound: min > max");
        if (x >= min && x <= max) return x;
        uint256 size = max - min;
        if (size == type(uint256).max) return x;
        return min + (x % (size + 1));
    }
}

/// @notice A minimal forge test base: revert-on-failure assertions, `bound`, and the invariant
/// target hooks forge reads (`targetContracts`, `targetSelectors`).
abstract contract Test is CheatCodes {
    struct FuzzSelector {
        address addr;
        bytes4[] selectors;
    }

    /// @dev Logs forge decodes and prints at -vv (the DSTest names).
    event log(string);
    event log_named_uint(string key, uint256 val);
    event log_named_address(string key, address val);
    event log_named_bytes32(string key, bytes32 val);

    address[] private _targetedContracts;
    FuzzSelector[] private _targetedSelectors;

    // ---------------------------------------------------------------- invariant targets

    function targetContracts() public view returns (address[] memory) {
        return _targetedContracts;
    }

    function targetSelectors() public view returns (FuzzSelector[] memory) {
        return _targetedSelectors;
    }

    function targetContract(address target) internal {
        _targetedContracts.push(target);
    }

    function targetSelector(FuzzSelector memory selector) internal {
        _targetedSelectors.push(selector);
    }

    // ---------------------------------------------------------------- assertions

    function fail(string memory message) internal pure {
        revert(string.concat("assertion failed: ", message));
    }

    function assertTrue(bool condition, string memory message) internal pure {
        if (!condition) fail(message);
    }

    function assertTrue(bool condition) internal pure {
        assertTrue(condition, "expected true");
    }

    function assertFalse(bool condition, string memory message) internal pure {
        if (condition) fail(message);
    }

    function assertFalse(bool condition) internal pure {
        assertFalse(condition, "expected false");
    }

    function assertEq(uint256 a, uint256 b, string memory message) internal pure {
        if (a != b) fail(string.concat(message, ": ", Strings.toString(a), " != ", Strings.toString(b)));
    }

    function assertEq(uint256 a, uint256 b) internal pure {
        assertEq(a, b, "uint");
    }

    function assertEq(address a, address b, string memory message) internal pure {
        if (a != b) fail(string.concat(message, ": ", Strings.toHexString(a), " != ", Strings.toHexString(b)));
    }

    function assertEq(address a, address b) internal pure {
        assertEq(a, b, "address");
    }

    function assertEq(bytes32 a, bytes32 b, string memory message) internal pure {
        if (a != b) {
            fail(
                string.concat(
                    message, ": ", Strings.toHexString(uint256(a), 32), " != ", Strings.toHexString(uint256(b), 32)
                )
            );
        }
    }

    function assertEq(bytes32 a, bytes32 b) internal pure {
        assertEq(a, b, "bytes32");
    }

    function assertEq(bool a, bool b, string memory message) internal pure {
        if (a != b) fail(string.concat(message, a ? ": true != false" : ": false != true"));
    }

    function assertEq(bool a, bool b) internal pure {
        assertEq(a, b, "bool");
    }

    function assertEq(string memory a, string memory b, string memory message) internal pure {
        if (keccak256(bytes(a)) != keccak256(bytes(b))) fail(string.concat(message, ": '", a, "' != '", b, "'"));
    }

    function assertEq(string memory a, string memory b) internal pure {
        assertEq(a, b, "string");
    }

    function assertEq(uint256[] memory a, uint256[] memory b, string memory message) internal pure {
        assertEq(a.length, b.length, string.concat(message, " (length)"));
        for (uint256 i = 0; i < a.length; i++) {
            assertEq(a[i], b[i], message);
        }
    }

    function assertLe(uint256 a, uint256 b, string memory message) internal pure {
        if (a > b) fail(string.concat(message, ": ", Strings.toString(a), " > ", Strings.toString(b)));
    }

    function assertGe(uint256 a, uint256 b, string memory message) internal pure {
        if (a < b) fail(string.concat(message, ": ", Strings.toString(a), " < ", Strings.toString(b)));
    }

    function assertLt(uint256 a, uint256 b, string memory message) internal pure {
        if (a >= b) fail(string.concat(message, ": ", Strings.toString(a), " >= ", Strings.toString(b)));
    }

    function assertGt(uint256 a, uint256 b, string memory message) internal pure {
        if (a <= b) fail(string.concat(message, ": ", Strings.toString(a), " <= ", Strings.toString(b)));
    }
}
