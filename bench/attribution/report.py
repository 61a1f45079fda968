"""Print the side-by-side table and append a dated section to bench/RESULTS.md."""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Sequence
from pathlib import Path

from bench.attribution.harness import MethodResult, TaskResult
from bench.attribution.tasks import BULK_CONTRIBUTOR, SYBIL_VICTIM

TARGETS = {"auc": 0.95, "loo_spearman": 0.9, "top1": 0.95, "lds": 0.5, "sybil_gain": 0.05}
QUALITY = ("auc", "loo_spearman", "top1", "lds")  # higher is better


def _f(value: float, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


def _pct(value: float) -> str:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return _f(value)
    return f"{value * 100:+.1f}%"


def table(result: TaskResult) -> str:
    head = ("| method | mislabel AUC | LOO Spearman | top-1 | LDS | Sybil gain | bulk share (LOO share "
            f"{result.loo_share.get(BULK_CONTRIBUTOR, 0.0) * 100:.1f}%) | build s (x train) | ms/query @N={result.n_train} | bytes/example |")
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for m in result.methods:
        if m.error:
            lines.append(f"| {m.name} | failed: {m.error[:160]} ||||||||| ")
            continue
        lines.append(f"| {m.name} | {_f(m.auc)} | {_f(m.loo_spearman)} | {_f(m.top1)} | {_f(m.lds)} | "
                     f"{_pct(m.sybil_gain)} | {m.bulk_share * 100:.1f}% | {_f(m.build_seconds, 1)} "
                     f"({_f(m.build_over_training, 2)}x) | {_f(m.query_ms, 1)} | {m.bytes_per_example:,.0f} |")
    lines.append("| target | >= 0.95 | >= 0.9 | >= 0.95 | >= 0.5 | <= +5% | <= LOO share | <= 1x | <= 100 @10k | <= 16,384 |")
    return "\n".join(lines)


def _best(methods: Sequence[MethodResult], key: str) -> MethodResult | None:
    """The method with the highest `key` (NaN counts as lowest); None when there is none."""
    return max(methods, key=lambda m: -1e9 if math.isnan(getattr(m, key)) else getattr(m, key), default=None)


def _named(method: MethodResult | None, key: str) -> str:
    return f"{method.name} {_f(getattr(method, key))}" if method else "—"


def verdict(result: TaskResult) -> list[str]:
    """Ours vs the best anchor vs the target, metric by metric."""
    ours = next((m for m in result.methods if m.name == "ours" and not m.error), None)
    if ours is None:
        return ["ours failed: no verdict"]
    # anchors are the peers and baselines: ours' own design arms ("ours ...") are not anchors
    anchors = [m for m in result.methods if not m.name.startswith("ours") and not m.error]
    out = []
    for key in QUALITY:
        mine = getattr(ours, key)
        if isinstance(mine, float) and math.isnan(mine):
            continue
        best = _best(anchors, key)
        best_txt = f"best anchor {best.name} {_f(getattr(best, key))}" if best else "no anchor"
        target = TARGETS[key]
        status = "met" if mine >= target else f"missed by {target - mine:.3f}"
        lead = ("ahead of" if best is None or mine > getattr(best, key)
                else "level with" if mine == getattr(best, key) else "behind")
        out.append(f"- {key}: ours {_f(mine)} ({lead} {best_txt}); target {target}: {status}")
    if not math.isnan(ours.loo_spearman_owners):
        out.append(f"- LOO Spearman over the data's owners (the Sybil's copy counted as {SYBIL_VICTIM}'s data, both "
                   f"removed together): ours {_f(ours.loo_spearman_owners)} (best anchor "
                   f"{_named(_best(anchors, 'loo_spearman_owners'), 'loo_spearman_owners')})")
    for rule, key in (("gain-weighted (the product's classifier valuation)", "loo_spearman_gain"),
                      ("summed scores", "loo_spearman_summed")):
        if math.isnan(getattr(ours, key)):
            continue
        parts = []
        for suffix, who in (("", "contributors"), ("_owners", "owners")):
            field = key + suffix
            parts.append(f"{who} ours {_f(getattr(ours, field))} (best anchor {_named(_best(anchors, field), field)})")
        out.append(f"- LOO Spearman with every method's values {rule}: " + "; ".join(parts))
    if not math.isnan(ours.top1_signed):  # top-1 above sums the supporting rows (the product's rule)
        out.append(f"- top1 with a signed sum of row scores instead: ours {_f(ours.top1_signed)} (best anchor "
                   f"{_named(_best(anchors, 'top1_signed'), 'top1_signed')})")
    if not math.isnan(ours.lds_one_seed):  # the LDS above is against the mean over several training seeds
        out.append(f"- lds against the first training seed's retrains alone (as in runs with one seed): ours "
                   f"{_f(ours.lds_one_seed)} (best anchor {_named(_best(anchors, 'lds_one_seed'), 'lds_one_seed')})")
    gain = ours.sybil_gain
    if not math.isnan(gain):
        best = min((m for m in anchors if not math.isnan(m.sybil_gain)), key=lambda m: abs(m.sybil_gain), default=None)
        out.append(f"- Sybil gain: ours {_pct(gain)} (closest-to-zero anchor "
                   f"{best.name + ' ' + _pct(best.sybil_gain) if best else '—'}); target <= +5%: "
                   f"{'met' if gain <= 0.05 else 'missed by ' + f'{(gain - 0.05) * 100:.1f} points'}")
    out.append(f"- bulk contributor: ours gives it {ours.bulk_share * 100:.1f}% of the value; its leave-one-out share "
               f"is {result.loo_share.get(BULK_CONTRIBUTOR, 0.0) * 100:.1f}%")
    out.append(f"- index build {ours.build_over_training:.2f}x training time (target <= 1x: "
               f"{'met' if ours.build_over_training <= 1 else 'missed'})")
    for arm in (m for m in result.methods if m.name.startswith("ours") and m.name != "ours" and not m.error):
        parts = []
        for key in QUALITY:
            best = _best(anchors, key)
            lead = "" if best is None else (" (leads)" if getattr(arm, key) > getattr(best, key) else
                                            " (level)" if getattr(arm, key) == getattr(best, key) else " (behind)")
            parts.append(f"{key} {_f(getattr(arm, key))}{lead}")
        out.append(f"- design arm '{arm.name}': " + ", ".join(parts) + f", LOO over owners "
                   f"{_f(arm.loo_spearman_owners)}, Sybil gain {_pct(arm.sybil_gain)}, "
                   f"build {arm.build_over_training:.2f}x training")
    return out


def cpu_model() -> str:
    """The CPU's model name (Linux), so runs on different hosts are not compared as if alike."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            return next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "")
    except OSError:
        return ""


def machine_line(threads: int) -> str:
    load = os.getloadavg()
    cpu = cpu_model()
    host = f"{platform.machine()} VM ({cpu})" if cpu else f"{platform.machine()} VM"
    return (f"{host}, {os.cpu_count()} cores (shared with other sessions), load average "
            f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} at the end of the run; torch threads {threads}, "
            f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '')}")


def section(results: Sequence[TaskResult], command: str, threads: int, date: str, extra: Sequence[str]) -> str:
    parts = [f"## Attribution quality and cost, ours vs peers (issue 6) — `{command}`", "",
             f"{date}; {machine_line(threads)}.", ""]
    for r in results:
        parts += [f"### {r.task}: {r.n_train} training rows, {r.n_test} test rows",
                  f"Full model: trained in {r.train_seconds:.1f} s, test accuracy {r.test_accuracy:.3f}, "
                  f"test loss {r.test_loss:.4f}; {r.lds_retrains} LDS retrains on random halves; leave-one-out "
                  "test-loss change per contributor: " +
                  ", ".join(f"{k} {v:+.4f}" for k, v in r.loo_delta.items()) + ".", "", table(r), ""]
        parts += verdict(r)
        for key, value in r.extra.items():
            parts.append(f"- {key}: {value}")
        notes = [f"{m.name}: {'; '.join(m.notes)}" for m in r.methods if m.notes]
        kinds = [f"{m.name}: {m.self_kind}" for m in r.methods if m.self_kind]
        rules = [f"{m.name}: {m.loo_rule} (" + ", ".join(f"{c} {v:+.3g}" for c, v in m.values.items()) + ")"
                 for m in r.methods if m.loo_rule]
        parts += ["", "Mislabel scores: " + "; ".join(kinds) + ".", "",
                  "Contributor values behind LOO Spearman and the bulk share: " + "; ".join(rules) + ".", "",
                  "Method notes: " + " | ".join(notes) + ".", ""]
    parts += list(extra) + [""]
    return "\n".join(parts)


def append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write("\n" + text)
