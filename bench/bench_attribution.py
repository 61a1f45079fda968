"""Attribution benchmark (issue 6): ours vs TRAK, Kronfluence, dattri, DataInf, grad-dot, TF-IDF, embeddings.

    bash bench/attribution/setup_venv.sh          # once: the peers, in bench/.venv-attribution
    nice -n 10 bench/.venv-attribution/bin/python bench/bench_attribution.py [--quick] [--peers none]

Two tasks with known ground truth (bench/attribution/tasks.py): MiniLM + LoRA true/false
classification (the factory trainer, the product's index), and a small pretrained Llama + LoRA causal LM.
Per method: mislabel ROC-AUC, leave-one-contributor-out Spearman (6 retrains), top-1 contributor
accuracy, LDS over random-half retrains, Sybil gain, the bulk contributor's share, build time vs
training, per-query latency and bytes per example. Prints a table and appends a dated section to
bench/RESULTS.md (unless --no-write). It measures; it asserts nothing about time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.attribution import report  # noqa: E402
from bench.attribution.harness import TaskResult, log, run_task  # noqa: E402
from bench.attribution.tasks import (CLASSIFICATION_FLIPPED_SKILL, FLIPPED_CONTRIBUTOR, SKILL_OWNER,  # noqa: E402
                                     BULK_STYLES, SYBIL_EDITS, causal_task, classification_task)
from provenant.attribution.index import IndexSettings  # noqa: E402


def _peers_available() -> list[str]:
    found = []
    for module, names in (("trak", ["TRAK"]), ("kronfluence", ["Kronfluence"]), ("dattri", ["dattri-TracIn", "dattri-IF"])):
        try:
            __import__(module)
            found += names
        except ImportError:
            pass
    return found


def design_overrides(arm: str) -> dict[str, object]:
    """'damping_ratio=3,projection=gaussian' -> IndexSettings overrides, each value of its field's type."""
    defaults = IndexSettings()
    overrides: dict[str, object] = {}
    for item in arm.split(","):
        key, _, value = item.partition("=")
        if not hasattr(defaults, key) or not value:
            raise SystemExit(f"design arm {arm!r}: {item!r} is not field=value of IndexSettings")
        kind = type(getattr(defaults, key))
        overrides[key] = value.lower() in ("1", "true") if kind is bool else kind(value)
    return overrides


def _test_weights(text: str) -> dict[str, int]:
    """'category=4,negation=3,order=2,size=1' -> {skill: weight}; every skill once, weights >= 1."""
    weights: dict[str, int] = {}
    for item in text.split(","):
        skill, _, value = item.partition("=")
        if skill not in SKILL_OWNER or not value.isdigit() or int(value) < 1:
            raise argparse.ArgumentTypeError(f"{item!r} is not skill=N with a skill of {sorted(SKILL_OWNER)} and N >= 1")
        weights[skill] = int(value)
    if set(weights) != set(SKILL_OWNER):
        raise argparse.ArgumentTypeError(f"give a weight for each of {sorted(SKILL_OWNER)}")
    return weights


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small tasks, 10 LDS retrains (minutes, not an hour)")
    parser.add_argument("--tasks", nargs="+", default=["classification", "causal"], choices=["classification", "causal"])
    parser.add_argument("--peers", nargs="*", default=None,
                        help="peer names (TRAK Kronfluence dattri-TracIn dattri-IF); default: every installed one but "
                             "dattri-IF; 'none' for none")
    parser.add_argument("--lds", type=int, default=None,
                        help="LDS retrains (default: classification 50, quick 10; causal 0, ~16 s per retrain)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--task-seed", type=int, default=0,
                        help="draw of both tasks' generated rows (default 0; another draw checks a design choice)")
    parser.add_argument("--rows-per-skill", type=int, default=None, help="classification rows per skill (default 64, quick 32)")
    parser.add_argument("--bulk-rows", type=int, default=None, help="classification bulk rows (default 3x rows per skill)")
    parser.add_argument("--design-arms", nargs="*", default=[],
                        help="extra 'ours' arms, each a comma-separated list of IndexSettings fields (e.g. "
                             "damping_ratio=3 projection=gaussian,curvature=module): the engine's index at every "
                             "snapshot, built with other settings")
    parser.add_argument("--final-only-arm", action="store_true",
                        help="add the design arm 'ours, final adapter only': the engine indexing the final "
                             "adapter alone (IndexSettings(snapshots=1)), as sessions 1-8 shipped it")
    parser.add_argument("--lm-pretrain-steps", type=int, default=1200,
                        help="causal task: pretrain the small Llama base this many steps on generated string "
                             "primitives first (cached under bench/.cache/attribution; ~6 min once); 0: its random init")
    parser.add_argument("--sybil-seeds", type=int, default=3,
                        help="training seeds of the two Sybil worlds (with the copy / submitted once) whose payouts "
                             "are averaged for the Sybil gain (default 3; 1: the single retrained pair)")
    parser.add_argument("--loo-seeds", type=int, default=3,
                        help="training seeds each leave-one-out test-loss change is averaged over (default 3)")
    parser.add_argument("--lds-seeds", type=int, default=1,
                        help="training seeds per LDS subset (default 1); with 2 or more the LDS's truth is their mean "
                             "test loss and the seeds' agreement (the LDS any method could reach) is reported")
    parser.add_argument("--sybil-edit", choices=sorted(SYBIL_EDITS), default="verbatim",
                        help="classification: the Sybil edits each copied row by one word ('append' at the end, "
                             "'insert' in the middle) instead of copying it (default: verbatim)")
    parser.add_argument("--flipped-skill", choices=sorted(SKILL_OWNER), default=CLASSIFICATION_FLIPPED_SKILL,
                        help="classification: the skill whose teacher mislabels some rows (default negation, "
                             "which MiniLM learns; sessions 1-12 used order, which it does not)")
    parser.add_argument("--cls-epochs", type=int, default=None,
                        help="classification: training epochs of every model (default 3, ClsConfig); at 3 the "
                             "classifier is barely above a uniform guess on some draws")
    parser.add_argument("--cls-lr", type=float, default=None,
                        help="classification: learning rate of every model (default 2e-3, ClsConfig)")
    parser.add_argument("--test-weights", type=_test_weights, default=None,
                        help="classification: test rows per skill as multiples, e.g. category=4,negation=3,order=2,"
                             "size=1 (default 1 each); graded weights give the teachers graded leave-one-out values")
    parser.add_argument("--bulk-style", choices=sorted(BULK_STYLES), default="contrast",
                        help="classification: the bulk contributor's rows; 'contrast' (the default) are contrastive "
                             "pairs that teach negation's pattern, 'inert' carry a cue no test row has")
    parser.add_argument("--retrain-steps", choices=("matched", "epochs"), default="matched",
                        help="leave-one-out and LDS retrains take the full model's optimizer steps per epoch "
                             "(matched, the default: a smaller batch on fewer rows) or the settings' batch size "
                             "(epochs: fewer steps on fewer rows, the truth of sessions 1-13)")
    parser.add_argument("--keep-repeats", action="store_true",
                        help="train repeated rows as often as they occur (the benchmark before the Factory's dedup step)")
    parser.add_argument("--dump", default=None, metavar="PREFIX",
                        help="save each task's scores and retrains' per-test-row losses to PREFIX-<task>.npz")
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to bench/RESULTS.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from bench.attribution.peers import PEERS

    installed = _peers_available()
    # dattri-IF (Arnoldi) only on request: it did not finish in 300 s on 52 rows on 2 loaded cores
    default = [p for p in PEERS if p != "dattri-IF"]
    wanted = default if args.peers is None else ([] if args.peers == ["none"] else args.peers)
    missing = [p for p in wanted if p not in installed]
    peers = [p for p in wanted if p in installed]
    extra = []
    if missing:
        extra.append(f"Peers not run because their package is not importable in {sys.executable}: {missing} "
                     "(run bash bench/attribution/setup_venv.sh and use bench/.venv-attribution/bin/python).")
    lds = args.lds if args.lds is not None else (10 if args.quick else 50)
    started = time.perf_counter()
    results: list[TaskResult] = []
    if "classification" in args.tasks:
        from bench.attribution.cls_backend import ClsBackend, ClsConfig

        per_skill = args.rows_per_skill or (32 if args.quick else 64)
        task = classification_task(rows_per_skill=per_skill, bulk_rows=args.bulk_rows or 3 * per_skill,
                                   test_per_skill=16 if args.quick else 20, sybil_edit=args.sybil_edit,
                                   seed=args.task_seed, flipped_skill=args.flipped_skill,
                                   test_weights=args.test_weights, bulk_style=args.bulk_style)
        arms = [design_overrides(arm) for arm in args.design_arms]
        config = ClsConfig()
        config = replace(config, settings=replace(config.settings, epochs=args.cls_epochs or config.settings.epochs,
                                                  learning_rate=args.cls_lr or config.settings.learning_rate))
        backend = ClsBackend(task, config, peers, arms, args.final_only_arm)
        result = run_task(task, backend.backend(), lds_retrains=lds, sybil_seeds=args.sybil_seeds,
                          dedup=not args.keep_repeats, loo_seeds=args.loo_seeds,
                          lds_seeds=args.lds_seeds, retrain_steps=args.retrain_steps,
                          dump=args.dump and f"{args.dump}-{task.name}.npz")
        result.extra.update({f"ours per-answer latency at 10,000 training rows ({k})": f"{v:.1f} ms"
                             for k, v in backend.latency.items()})
        result.extra[f"test accuracy per skill (its owner; {FLIPPED_CONTRIBUTOR}'s rows hold the flipped labels)"] = \
            backend.full_model_skills
        results.append(result)
        print(report.table(result), flush=True)
    if "causal" in args.tasks:
        from bench.attribution.lm_backend import LmBackend, LmConfig

        task = (causal_task(rows_per_skill=24, bulk_rows=48, test_per_skill=8, seed=args.task_seed) if args.quick
                else causal_task(seed=args.task_seed))
        from bench.attribution.lm_model import LmSettings

        backend = LmBackend(task, LmConfig(LmSettings(pretrain_steps=args.lm_pretrain_steps)), peers,
                            args.final_only_arm, [design_overrides(arm) for arm in args.design_arms])
        result = run_task(task, backend.backend(), lds_retrains=args.lds or 0, sybil_seeds=args.sybil_seeds,
                          dedup=not args.keep_repeats, loo_seeds=args.loo_seeds,
                          lds_seeds=args.lds_seeds, retrain_steps=args.retrain_steps,
                          dump=args.dump and f"{args.dump}-{task.name}.npz")
        result.extra.update({f"per-skill test loss / exact match ({e['model']})":
                             ", ".join(f"{k} {v[0]:.3f} / {v[1]:.2f}" for k, v in e.items() if k != "model")
                             for e in backend.per_skill[:2]})
        results.append(result)
        print(report.table(result), flush=True)
    log(f"total {time.perf_counter() - started:.0f}s")
    command = "nice -n 10 bench/.venv-attribution/bin/python bench/bench_attribution.py " + " ".join(argv or sys.argv[1:])
    text = report.section(results, command, args.threads, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), extra)
    print(text)
    if not args.no_write:
        report.append(ROOT / "bench" / "RESULTS.md", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
