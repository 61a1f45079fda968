// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";

/// @title ModelVault
/// @notice One model's x402 `payTo` address: a minimal holder deployed with CREATE2 by
/// X402Vaults (salt = the model id), so its address is known before it exists and binds an
/// EIP-3009 authorization to exactly one model. Only its controller can move what it holds,
/// and only into the model's escrowed fees (see X402Vaults).
contract ModelVault {
    using SafeERC20 for IERC20;

    /// @notice The X402Vaults contract that deployed this vault.
    address public immutable controller;

    /// @notice `amount` of `token` moved from this vault to the controller.
    event Pulled(address indexed token, uint256 amount);

    /// @notice The caller is not the controller.
    error NotController(address caller);

    constructor() {
        controller = msg.sender;
    }

    /// @notice Move `amount` of `token` to the controller (which credits it to the model's fees).
    /// @param token the token held
    /// @param amount tokens, in wei
    function pull(IERC20 token, uint256 amount) external {
        if (msg.sender != controller) revert NotController(msg.sender);
        emit Pulled(address(token), amount);
        token.safeTransfer(msg.sender, amount);
    }
}
