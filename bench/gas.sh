#!/usr/bin/env bash
# Gas of the contracts' hot paths (claims, settlement, contributions, approvals, registration),
# measured by contracts/test/Gas.t.sol on forge's EVM (prague). One command: bash bench/gas.sh
set -euo pipefail
cd "$(dirname "$0")/.."
node_modules/.bin/forge test --match-path contracts/test/Gas.t.sol -vv 2>&1 | grep -vE "^(Compiling|Solc|Compiler run|No files)" 
