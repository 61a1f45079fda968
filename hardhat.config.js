// Hardhat 2 compiles the same sources as forge and the Python step, offline, with the same
// solc-js (npm `solc`, pinned in package.json) and the same settings (read from foundry.toml,
// the one place they are written). `npx hardhat node` is an alternative devnet (chain id 31337).
const fs = require("fs");
const path = require("path");
const { subtask } = require("hardhat/config");
const { TASK_COMPILE_SOLIDITY_GET_SOLC_BUILD } = require("hardhat/builtin-tasks/task-names");

const foundry = fs.readFileSync(path.join(__dirname, "foundry.toml"), "utf8");
const setting = (key) => {
  const match = foundry.match(new RegExp(`^${key}\\s*=\\s*"?([^"\\n]+)"?`, "m"));
  if (!match) throw new Error(`foundry.toml has no ${key}`);
  return match[1].trim();
};
const solcVersion = require("solc/package.json").version;

subtask(TASK_COMPILE_SOLIDITY_GET_SOLC_BUILD, async (args, hre, runSuper) => {
  if (args.solcVersion !== solcVersion) return runSuper();
  const solc = require("solc");
  return {
    compilerPath: require.resolve("solc/soljson.js"),
    isSolcJs: true,
    version: solcVersion,
    longVersion: solc.version(),
  };
});

module.exports = {
  solidity: {
    version: solcVersion,
    settings: {
      evmVersion: setting("evm_version"),
      optimizer: { enabled: true, runs: Number(setting("optimizer_runs")) },
    },
  },
  paths: {
    sources: "./contracts/src",
    tests: "./contracts/hardhat-test",
    cache: "./build/hardhat-cache",
    artifacts: "./build/hardhat-artifacts",
  },
  networks: {
    hardhat: { chainId: 31337 },
  },
};
