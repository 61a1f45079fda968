// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// @notice OpenZeppelin StandardMerkleTree for (uint256 index, address account, uint256 amount)
/// values (a payout leaf; `index` is the value's position in the input, the bit the settlement
/// sets when it is claimed), built in
/// Solidity exactly as the JavaScript library (npm openzeppelin merkle-tree) builds it: leaves double-hashed from the
/// ABI-encoded values and sorted, laid out in a flat array (leaves at the end, in reverse),
/// pairs hashed sorted. Roots and proofs agree byte for byte with the JavaScript library.
library Merkle {
    /// @notice The StandardMerkleTree leaf of (index, account, amount).
    function leaf(uint256 index, address account, uint256 amount) internal pure returns (bytes32) {
        return keccak256(bytes.concat(keccak256(abi.encode(index, account, amount))));
    }

    /// @notice The commutative pair hash used by OpenZeppelin's MerkleProof.
    function hashPair(bytes32 a, bytes32 b) internal pure returns (bytes32) {
        return a < b ? keccak256(abi.encode(a, b)) : keccak256(abi.encode(b, a));
    }

    /// @notice The flat tree array (index 0 is the root) of the given values.
    function build(address[] memory accounts, uint256[] memory amounts) internal pure returns (bytes32[] memory tree) {
        uint256 n = accounts.length;
        require(n > 0 && n == amounts.length, "Merkle: bad values");
        bytes32[] memory leaves = new bytes32[](n);
        for (uint256 i = 0; i < n; i++) {
            leaves[i] = leaf(i, accounts[i], amounts[i]);
        }
        _sort(leaves);
        tree = new bytes32[](2 * n - 1);
        for (uint256 i = 0; i < n; i++) {
            tree[tree.length - 1 - i] = leaves[i];
        }
        for (uint256 i = tree.length - n; i > 0; i--) {
            tree[i - 1] = hashPair(tree[2 * (i - 1) + 1], tree[2 * (i - 1) + 2]);
        }
    }

    /// @notice The root of the given values.
    function root(address[] memory accounts, uint256[] memory amounts) internal pure returns (bytes32) {
        return build(accounts, amounts)[0];
    }

    /// @notice The leaf index and proof of (account, amount) in a tree built by `build`: the
    /// first input position whose leaf is in the tree (test trees hold each account once).
    function proof(bytes32[] memory tree, address account, uint256 amount)
        internal
        pure
        returns (uint256 valueIndex, bytes32[] memory path)
    {
        uint256 n = (tree.length + 1) / 2;
        for (valueIndex = 0; valueIndex < n; valueIndex++) {
            uint256 at = _find(tree, leaf(valueIndex, account, amount));
            if (at != type(uint256).max) return (valueIndex, _path(tree, at));
        }
        revert("Merkle: leaf not in tree");
    }

    /// @notice The proof of the leaf (index, account, amount) in a tree built by `build`.
    function proofAt(bytes32[] memory tree, uint256 valueIndex, address account, uint256 amount)
        internal
        pure
        returns (bytes32[] memory)
    {
        uint256 at = _find(tree, leaf(valueIndex, account, amount));
        require(at != type(uint256).max, "Merkle: leaf not in tree");
        return _path(tree, at);
    }

    function _find(bytes32[] memory tree, bytes32 target) private pure returns (uint256) {
        uint256 n = (tree.length + 1) / 2;
        for (uint256 i = tree.length - n; i < tree.length; i++) {
            if (tree[i] == target) return i;
        }
        return type(uint256).max;
    }

    function _path(bytes32[] memory tree, uint256 index) private pure returns (bytes32[] memory) {
        uint256 depth = 0;
        for (uint256 i = index; i > 0; i = (i - 1) / 2) {
            depth++;
        }
        bytes32[] memory path = new bytes32[](depth);
        uint256 k = 0;
        for (uint256 i = index; i > 0; i = (i - 1) / 2) {
            path[k++] = tree[i % 2 == 1 ? i + 1 : i - 1];
        }
        return path;
    }

    /// @notice Fold a proof from a leaf (what MerkleProof.verify computes).
    function processProof(bytes32[] memory path, bytes32 node) internal pure returns (bytes32) {
        for (uint256 i = 0; i < path.length; i++) {
            node = hashPair(node, path[i]);
        }
        return node;
    }

    function _sort(bytes32[] memory a) private pure {
        for (uint256 i = 1; i < a.length; i++) {
            bytes32 key = a[i];
            uint256 j = i;
            while (j > 0 && a[j - 1] > key) {
                a[j] = a[j - 1];
                j--;
            }
            a[j] = key;
        }
    }
}
