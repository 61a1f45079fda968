"""Earnings per Datanet: what the chain does not say, read from the epochs' public results.

On chain, an epoch's payout is one Merkle root and each account's claim is one `Claimed(model,
epoch, account, amount)`: an account's earnings per model (and epoch) come from the chain alone
(queries.account_earnings). How an epoch's allocation to an account divides among Datanets is
only in the epoch's results document (settlement/results.py), stored by CID in the content store
and named by `EpochSettled.resultsCid`: `contribution_amounts` (contribution id -> amount: the
contributor's share, rule 3 of settlement/epoch.py) and `datanet_amounts` with the curators in
`inputs.curators` (rule 4: a Datanet's curator pool, split equally). Joined with the index's
contributions (contribution -> Datanet, contributor), that gives each contributor's and each
curator's earnings per model and per Datanet.

The content store checks every block against its CID on read, and the CID is the one the
attributors' quorum signed on chain, so a document that loads is the settled one. An epoch whose
document is not in the store is listed as unavailable, never guessed.
"""

from __future__ import annotations

import json
from collections import OrderedDict, defaultdict
from typing import Any, Callable, Iterable

from sqlalchemy import Connection, select

from provenant_indexer import schema as s

ResultsLoader = Callable[[str], bytes]  # CID -> bytes, e.g. provenant.store.ContentStore.get


class ResultsDocuments:
    """Parsed results documents by CID; immutable by construction, so cached (LRU)."""

    def __init__(self, load: ResultsLoader, size: int = 1024) -> None:
        self._load, self._size = load, size
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def get(self, cid: str) -> dict[str, Any]:
        """The document, or raises (the store's error: not found, unavailable, corrupt)."""
        if cid in self._cache:
            self._cache.move_to_end(cid)
            return self._cache[cid]
        document = json.loads(self._load(cid))
        self._cache[cid] = document
        if len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return document


def _epochs(conn: Connection, model_ids: Iterable[int]) -> list[Any]:
    ids = sorted(set(model_ids))
    if not ids:
        return []
    e = s.epochs.c
    return list(conn.execute(select(e.model_id, e.epoch, e.results_cid).where(e.model_id.in_(ids))
                             .order_by(e.model_id, e.epoch)))


def per_datanet(conn: Connection, address: str, documents: ResultsDocuments | None) -> dict[str, Any]:
    """An account's earnings per (model, Datanet), as contributor and as curator."""
    a = address.lower()
    if documents is None:
        return {"available": False, "reason": "no content store configured for the index API: per-Datanet "
                "earnings need the epochs' results documents", "rows": [], "datanets": [], "unavailable_epochs": []}
    c, mc, md = s.contributions.c, s.model_contributions.c, s.model_datanets.c
    mine = dict(conn.execute(select(c.contribution_id, c.datanet_id).where(c.contributor == a)).all())
    curated = set(conn.scalars(select(s.curator_changes.c.datanet_id).where(s.curator_changes.c.account == a)))
    models = set(conn.scalars(select(mc.model_id).where(mc.contribution_id.in_(sorted(mine))))) if mine else set()
    if curated:
        models |= set(conn.scalars(select(md.model_id).where(md.datanet_id.in_(sorted(curated)))))
    rows: dict[tuple[int, int], dict[str, int]] = defaultdict(lambda: {"as_contributor": 0, "as_curator": 0,
                                                                     "epochs": 0})
    unavailable = []
    for model_id, epoch, cid in _epochs(conn, models):
        try:
            doc = documents.get(cid)
        except Exception as exc:  # noqa: BLE001 - any store failure makes this epoch unavailable, reported
            unavailable.append({"model_id": model_id, "epoch": epoch, "results_cid": cid,
                                "reason": f"{type(exc).__name__}: {exc}"})
            continue
        if int(doc.get("model_id", -1)) != model_id or int(doc.get("epoch", -1)) != epoch:
            unavailable.append({"model_id": model_id, "epoch": epoch, "results_cid": cid,
                                "reason": "the document names another model or epoch"})
            continue
        touched: set[tuple[int, int]] = set()
        for contribution, amount in doc.get("contribution_amounts", {}).items():
            datanet = mine.get(int(contribution))
            if datanet is not None and int(amount):
                rows[(model_id, datanet)]["as_contributor"] += int(amount)
                touched.add((model_id, datanet))
        for datanet, accounts in (doc.get("inputs", {}).get("curators") or {}).items():
            members = {x.lower() for x in accounts}
            pool = int(doc.get("datanet_amounts", {}).get(str(datanet), 0))
            if a in members and pool:
                rows[(model_id, int(datanet))]["as_curator"] += pool // len(members)
                touched.add((model_id, int(datanet)))
        for key in touched:
            rows[key]["epochs"] += 1
    totals: dict[int, dict[str, int]] = defaultdict(lambda: {"as_contributor": 0, "as_curator": 0})
    for (_, datanet), v in rows.items():
        totals[datanet]["as_contributor"] += v["as_contributor"]
        totals[datanet]["as_curator"] += v["as_curator"]
    return {
        "available": not unavailable,
        "rows": [{"model_id": m, "datanet_id": d, "as_contributor": str(v["as_contributor"]),
                  "as_curator": str(v["as_curator"]), "epochs": v["epochs"]} for (m, d), v in sorted(rows.items())],
        "datanets": [{"datanet_id": d, "as_contributor": str(v["as_contributor"]), "as_curator": str(v["as_curator"])}
                     for d, v in sorted(totals.items())],
        "unavailable_epochs": unavailable,
    }
