"""The benchmark's results as a Markdown section (bench/.cache/indexer/RESULTS.md, then copied into bench/RESULTS.md)."""

from __future__ import annotations

from typing import Any


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}" if value < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown(results: dict[str, Any], command: str) -> str:
    chain, m = results["chain"], results["machine"]
    gen = chain["generation"]
    lines = [
        "## Indexer backfill and head latency (issue 13)",
        "",
        f"Measured {results['date']} with `{command}`, on {m['cpu']} ({m['cores']} cores, shared with other "
        f"sessions; load average at start {', '.join(f'{x:.1f}' for x in m['load_avg_at_start'])}), Python "
        f"{m['python']}, anvil 1.7.1, PostgreSQL on loopback, Ponder 1.0.0 (npm, bench/ponder/package-lock.json).",
        "",
        f"Chain: {chain['events']:,} project events in {chain['blocks']:,} blocks (anvil, chain id 31337), made by "
        f"the project's contracts in {gen['transactions']:,} transactions ({gen['rounds']} rounds of "
        "indexer/provenant_indexer/workload/bulk_chain.py, cached with anvil --dump-state). Mix (events per kind of "
        "call): " + ", ".join(f"{k} {v:,}" for k, v in gen["mix"].items() if k not in ("fund", "approve token")) + "."
        + (f" Claims skipped: {gen['claims_skipped']}." if gen.get("claims_skipped") else ""),
        "",
        f"Every Python arm reads eth_getLogs ranges of {chain['range_blocks']} blocks (~20,000 events: what 2,000-block "
        "ranges hold on a chain of 10 events per block; this chain packs ~600 events per block because anvil "
        "recomputes its whole state root for every block, which made a 20,000-block chain of this state take hours "
        "to generate). Ponder chooses its own ranges.",
        "",
        "| arm | events | wall time (s) | events/s | set-up (s) | peak RSS (MB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in results["arms"].items():
        label = name + (f" (blocks {r['blocks']}: time budget)" if r.get("blocks") else "")
        lines.append(f"| {label} | {_fmt(r['events'])} | {_fmt(r['seconds'])} | {_fmt(r.get('events_per_s'))} | "
                     f"{_fmt(r.get('setup_s'))} | {_fmt(r.get('peak_rss_mb'))} |")
    lines += ["", "| ratio (same run) | value |", "| --- | ---: |"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in results["ratios"].items()]
    if results.get("head_latency"):
        lines += ["", "Head latency (anvil mining one block per second; a probe contribution at a random moment of "
                  "each second; time from the probe's block first being served by the node to the API answering "
                  "with the row; both indexers poll every 250 ms and run side by side):", "",
                  "| indexer | probes | missed | p50 ms | p99 ms | p50 blocks | p99 blocks | max blocks |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for name, s in results["head_latency"].items():
            lines.append(f"| {name} | {s['probes']} | {s['missed']} | {_fmt(s['p50_ms'])} | {_fmt(s['p99_ms'])} | "
                         f"{_fmt(s['p50_blocks'])} | {_fmt(s['p99_blocks'])} | {_fmt(s['max_blocks'])} |")
    lines += ["", "Notes: wall time excludes each arm's set-up (our migrations and ABI table; Ponder's build, "
              "migrations and server start), shown apart. Ponder's time ends when its /status shows the head block "
              "indexed. Peak RSS is the arm's own process (Ponder: its whole process tree, PGlite included); the "
              "PostgreSQL server's memory is not counted for any arm. The raw limit is measured before, between "
              "and after our arms and once more at the end, to show how the shared machine's load moved it; each "
              "ratio to it uses the fastest raw run next to our arm, and also the fastest of the whole run.", ""]
    return "\n".join(lines)
