"""Render a model valuation as a text table and as a chart (SVG; PNG through the same layout).

The SVG is written by hand (no plotting library is a runtime dependency) and is deterministic:
the same valuation gives the same bytes, so a report can be stored by CID and rechecked.
Bars are signed: value to the right of the axis lowered held-out loss, to the left raised it.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.sax.saxutils import escape

from provenant.attribution.aggregate import PPM, Share
from provenant.attribution.valuation import Valuation

TOP_CONTRIBUTIONS = 12
ROW_HEIGHT = 22
WIDTH = 860
LABEL_WIDTH = 260
BAR_WIDTH = 420


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    share_ppm: int


def sections(valuation: Valuation) -> list[tuple[str, list[Bar]]]:
    """(title, bars) for Datanets, contributors and the contributions with the largest |value|."""
    def bars(shares: tuple[Share, ...], prefix: str) -> list[Bar]:
        return [Bar(f"{prefix}{s.key}", s.score, s.ppm) for s in shares]

    top = sorted(valuation.attribution.contributions, key=lambda s: (-abs(s.score), s.key))[:TOP_CONTRIBUTIONS]
    return [("Datanets", bars(valuation.attribution.datanets, "Datanet ")),
            ("Contributors", bars(valuation.attribution.contributors, "")),
            (f"Contributions (top {len(top)} by |value|)", bars(tuple(top), "contribution "))]


def _short(label: str, limit: int = 34) -> str:
    return label if len(label) <= limit else label[:limit - 12] + "..." + label[-9:]


def render_table(valuation: Valuation) -> str:
    """Plain-text table: one block per level, value (part of the held-out gain, nats per row) and share."""
    lines = [f"Value of the training data of {valuation.model}, measured on {valuation.eval_rows} held-out rows",
             "(value > 0: lowered held-out loss; share: of the positive part)"]
    if valuation.baseline:
        side = "below" if valuation.gain >= 0 else "above"
        lines.append(f"The model's held-out loss is {abs(valuation.gain):.4g} nats per row {side} "
                     f"{valuation.baseline}'s; each held-out row the model improved hands out its gain "
                     "through its influences, and the other rows hand out nothing.")
        if valuation.gain < 0:  # shares of the positive part would read as earnings the model never made
            lines.append(f"The model does worse than {valuation.baseline} on held-out rows overall: the values "
                         "share out the rows it improved, a gain it did not make on net.")
    if not any(s.ppm for s in valuation.attribution.datanets):
        # each value is a small difference of large positive and negative influences; when every
        # Datanet nets <= 0 there is no positive part to share, and a row of 0% would read as "worthless"
        lines.append("No Datanet lowered the held-out loss on net, so no shares are given; "
                     "compare the signed values instead.")
    for title, bars in sections(valuation):
        lines += ["", title, f"  {'who':<44} {'value':>14} {'share':>9}"]
        lines += [f"  {_short(b.label, 44):<44} {b.value:>14.6g} {100 * b.share_ppm / PPM:>8.2f}%" for b in bars]
    return "\n".join(lines) + "\n"


def render_svg(valuation: Valuation) -> str:
    parts: list[str] = []
    y = 40
    for title, bars in sections(valuation):
        y += 10
        parts.append(f'<text x="10" y="{y}" font-weight="bold">{escape(title)}</text>')
        y += 8
        peak = max((abs(b.value) for b in bars), default=0.0) or 1.0
        axis = LABEL_WIDTH + BAR_WIDTH // 2 if any(b.value < 0 for b in bars) else LABEL_WIDTH
        half = BAR_WIDTH // 2 if axis != LABEL_WIDTH else BAR_WIDTH
        for b in bars:
            length = abs(b.value) / peak * half
            x = axis if b.value >= 0 else axis - length
            colour = "#2e7d32" if b.value >= 0 else "#c62828"
            parts.append(f'<text x="10" y="{y + 15}">{escape(_short(b.label))}</text>')
            parts.append(f'<rect x="{x:.1f}" y="{y + 4}" width="{length:.1f}" height="{ROW_HEIGHT - 8}" fill="{colour}"/>')
            parts.append(f'<text x="{LABEL_WIDTH + BAR_WIDTH + 10}" y="{y + 15}">'
                         f'{100 * b.share_ppm / PPM:.1f}%  ({b.value:.3g})</text>')
            y += ROW_HEIGHT
        parts.append(f'<line x1="{axis}" y1="{y - ROW_HEIGHT * len(bars)}" x2="{axis}" y2="{y}" stroke="#555"/>')
        y += 10
    header = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{y + 20}" '
              f'viewBox="0 0 {WIDTH} {y + 20}" font-family="sans-serif" font-size="13">')
    title = (f'<text x="10" y="24" font-size="16" font-weight="bold">{escape(valuation.model)}: value of training '
             f'data on {valuation.eval_rows} held-out rows</text>')
    return "\n".join([header, '<rect width="100%" height="100%" fill="white"/>', title, *parts, "</svg>"]) + "\n"
