// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";
import {ERC3009} from "@openzeppelin/contracts/token/ERC20/extensions/draft-ERC3009.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";

/// @title ProvenantToken
/// @notice The project's ERC-20 in which usage fees are paid and attribution is settled.
/// Supports EIP-2612 `permit` (deposits without a prior approve transaction) and EIP-3009
/// `transferWithAuthorization` / `receiveWithAuthorization` (x402 "exact" payments).
/// @dev The whole supply is minted once at deployment; there is no mint function, so the
/// conservation invariant can be checked against a fixed total supply.
contract ProvenantToken is ERC20, ERC20Permit, ERC3009 {
    /// @param initialHolder receives the whole fixed supply
    /// @param supply the fixed total supply, in wei
    constructor(address initialHolder, uint256 supply) ERC20("Provenant", "PVN") ERC20Permit("Provenant") {
        _mint(initialHolder, supply);
    }
}
