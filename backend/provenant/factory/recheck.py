"""Recheck a model's selection from public data: the frozen selection document (by CID), the chain
and the manifest must tell one story.

`verify model` already recomputes every lineage leaf from the content store (the rows hash of
exactly the recorded row indices). This adds what the leaves alone cannot show: that the recorded
training rows and held-out rows are the ones the published filters and seed select from the
approved contributions (`plan_selection` rerun on the chain's data and, for the rows dropped as
repeats, on the rows' keys from the content store), and that no held-out row trained. Light on
purpose (no torch), so that a verifier can import it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from provenant.chain.client import ChainClient
from provenant.chain.deploy import Contracts
from provenant.factory.lineage import Manifest
from provenant.datanets.service import DatanetService
from provenant.factory.selection import Candidate, SelectionFilters, plan_selection, row_key, row_texts
from provenant.store.blockstore import ContentError, ContentStore


def selection_problems(client: ChainClient, contracts: Contracts, store: ContentStore, manifest: Manifest) -> list[str]:
    """Reasons the manifest's selection does not hold up; empty when it does (or when the manifest
    predates frozen selections: then the lineage leaves are all there is to check)."""
    cid = manifest.selection.get("cid")
    if not cid:
        return []
    try:
        doc: dict[str, Any] = json.loads(store.get(cid))
        filters = SelectionFilters.from_dict(doc["filters"])
        frozen = {c["contribution_id"]: c for c in doc["contributions"]}
    except Exception as exc:  # noqa: BLE001 - any failure to read it is the finding
        return [f"frozen selection {cid} unreadable: {exc}"]
    problems: list[str] = []
    for entry in manifest.contributions:
        c = frozen.get(entry.contribution_id)
        if c is None:
            problems.append(f"contribution {entry.contribution_id} trained but is not in the frozen selection")
            continue
        used = list(range(c["rows"])) if entry.row_indices is None else list(entry.row_indices)
        if used != c["train"]:
            problems.append(f"contribution {entry.contribution_id}: trained rows differ from the frozen selection")
        if set(c["train"]) & set(c["held_out"]):
            problems.append(f"contribution {entry.contribution_id}: a held-out row also trained")
    held = {str(k): v["held_out"] for k, v in frozen.items() if v["held_out"]}
    if held != manifest.selection.get("held_out", {}):
        problems.append("held-out rows in the manifest differ from the frozen selection")
    if problems or filters == SelectionFilters(dedup=False):
        return problems  # no filter and no dedup: the leaves' "every row" already says it all
    blocks: dict[int, tuple[int, int]] = {}
    for datanet_id in sorted({c["datanet_id"] for c in frozen.values()}):
        logs = contracts.datanets.events.ContributionSubmitted.get_logs(
            from_block=contracts.manifest.block_number, argument_filters={"datanetId": datanet_id})
        for log in logs:
            block = int(log["blockNumber"])
            blocks[int(log["args"]["contributionId"])] = (block, int(client.w3.eth.get_block(block)["timestamp"]))
    try:
        contents = _row_contents(client, contracts, store, frozen.values()) if filters.dedup else {}
        candidates = [Candidate(c["contribution_id"], c["datanet_id"], c["contributor"], c["rows"],
                                *blocks[c["contribution_id"]], *contents.get(c["contribution_id"], ((), ())))
                      for c in frozen.values()]
        replanned = {p.contribution_id: p for p in plan_selection(candidates, filters, int(doc["seed"]))}
    except (KeyError, ValueError) as exc:  # SelectionError is a ValueError, as is unreadable content
        return [f"the frozen selection cannot be replanned from the chain: {exc}"]
    for cid_, c in sorted(frozen.items()):
        plan = replanned.get(cid_)
        if plan is None or (list(plan.train), list(plan.held_out), list(plan.repeats)) != (
                c["train"], c["held_out"], c.get("repeats", [])):
            problems.append(f"contribution {cid_}: the published filters and seed select other rows than recorded")
    return problems


def _row_contents(client: ChainClient, contracts: Contracts, store: ContentStore, frozen: Iterable[dict[str, Any]]
                  ) -> dict[int, tuple[tuple[str, ...], tuple[tuple[str, str], ...]]]:
    """Contribution id -> (the key of each of its rows, their (text, label) when classification),
    from the content store (integrity-checked against the chain's hash); a contribution whose
    content differs from the frozen one raises."""
    datanets = DatanetService(client, contracts, store)
    contents: dict[int, tuple[tuple[str, ...], tuple[tuple[str, str], ...]]] = {}
    for c in frozen:
        record = datanets.contribution(c["contribution_id"])
        if (record.cid, record.content_hash) != (c["cid"], c["content_hash"]):
            raise ValueError(f"contribution {record.contribution_id} on chain differs from the frozen selection")
        try:
            rows = datanets.load_rows(record)
        except (ContentError, ValueError, OSError) as exc:  # missing or tampered: the replan cannot be made
            raise ValueError(f"contribution {record.contribution_id}: content unreadable: {exc}") from exc
        contents[record.contribution_id] = (tuple(row_key(row) for row in rows), row_texts(rows))
    return contents
