"""The demo's closing table: who carried the weight, who was paid, and whether it adds up."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table

WEI = 10**18


def tokens(wei: int) -> str:
    whole, frac = divmod(wei, WEI)
    return f"{whole}.{frac:018d}"


@dataclass
class Ledger:
    """Figures gathered at the end of the thread, all in wei."""

    datanet_names: dict[int, str]
    contributor_names: dict[str, str]  # address -> name
    contributor_share: dict[str, float]  # fee-weighted attribution share of the positive part
    datanet_share: dict[int, float]
    claimed: dict[str, int]  # address -> claimed
    datanet_of_contributor: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    curator_claims: dict[int, int] = field(default_factory=dict)
    paid_in: int = 0
    paid_out: int = 0
    left_in_escrow: int = 0
    owner_paid: int = 0
    protocol_paid: int = 0
    held_by_contracts: int = 0

    @property
    def balanced(self) -> bool:
        return self.paid_in == self.paid_out + self.left_in_escrow and self.left_in_escrow == self.held_by_contracts


def render(ledger: Ledger, console: Console) -> None:
    table = Table(title="Provenance thread: attribution and payouts", show_lines=False)
    table.add_column("Datanet / contributor")
    table.add_column("attribution share", justify="right")
    table.add_column("tokens claimed (PVN)", justify="right")
    for datanet_id, name in sorted(ledger.datanet_names.items()):
        table.add_row(f"[bold]Datanet {datanet_id}: {name}[/bold]", f"{ledger.datanet_share.get(datanet_id, 0.0):.2%}",
                      "")
        table.add_row("  its curator", "", tokens(ledger.curator_claims.get(datanet_id, 0)))
        for address, contributor in sorted(ledger.contributor_names.items(), key=lambda kv: kv[1]):
            if datanet_id in ledger.datanet_of_contributor.get(address, set()):
                table.add_row(f"  {contributor} ({address[:10]}…)", f"{ledger.contributor_share.get(address, 0.0):.2%}",
                              tokens(ledger.claimed.get(address, 0)))
    # Calls whose every contribution had a net negative influence credit nobody: their share of
    # the contributors' and curators' budgets is carried to the next epoch as dust.
    unattributed = max(0.0, 1.0 - sum(ledger.datanet_share.values()))
    table.add_row("[italic]no positive influence found (carried)[/italic]", f"{unattributed:.2%}", "")
    console.print(table)
    totals = Table(title="Totals (wei-exact)")
    totals.add_column("what")
    totals.add_column("PVN", justify="right")
    totals.add_row("paid in (consumer deposits)", tokens(ledger.paid_in))
    totals.add_row("paid out (claims + model owner + protocol)", tokens(ledger.paid_out))
    totals.add_row("  of which model owner", tokens(ledger.owner_paid))
    totals.add_row("  of which protocol", tokens(ledger.protocol_paid))
    totals.add_row("left in escrow (unspent deposits, unclaimed, carried dust)", tokens(ledger.left_in_escrow))
    totals.add_row("held by the contracts (balanceOf)", tokens(ledger.held_by_contracts))
    totals.add_row("paid in - paid out - left", str(ledger.paid_in - ledger.paid_out - ledger.left_in_escrow))
    console.print(totals)
