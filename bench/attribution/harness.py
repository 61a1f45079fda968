"""Run every method on one task and score it against ground truth (retraining where needed).

For a task: train the full model; run each method on it (scores for the test rows at their true
labels, self-scores for the training rows); retrain without each contributor (leave-one-out,
also the 'submitted once' world for the Sybil); retrain on random half subsets (LDS); run each
method again on the model trained without the Sybil, and on both worlds trained with further seeds
(the Sybil gain is a ratio of expected payouts); then compute the metrics side by side.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from bench.attribution import metrics
from bench.attribution.methods import MethodOutput
from bench.attribution.tasks import BULK_CONTRIBUTOR, CONTRIBUTORS, SYBIL, SYBIL_VICTIM, Row, Task
from provenant.attribution.aggregate import ANSWER_RULE
from provenant.factory.selection import Candidate, find_repeats, row_key, row_texts


@dataclass
class Trained:
    """What a task backend returns for a model trained on a subset of the task's rows."""

    model: object
    ids: np.ndarray  # indices into task.train
    seconds: float
    test_losses: np.ndarray  # (Q,)
    test_correct: np.ndarray  # (Q,) bool
    seed: int = 0  # the training seed (LoRA init, batch order)


@dataclass
class Backend:
    """How to train on and attribute one task kind; `methods` maps a name to a runner."""

    # (row ids, training seed, steps_like): steps_like, when given, is the number of rows whose
    # optimizer steps per epoch the run matches (`matched_batch_size`); None: the settings' batch size
    train: Callable[[Sequence[int], int, int | None], Trained]
    methods: dict[str, Callable[[Trained, Sequence[Row], bool], MethodOutput]]
    # each test row's loss before the task's data, a model that learned nothing from it: the
    # gain-weighted valuation weighs each test row by the full model's reduction of it; None: not reported
    baseline_losses: Callable[[], np.ndarray] | None = None
    # how ours values contributors on this task kind: "gain-weighted" (the product's classifier
    # valuation, `valuation.gain_weighted`) or "summed" (summed scores, as every anchor)
    ours_valuation: str = "summed"


@dataclass
class SybilWorlds:
    """One training seed's two Sybil worlds, and each method's output on both."""

    with_copy: Trained
    once: Trained  # trained without the Sybil's rows: the data submitted once
    runs_with_copy: dict[str, MethodOutput | str]
    runs_once: dict[str, MethodOutput | str]


@dataclass
class MethodResult:
    name: str
    auc: float = float("nan")
    self_kind: str = ""
    loo_spearman: float = float("nan")
    loo_spearman_owners: float = float("nan")  # the Sybil's copy counted as the victim's data (see run_task)
    loo_rule: str = ""  # how loo_spearman values contributors: "gain-weighted" or "summed" (Backend.ours_valuation)
    # every method under each rule: scores summed over the test rows (the papers' convention), and the
    # product's model-level rule (`metrics.gain_weighted_values`; nan when the backend has no baseline)
    loo_spearman_summed: float = float("nan")
    loo_spearman_summed_owners: float = float("nan")
    loo_spearman_gain: float = float("nan")
    loo_spearman_gain_owners: float = float("nan")
    top1: float = float("nan")  # under the product's per-answer credit rule (aggregate.ANSWER_RULE)
    top1_signed: float = float("nan")  # under a plain signed sum of row scores (the papers' convention)
    lds: float = float("nan")  # against the mean test loss over the LDS's training seeds
    lds_one_seed: float = float("nan")  # against the first seed's retrains alone (when there are several)
    sybil_gain: float = float("nan")
    bulk_share: float = float("nan")
    build_seconds: float = float("nan")
    build_over_training: float = float("nan")
    query_ms: float = float("nan")
    bytes_per_example: float = float("nan")
    values: dict[str, float] = field(default_factory=dict)  # contributor values behind loo_spearman
    error: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class TaskResult:
    task: str
    n_train: int
    n_test: int
    train_seconds: float
    test_accuracy: float
    test_loss: float
    loo_delta: dict[str, float]
    loo_share: dict[str, float]
    lds_retrains: int
    methods: list[MethodResult]
    extra: dict = field(default_factory=dict)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _run_method(name: str, runner: Callable[[Trained, Sequence[Row], bool], MethodOutput], trained: Trained,
                task: Task, need_self: bool) -> MethodOutput | str:
    rows = [task.train[i] for i in trained.ids]
    started = time.perf_counter()
    try:
        out = runner(trained, rows, need_self)
    except Exception as exc:  # a peer failing must not stop the others; the reason is reported
        log(f"  {name}: FAILED {type(exc).__name__}: {exc}")
        return f"{type(exc).__name__}: {str(exc)[:300]}"
    log(f"  {name}: {time.perf_counter() - started:.1f}s")
    return out


def row_heads(task: Task) -> np.ndarray:
    """For each training row, the position of the earliest row with the same `selection.row_key`:
    its verbatim copies (rows are in contribution order)."""
    first: dict[str, int] = {}
    return np.asarray([first.setdefault(row_key(_fields(task, row)), i) for i, row in enumerate(task.train)],
                      dtype=np.int64)


def _fields(task: Task, row: Row) -> dict[str, str]:
    return {"text": row.text, "label": row.label} if task.kind == "classification" else \
        {"prompt": row.text, "completion": row.label}


def distinct_rows(task: Task, ids: Sequence[int]) -> np.ndarray:
    """The rows among `ids` that the Factory trains, one contribution per contributor: its own
    `selection.find_repeats` decides which rows repeat earlier ones (exactly, or near-copying an
    earlier contribution's classification row)."""
    ids = sorted(int(i) for i in ids)
    candidates, members = [], []
    for number, contributor in enumerate(CONTRIBUTORS, start=1):
        mine = [i for i in ids if task.train[i].contributor == contributor]
        fields = [_fields(task, task.train[i]) for i in mine]
        candidates.append(Candidate(number, 1, contributor, len(mine), 0, 0, tuple(row_key(f) for f in fields),
                                    row_texts(fields)))
        members.append(mine)
    repeats = find_repeats(candidates, near=True)
    return np.asarray([i for c, mine in zip(candidates, members) for k, i in enumerate(mine)
                       if (c.contribution_id, k) not in repeats], dtype=np.int64)


def matched_batch_size(rows: int, steps_like: int | None, batch_size: int) -> int:
    """The batch size at which `rows` rows take as many optimizer steps per epoch as `steps_like`
    rows take at `batch_size`, to within rounding (at most 1 in 9 off for a third of the rows or
    more); the full model itself keeps `batch_size`.

    Why: at a fixed number of epochs, a retrain without a contributor also takes fewer optimizer
    steps, and on a classifier still improving at its last epoch that alone raises its test loss:
    the truth would pay for volume. Measured on the bench classifier at 6 epochs (draw 0, seeds 0
    and 1), leaving out the bulk contributor's 120 of 280 rows gave test loss 0.502 / 0.635 at the
    settings' batch and 0.438 / 0.546 at matched steps (full model 0.439 / 0.330)."""
    if steps_like is None or rows == steps_like:
        return batch_size
    steps = -(-steps_like // batch_size)
    # an integer batch rarely splits `rows` into exactly `steps`: take the nearer of the two around it
    around = {max(1, rows // steps), max(1, -(-rows // steps))}
    return min(around, key=lambda b: (abs(-(-rows // b) - steps), -b))


def run_task(task: Task, backend: Backend, lds_retrains: int, seed: int = 0, sybil_seeds: int = 1,
             dedup: bool = True, loo_seeds: int = 1, lds_seeds: int = 1,
             retrain_steps: str = "matched", dump: str | None = None) -> TaskResult:
    """sybil_seeds: training seeds over which the Sybil gain's payouts are averaged, in both worlds.
    One retrained pair measures the training run's randomness as much as the method: on four tuning
    draws of the classification task one pair gave ours -6.0%, +5.1%, -2.6% and +9.4%.
    dedup: every model trains each distinct row once, as the Factory does (`selection.plan_selection`
    step 2); False trains every row as given (the benchmark before that step).
    loo_seeds: training seeds over which each contributor's leave-one-out change in test loss is
    averaged (each seed against the full model of the same seed): one retrain's change is of the
    order of the seed-to-seed noise for most contributors.
    lds_seeds: training seeds per LDS subset. The LDS's truth is the expected test loss of a model
    trained on the subset (Park et al. 2023); one training run estimates it with the run's noise,
    which caps what any method can score. With two or more seeds the truth is their mean, and the
    seeds' agreement with each other (`metrics.retrain_agreement`) is reported: the ceiling.
    retrain_steps: "matched" (every retrain takes the full model's optimizer steps per epoch,
    `matched_batch_size`) or "epochs" (the settings' batch size: fewer steps on fewer rows, sessions 1-13).
    dump: an .npz path for the raw material of the metrics (each method's scores, each retrain's
    per-test-row losses), so that valuation rules and test weightings can be compared offline."""
    if retrain_steps not in ("matched", "epochs"):
        raise ValueError(f"retrain_steps must be 'matched' or 'epochs', not {retrain_steps!r}")
    heads = row_heads(task) if dedup else np.arange(len(task.train))

    def trained_rows(ids: Sequence[int]) -> np.ndarray:
        return distinct_rows(task, ids) if dedup else np.asarray(sorted(int(i) for i in ids), dtype=np.int64)

    train_rows = backend.train
    all_ids = np.arange(len(task.train))
    steps_like = len(trained_rows(all_ids)) if retrain_steps == "matched" else None
    backend = replace(backend, train=lambda ids, s: train_rows(trained_rows(ids), s, steps_like))
    log(f"{task.name}: training the full model on {len(all_ids)} rows")
    full = backend.train(all_ids, 0)
    log(f"{task.name}: trained in {full.seconds:.1f}s on {len(full.ids)} distinct rows, "
        f"test accuracy {full.test_correct.mean():.3f}")

    outputs: dict[str, MethodOutput | str] = {}
    for name, runner in backend.methods.items():
        outputs[name] = _run_method(name, runner, full, task, need_self=True)

    # Each seed's full model, reused by any retrain with the same distinct rows (removing a copy
    # changes nothing the Factory trains, so that retrain would be the same model).
    full_rows, fulls_by_seed = full.ids.tolist(), {0: full}

    def retrain(ids: Sequence[int], train_seed: int) -> Trained:
        if trained_rows(ids).tolist() != full_rows:
            return backend.train(ids, train_seed)
        if train_seed not in fulls_by_seed:
            fulls_by_seed[train_seed] = backend.train(ids, train_seed)
        return fulls_by_seed[train_seed]

    fulls = [retrain(all_ids, s) for s in range(max(loo_seeds, sybil_seeds))]
    loo_delta: dict[str, float] = {}
    loo_losses: dict[str, np.ndarray] = {"full": np.stack([f.test_losses for f in fulls])}  # (seeds, Q) each
    loo_by_seed: dict[str, list[float]] = {}  # each seed's change, for the truth's own agreement
    without_sybil: list[Trained] = []
    for contributor in CONTRIBUTORS:
        keep = np.array([i for i in all_ids if task.train[i].contributor != contributor])
        runs = [retrain(keep, s) for s in range(loo_seeds)]
        loo_by_seed[contributor] = [float(r.test_losses.mean() - f.test_losses.mean()) for r, f in zip(runs, fulls)]
        loo_losses[contributor] = np.stack([r.test_losses for r in runs])
        loo_delta[contributor] = float(np.mean(loo_by_seed[contributor]))
        log(f"{task.name}: LOO {contributor}: delta test loss {loo_delta[contributor]:+.4f} "
            f"(mean of {loo_seeds} training seed(s): {', '.join(f'{d:+.3f}' for d in loo_by_seed[contributor])})")
        if contributor == SYBIL:
            without_sybil = runs

    # Leave one data owner out: the Sybil's rows are verbatim copies of the victim's, so removing
    # either wallet alone leaves the other copy training (a change of ~0 for both, by construction).
    # Removing the victim's data means removing both; values are compared the same way.
    copied = np.array([i for i in all_ids if task.train[i].contributor not in (SYBIL, SYBIL_VICTIM)])
    owner_delta = {c: d for c, d in loo_delta.items() if c not in (SYBIL, SYBIL_VICTIM)}
    loo_losses["owner"] = np.stack([retrain(copied, s).test_losses for s in range(loo_seeds)])
    owner_delta[SYBIL_VICTIM] = float(np.mean(loo_losses["owner"].mean(axis=1) - loo_losses["full"].mean(axis=1)))
    log(f"{task.name}: LOO {SYBIL_VICTIM} and {SYBIL} together: delta test loss {owner_delta[SYBIL_VICTIM]:+.4f}")

    subsets, subset_losses = [], []  # subset_losses: (seeds, Q) per subset
    rng = np.random.default_rng(seed + 7)
    for s in range(lds_retrains):
        mask = rng.random(len(all_ids)) < 0.5
        subsets.append(mask)
        subset_losses.append(np.stack([backend.train(np.flatnonzero(mask), k).test_losses for k in range(lds_seeds)]))
        if (s + 1) % 10 == 0 or s + 1 == lds_retrains:
            log(f"{task.name}: LDS retrain {s + 1}/{lds_retrains}")

    # Sybil worlds: (with the copy, submitted once) per training seed, from the models above where
    # they exist; when the copy trains nothing (the Factory's dedup) the two worlds are one model.
    worlds: list[SybilWorlds] = []
    for train_seed in range(sybil_seeds):
        with_copy = fulls[train_seed]
        once_only = without_sybil[train_seed] if train_seed < len(without_sybil) else \
            retrain(without_sybil[0].ids, train_seed)
        log(f"{task.name}: methods on the Sybil worlds of training seed {train_seed}")
        world = SybilWorlds(with_copy, once_only, {}, {})
        for name, runner in backend.methods.items():
            if isinstance(outputs[name], MethodOutput):
                world.runs_with_copy[name] = (outputs[name] if train_seed == 0
                                              else _run_method(name, runner, with_copy, task, need_self=False))
                world.runs_once[name] = (world.runs_with_copy[name] if once_only is with_copy
                                         else _run_method(name, runner, once_only, task, need_self=False))
        worlds.append(world)

    # The full model's method outputs score the rows it trained (full.ids), in that order.
    train_contributors = [task.train[i].contributor for i in full.ids]
    flipped = [task.train[i].flipped for i in full.ids]
    # A subset "holds" a trained row when it holds any copy of it: the subset's model trains that copy.
    holds = [np.stack([mask[heads == heads[i]].any() for i in full.ids]) for mask in subsets]
    test_owners = [r.contributor for r in task.test]
    loo_share = metrics.shares(loo_delta)
    # top-1 is over the answers the model gets right; a model that gets none right (the random-init
    # tiny-llama) is attributed at the reference answers of every test row instead
    answered = full.test_correct if full.test_correct.any() else np.ones_like(full.test_correct, dtype=bool)
    baseline = None if backend.baseline_losses is None else backend.baseline_losses()
    gains = None if baseline is None else baseline - full.test_losses

    by_gain_for_ours = backend.ours_valuation == "gain-weighted" and baseline is not None
    if dump:
        np.savez_compressed(dump, train_contributors=np.asarray(train_contributors), flipped=np.asarray(flipped),
                            test_skills=np.asarray([r.skill for r in task.test]), test_owners=np.asarray(test_owners),
                            baseline=np.asarray([] if baseline is None else baseline),
                            **{f"loss_{k}": v for k, v in loo_losses.items()},
                            **{f"scores_{k}": o.scores for k, o in outputs.items() if isinstance(o, MethodOutput)})

    def model_values(name: str, out: MethodOutput, trained: Trained) -> dict[str, float]:
        """Contributor values as the method values a model: ours by the backend's `ours_valuation`
        (gain-weighted: the gains of `trained` over the baseline), anchors by summed scores."""
        owners = [task.train[i].contributor for i in trained.ids]
        if name.startswith("ours") and by_gain_for_ours:
            return metrics.gain_weighted_values(out.scores, baseline - trained.test_losses, owners, CONTRIBUTORS)
        return metrics.contributor_values(out.scores, owners, CONTRIBUTORS)

    results = []
    for name, out in outputs.items():
        if isinstance(out, str):
            results.append(MethodResult(name, error=out))
            continue
        values = metrics.contributor_values(out.scores, train_contributors, CONTRIBUTORS)
        share = metrics.shares(model_values(name, out, full))
        result = MethodResult(
            name, auc=metrics.mislabel_auc(out.self_scores, flipped), self_kind=out.self_kind,
            loo_spearman_summed=metrics.loo_spearman(values, loo_delta),
            loo_spearman_summed_owners=metrics.loo_spearman(metrics.owner_values(values), owner_delta),
            top1=metrics.top1_accuracy(out.scores, train_contributors, test_owners, answered, ANSWER_RULE),
            top1_signed=metrics.top1_accuracy(out.scores, train_contributors, test_owners, answered, "signed"),
            bulk_share=share[BULK_CONTRIBUTOR], build_seconds=out.build_seconds,
            build_over_training=out.build_seconds / full.seconds, query_ms=out.query_seconds * 1000,
            bytes_per_example=out.bytes_per_example, notes=list(out.notes))
        if gains is not None:
            weighted = metrics.gain_weighted_values(out.scores, gains, train_contributors, CONTRIBUTORS)
            result.loo_spearman_gain = metrics.loo_spearman(weighted, loo_delta)
            result.loo_spearman_gain_owners = metrics.loo_spearman(metrics.owner_values(weighted), owner_delta)
        by_gain = name.startswith("ours") and by_gain_for_ours
        result.loo_rule = "gain-weighted" if by_gain else "summed"
        result.loo_spearman = result.loo_spearman_gain if by_gain else result.loo_spearman_summed
        result.loo_spearman_owners = result.loo_spearman_gain_owners if by_gain else result.loo_spearman_summed_owners
        result.values = weighted if by_gain else values
        if subsets:
            losses = np.stack(subset_losses)  # (S, seeds, Q)
            result.lds = metrics.lds(out.scores, holds, losses.mean(axis=1))
            if lds_seeds > 1:
                result.lds_one_seed = metrics.lds(out.scores, holds, losses[:, 0])
        _sybil_gain(result, name, worlds, task, share, model_values)
        results.append(result)
    return TaskResult(task.name, len(task.train), len(task.test), full.seconds, float(full.test_correct.mean()),
                      float(full.test_losses.mean()), loo_delta, loo_share, len(subsets), results,
                      {"Sybil worlds": f"{len(worlds)} training seed(s), payouts averaged over them",
                       "leave-one-out": f"test-loss change averaged over {loo_seeds} training seed(s)",
                       "retrains": ("the full model's optimizer steps per epoch (a smaller batch on fewer rows)"
                                    if steps_like else "the settings' batch size (fewer steps on fewer rows)"),
                       f"leave-one-out with {SYBIL_VICTIM} and {SYBIL} removed together":
                           f"{owner_delta[SYBIL_VICTIM]:+.4f}",
                       "training rows": (f"each distinct row once, as the Factory trains: {len(full.ids)} of "
                                         f"{len(task.train)} rows" if dedup else "every row as given (--keep-repeats)"),
                       **_loo_truth(loo_by_seed), **_lds_truth(subset_losses, lds_seeds)})


def _loo_truth(loo_by_seed: dict[str, list[float]]) -> dict[str, str]:
    if len(next(iter(loo_by_seed.values()))) < 2:
        return {}
    agreement, ceiling = metrics.loo_agreement(loo_by_seed)
    return {"leave-one-out truth": f"two seeds' rankings of the contributors agree at Spearman {agreement:.3f}; an "
                                   f"exact predictor of the expected change would score about {ceiling:.3f} "
                                   f"against the {len(next(iter(loo_by_seed.values())))} seeds' mean"}


def _lds_truth(subset_losses: Sequence[np.ndarray], lds_seeds: int) -> dict[str, str]:
    if not subset_losses or lds_seeds < 2:
        return {}
    agreement, one, mean = metrics.retrain_agreement(np.stack(subset_losses))
    return {"LDS truth": f"mean test loss of {lds_seeds} training seeds per subset; two seeds' retrained losses "
                         f"agree with Spearman {agreement:.3f} (mean over test rows), so an exact predictor of the "
                         f"expected loss would score about {one:.3f} against one seed's retrains and {mean:.3f} "
                         f"against the {lds_seeds}-seed mean"}


def _sybil_gain(result: MethodResult, name: str, worlds: Sequence[SybilWorlds], task: Task,
                valued_share: dict[str, float],
                model_values: Callable[[str, MethodOutput, Trained], dict[str, float]]) -> None:
    """Payout, as settlement makes it: every call's fee split by that answer's shares (the product's
    per-answer rule), right or wrong, over the same test rows in the world with the copy and in the one
    without it (counting only answered rows would pay the copy for making its skill learnt better, not
    for its attribution). Shares are averaged over the training seeds of each world first."""
    every_call = np.ones(len(task.test), dtype=bool)
    paid, paid_once, per_seed = [], [], []
    for world in worlds:
        here, there = world.runs_with_copy.get(name), world.runs_once.get(name)
        if not isinstance(here, MethodOutput) or not isinstance(there, MethodOutput):
            failed = here if isinstance(here, str) else there
            result.notes.append(f"no Sybil gain: {failed}")
            return
        train_contributors = [task.train[i].contributor for i in world.with_copy.ids]
        once_contributors = [task.train[i].contributor for i in world.once.ids]
        paid.append(metrics.payout_shares(here.scores, train_contributors, CONTRIBUTORS, every_call, ANSWER_RULE))
        paid_once.append(metrics.payout_shares(there.scores, once_contributors, CONTRIBUTORS, every_call,
                                               ANSWER_RULE))
        per_seed.append(metrics.sybil_gain(paid[-1], paid_once[-1]))
    result.sybil_gain = metrics.sybil_gain(metrics.mean_shares(paid), metrics.mean_shares(paid_once))
    if len(worlds) > 1:
        result.notes.append("Sybil gain per training seed: " + ", ".join(f"{g:+.1%}" for g in per_seed))
    first_once = worlds[0].runs_once[name]
    assert isinstance(first_once, MethodOutput)
    valued_once = metrics.shares(model_values(name, first_once, worlds[0].once))
    result.notes.append(f"Sybil gain of model-level value shares: {metrics.sybil_gain(valued_share, valued_once):+.1%}")
