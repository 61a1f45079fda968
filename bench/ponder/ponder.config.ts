// Ponder 1.0 over the Provenant contracts, for bench/bench_indexer.py. The bench writes
// chain.json (the anvil URL, the deployment's addresses, start block and ABIs) before it
// starts `ponder start`; DATABASE_URL picks PostgreSQL, PGLITE_DIR the embedded PGlite.
import { readFileSync } from "node:fs";
import { createConfig } from "ponder";
import { http } from "viem";

const chain = JSON.parse(readFileSync(new URL("./chain.json", import.meta.url), "utf8"));

const contract = (name: string) => ({
  network: "anvil",
  abi: chain.abis[name],
  address: chain.addresses[name],
  startBlock: chain.start_block,
});

export default createConfig({
  database: process.env.DATABASE_URL
    ? { kind: "postgres", connectionString: process.env.DATABASE_URL }
    : { kind: "pglite", directory: process.env.PGLITE_DIR ?? ".ponder/pglite" },
  networks: {
    anvil: {
      chainId: 31337,
      // A local node, as for our indexer: no cap on a response's size (viem's default of 10 MB
      // fails on this chain's 70-block ranges, and Ponder does not split a range on that error).
      transport: http(chain.rpc_url, { maxResponseBodySize: false }),
      // The same poll interval as our indexer's in the head-latency run.
      pollingInterval: Number(process.env.POLL_MS ?? 1000),
      // A local node: no rate limit to respect (Ponder's default is 50 requests/s).
      maxRequestsPerSecond: 10_000,
    },
  },
  contracts: {
    ProvenantToken: contract("ProvenantToken"),
    DatanetRegistry: contract("DatanetRegistry"),
    ModelRegistry: contract("ModelRegistry"),
    UsageEscrow: contract("UsageEscrow"),
    AttributionSettlement: contract("AttributionSettlement"),
  },
});
