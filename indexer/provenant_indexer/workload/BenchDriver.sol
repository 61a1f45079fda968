// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

// Bench-only (never deployed outside bench/bench_indexer.py): one transaction calls the real
// project contracts many times, so a chain with 200,000 real project events is made in about a
// minute instead of ~20 (one signed transaction per event). Every event is still emitted by the
// project's own contracts; the driver only plays a user: each instance is one contributor, and
// may be a curator, a model's server or a fee payer.

interface IDatanetRegistry {
    function contribute(uint256 datanetId, bytes32 contentHash, string calldata cid, uint64 size, uint32 rowCount)
        external
        returns (uint256);
}

interface IERC20Approve {
    function approve(address spender, uint256 amount) external returns (bool);
}

contract BenchDriver {
    error CallFailed(uint256 index, bytes reason);

    /// @notice `count` contributions to one Datanet, content hashes and CIDs derived from `firstNonce`.
    function contributeMany(address registry, uint256 datanetId, uint256 firstNonce, uint256 count, string calldata cidPrefix)
        external
    {
        for (uint256 i = 0; i < count; i++) {
            uint256 n = firstNonce + i;
            bytes32 contentHash = keccak256(abi.encode(address(this), n));
            string memory cid = string.concat(cidPrefix, _hex(contentHash));
            IDatanetRegistry(registry).contribute(datanetId, contentHash, cid, uint64(1000 + n % 100_000), uint32(1 + n % 500));
        }
    }

    /// @notice Forward ABI-encoded calls to `target` in order (rejections, withdrawals, charges,
    /// fee payments, claims); any failure reverts the whole transaction with its index.
    function forward(address target, bytes[] calldata calls) external {
        for (uint256 i = 0; i < calls.length; i++) {
            (bool ok, bytes memory reason) = target.call(calls[i]);
            if (!ok) revert CallFailed(i, reason);
        }
    }

    function approveToken(address token, address spender) external {
        IERC20Approve(token).approve(spender, type(uint256).max);
    }

    function _hex(bytes32 value) private pure returns (string memory) {
        bytes memory digits = "0123456789abcdef";
        bytes memory out = new bytes(52);  // 26 bytes of the hash: a CIDv1-long string
        for (uint256 i = 0; i < 26; i++) {
            out[2 * i] = digits[uint8(value[i]) >> 4];
            out[2 * i + 1] = digits[uint8(value[i]) & 0x0f];
        }
        return string(out);
    }
}
