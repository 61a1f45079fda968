"""The indexer benchmark of issue 13 (bench/bench_indexer.py is its one command): a cached anvil
chain of project events, our indexer, web3.py loops, Ponder 1.0 and the raw limit, side by side."""
