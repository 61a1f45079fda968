"""An action's data ancestry, and who is owed what from its earnings: one public rule.

**The rule.** Take the action and every action beneath it (its parents, recursively; each once).
Each model-call receipt listed by one of those actions carries a *mass*:
  - by default its fee (token wei), so what the agent paid more for weighs more;
  - when the action listing it declares signed `weights_ppm`, the action's total fee is split among
    its model calls by those weights instead (the agent says which calls its decision rested on);
  - when every call beneath the action is free (total fee 0), each call's fee counts as 1.
A call's weight is its mass over the total mass (exact rationals). The action's share of a key
(a model, a contribution, a contributor, a Datanet) is the weighted sum of that key's `share_ppm`
in each call's receipt attribution (a model's share in its own call is 1,000,000). Shares are
integers in ppm: **floor** of the exact share times 1,000,000; whatever floors and the receipts'
own top-k cut leave out is reported as `unattributed`, so the shares never add up to more than
1,000,000 and anyone recomputes the same integers.

**Owed.** The royalty pool is the sum, over the same actions, of floor(value_earned * royalty_ppm
/ 1e6). It is routed to the models by their shares (floor), and within the settlement's split it
reaches contributors (contributors' bps * contributor share), Datanet curators (curators' bps *
Datanet share), model owners (owner bps * model share) and the protocol (protocol bps), each
floored; what flooring leaves is dust that stays with the agent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Iterable

from provenant.agents.receipts import PPM, ActionReceipt
from provenant.serving.receipts import Receipt

DIMENSIONS = ("models", "contributions", "contributors", "datanets")
BPS = 10_000


@dataclass(frozen=True)
class Split:
    protocol_bps: int
    owner_bps: int
    curators_bps: int
    contributors_bps: int


@dataclass(frozen=True)
class OwedRow:
    role: str  # model | contributor | curator | owner | protocol
    key: str  # model id, contributor address, Datanet id, owner address, "protocol"
    share_ppm: int
    amount_wei: int


@dataclass
class Ancestry:
    shares: dict[str, dict[str, int]]  # dimension -> key -> ppm
    unattributed: dict[str, int]  # dimension -> ppm the rule could not assign
    call_weights: dict[str, Fraction]  # call id -> weight (exact)
    fees_by_model: dict[str, int]  # model id -> fees paid in the calls beneath the action
    pool_wei: int = 0
    owed: list[OwedRow] = field(default_factory=list)
    dust_wei: int = 0


def call_masses(actions: Iterable[ActionReceipt], calls: dict[str, Receipt]) -> dict[str, Fraction]:
    """The mass of every model call listed by `actions` (see the module's rule)."""
    actions = list(actions)
    free = sum(calls[c].fee for a in actions for c in a.model_call_ids) == 0
    masses: dict[str, Fraction] = {}
    for action in actions:
        fees = [1 if free else calls[c].fee for c in action.model_call_ids]
        if action.weights_ppm:
            total = sum(fees)
            for call_id, weight in zip(action.model_call_ids, action.weights_ppm):
                masses[call_id] = Fraction(total * weight, PPM)
        else:
            masses.update({c: Fraction(f) for c, f in zip(action.model_call_ids, fees)})
    return masses


def compute_ancestry(actions: Iterable[ActionReceipt], calls: dict[str, Receipt],
                     split: Split | None = None, owners: dict[str, str] | None = None) -> Ancestry:
    """Ancestry of the action whose sub-DAG is `actions` (each once), and the owed table."""
    actions = list(actions)
    masses = call_masses(actions, calls)
    total = sum(masses.values(), Fraction(0))
    weights = {c: (m / total if total else Fraction(0)) for c, m in masses.items()}
    exact: dict[str, dict[str, Fraction]] = {d: {} for d in DIMENSIONS}
    fees_by_model: dict[str, int] = {}
    for call_id, weight in weights.items():
        receipt = calls[call_id]
        model = str(receipt.model_id)
        fees_by_model[model] = fees_by_model.get(model, 0) + receipt.fee
        exact["models"][model] = exact["models"].get(model, Fraction(0)) + weight
        for dim in ("contributions", "contributors", "datanets"):
            for row in receipt.attribution.get(dim, []):
                key = str(row["id"]).lower() if dim == "contributors" else str(row["id"])
                share = Fraction(int(row["share_ppm"]), PPM)
                exact[dim][key] = exact[dim].get(key, Fraction(0)) + weight * share
    shares = {d: {k: int(v * PPM) for k, v in sorted(exact[d].items())} for d in DIMENSIONS}
    shares = {d: {k: v for k, v in s.items() if v > 0} for d, s in shares.items()}
    unattributed = {d: PPM - sum(shares[d].values()) if weights else PPM for d in DIMENSIONS}
    ancestry = Ancestry(shares=shares, unattributed=unattributed, call_weights=weights, fees_by_model=fees_by_model)
    ancestry.pool_wei = sum(a.value_earned * a.royalty_ppm // PPM for a in actions)
    if split is not None:
        ancestry.owed = owed_rows(ancestry, split, owners or {})
        ancestry.dust_wei = ancestry.pool_wei - sum(r.amount_wei for r in ancestry.owed if r.role != "model")
    return ancestry


def owed_rows(ancestry: Ancestry, split: Split, owners: dict[str, str]) -> list[OwedRow]:
    """Who is owed what of the royalty pool (the model rows say where it is routed)."""
    pool, s = ancestry.pool_wei, ancestry.shares
    rows = [OwedRow("model", m, ppm, pool * ppm // PPM) for m, ppm in s["models"].items()]
    rows += [OwedRow("contributor", k, ppm, pool * split.contributors_bps * ppm // (BPS * PPM))
             for k, ppm in s["contributors"].items()]
    rows += [OwedRow("curator", f"datanet {k}", ppm, pool * split.curators_bps * ppm // (BPS * PPM))
             for k, ppm in s["datanets"].items()]
    rows += [OwedRow("owner", owners.get(m, f"owner of model {m}"), ppm, pool * split.owner_bps * ppm // (BPS * PPM))
             for m, ppm in s["models"].items()]
    rows.append(OwedRow("protocol", "protocol", PPM, pool * split.protocol_bps // BPS))
    return rows
