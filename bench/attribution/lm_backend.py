"""The causal-LM task's backend: a small pretrained Llama + LoRA (bench/attribution/lm_model.py) and its methods.

Every trained model logs its per-skill test loss and exact match next to the base's (LoRA at zero),
so a run shows that each contributor's skill was learnt, and what leaving a contributor out costs.

Anchors: grad-dot, DataInf, TF-IDF (character n-grams) and the base model's mean hidden state; the
peers (TRAK, Kronfluence, dattri) run through peers_lm.causal_runners with the classification task's
settings, on the same per-row completion loss.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from bench.attribution import lm_model, methods, ours
from bench.attribution.harness import Backend, Trained, matched_batch_size
from bench.attribution.methods import GradientFeatures, MethodOutput
from bench.attribution.ours import FINAL_ONLY_ARM
from bench.attribution.tasks import CAUSAL_SKILL_NAMES, Row, Task
from provenant.attribution.index import IndexSettings


@contextmanager
def _epoch_loaded(trained: Trained, epoch: int) -> Iterator[None]:
    """The trained model with its LoRA tensors as they were after `epoch`; the final ones put back on exit."""
    params = dict(lm_model.trainable(trained.model.model))
    try:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(trained.model.epoch_states[epoch - 1][n])
        yield
    finally:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(trained.model.epoch_states[-1][n])


@dataclass(frozen=True)
class LmConfig:
    settings: lm_model.LmSettings = field(default_factory=lm_model.LmSettings)


class LmBackend:
    def __init__(self, task: Task, config: LmConfig, peers: Sequence[str] = (), final_only_arm: bool = False,
                 design_arms: Sequence[dict[str, object]] = ()):
        self.task, self.config = task, config
        self.test_rows = list(task.test)
        self._features: dict[int, GradientFeatures] = {}
        self.peers = list(peers)
        self.final_only_arm = final_only_arm
        self.design_arms = list(design_arms)
        self.latency_measured: set[str] = set()
        self._base_losses: np.ndarray | None = None
        self.per_skill: list[dict] = []  # one entry per trained model (the base first), for the report

    def _log_skills(self, label: str, losses: np.ndarray, correct: np.ndarray) -> None:
        parts = {}
        for skill, name in CAUSAL_SKILL_NAMES.items():
            idx = [i for i, r in enumerate(self.test_rows) if r.skill == skill]
            parts[name] = (float(losses[idx].mean()), float(correct[idx].mean()))
        self.per_skill.append({"model": label, **parts})
        print(f"causal-lm {label}: " + ", ".join(f"{n} loss {lo:.3f} exact {ex:.2f}" for n, (lo, ex) in parts.items()),
              flush=True)

    def base_losses(self) -> np.ndarray:
        """Each test row's completion loss under the pretrained base: the model before the task's data
        (logged, with the base's exact match, before the first model trains)."""
        if self._base_losses is None:
            base = lm_model.build_lora_lm(self.config.settings)  # LoRA B = 0: exactly the base
            self._base_losses = lm_model.eval_losses(base, self.test_rows)
            self._log_skills("base (no fine-tune)", self._base_losses, lm_model.exact_match(base, self.test_rows))
        return self._base_losses

    def train(self, ids: Sequence[int], seed: int = 0, steps_like: int | None = None) -> Trained:
        self.base_losses()  # the report lists the base's per-skill losses first
        rows = [self.task.train[i] for i in ids]
        batch_size = matched_batch_size(len(rows), steps_like, self.config.settings.batch_size)
        trained = lm_model.train_lm(rows, replace(self.config.settings, seed=seed, batch_size=batch_size))
        losses = lm_model.eval_losses(trained.model, self.test_rows)
        correct = lm_model.exact_match(trained.model, self.test_rows)
        left_out = sorted({r.contributor for r in self.task.train} - {r.contributor for r in rows})
        self._log_skills(f"trained on {len(rows)} rows" + (f" (without {', '.join(left_out)})" if left_out else "")
                         + (f", training seed {seed}" if seed else ""),
                         losses, correct)
        return Trained(trained, np.asarray(ids), trained.seconds, losses, correct, seed)

    def features(self, trained: Trained, rows: Sequence[Row]) -> GradientFeatures:
        key = id(trained)
        if key not in self._features:
            model = trained.model.model
            started = time.perf_counter()
            train = lm_model.per_example_gradients(model, rows)
            train_s = time.perf_counter() - started
            started = time.perf_counter()
            test = lm_model.per_example_gradients(model, self.test_rows)
            test_s = time.perf_counter() - started
            self._features = {key: GradientFeatures(train.numpy(), test.numpy(), lm_model.layer_groups(model),
                                                    train_s, test_s)}
        return self._features[key]

    def epoch_checkpoints(self, trained: Trained, rows: Sequence[Row],
                          snapshots: int | None = None) -> tuple[list[int], list[dict]]:
        """TracIn's checkpoints: the LoRA tensors at the same epochs ours indexes (`snapshot_epochs`,
        4 of the default 12: 1, 4, 8, 12), from the states the trainer keeps after each epoch (as the
        Factory's training loop does), so the two differ only in what they do with them."""
        from provenant.attribution.snapshots import snapshot_epochs

        epochs = list(snapshot_epochs(self.config.settings.epochs, snapshots or IndexSettings().snapshots))
        return epochs, [trained.model.epoch_states[e - 1] for e in epochs]

    def _ours(self, name: str, trained: Trained, rows: Sequence[Row], need_self: bool, snapshots: int,
              settings: IndexSettings | None = None) -> MethodOutput:
        """The engine's recipe on this task's gradients at the final adapter and, as the Factory indexes a
        run, at `snapshots` epoch-end adapters (`snapshots.snapshot_epochs`), each taken on the trained
        model with that epoch's LoRA tensors loaded (`_epoch_loaded`)."""
        from provenant.attribution.snapshots import snapshot_epochs

        feats = self.features(trained, rows)
        model = trained.model.model
        layout = tuple((n, p.numel()) for n, p in lm_model.trainable(model))
        epochs = snapshot_epochs(self.config.settings.epochs, snapshots)
        at_snapshots, seconds = [], [feats.train_seconds, feats.test_seconds]
        for e in epochs[:-1]:
            with _epoch_loaded(trained, e):
                started = time.perf_counter()
                train = lm_model.per_example_gradients(model, rows)
                seconds[0] += time.perf_counter() - started
                started = time.perf_counter()
                at_snapshots.append((train, lm_model.per_example_gradients(model, self.test_rows)))
                seconds[1] += time.perf_counter() - started

        def answer_gradients(q: int) -> torch.Tensor:  # one answer at every snapshot, as an attributor computes it
            return lm_model.gradients_side_by_side(model, self.test_rows[q],
                                                   [trained.model.epoch_states[e - 1] for e in epochs[:-1]])

        measure = need_self and name not in self.latency_measured  # once per arm, on the full model
        if measure:
            self.latency_measured.add(name)
        return ours.ours_projected(name, layout, torch.from_numpy(feats.train), torch.from_numpy(feats.test),
                                   (seconds[0], seconds[1]), need_self, [r.text + "\n" + r.label for r in rows],
                                   settings=settings, snapshot_grads=at_snapshots,
                                   snapshot_epochs=epochs if len(epochs) > 1 else (),
                                   answer_gradients=answer_gradients if measure else None)

    def run_ours(self, trained: Trained, rows: Sequence[Row], need_self: bool) -> MethodOutput:
        return self._ours("ours", trained, rows, need_self, IndexSettings().snapshots)

    def run_ours_final_only(self, trained: Trained, rows: Sequence[Row], need_self: bool) -> MethodOutput:
        return self._ours(FINAL_ONLY_ARM, trained, rows, need_self, 1)

    def design_arm(self, overrides: dict[str, object]):  # type: ignore[no-untyped-def]
        """'ours' with other `IndexSettings`, on the same final-adapter gradients; the earlier snapshots'
        gradients are taken at the epochs `settings.snapshots` picks."""
        settings = replace(IndexSettings(projection_dim=ours.PROJECTION_DIM, seed=0), **overrides)

        def run(trained: Trained, rows: Sequence[Row], need_self: bool) -> MethodOutput:
            return self._ours(ours.design_arm_name(overrides), trained, rows, need_self, settings.snapshots, settings)
        return run

    def run_grad_dot(self, trained: Trained, rows: Sequence[Row], need_self: bool) -> MethodOutput:
        return methods.grad_dot(self.features(trained, rows), need_self)

    def run_datainf(self, trained: Trained, rows: Sequence[Row], need_self: bool) -> MethodOutput:
        return methods.datainf(self.features(trained, rows), need_self)

    def _similarity(self, name: str, embed, rows: Sequence[Row], need_self: bool) -> MethodOutput:  # type: ignore[no-untyped-def]
        full = [r.text + r.label for r in rows]
        return methods.similarity_method(name, embed, full, [r.label for r in rows],
                                         [r.text + r.label for r in self.test_rows], [r.label for r in self.test_rows],
                                         classes=False, need_self=need_self,
                                         self_pairs=([r.text for r in rows], [r.label for r in rows]),
                                         bytes_per_row=getattr(embed, "bytes_per_row", None))

    def run_tfidf(self, trained: Trained, rows: Sequence[Row], need_self: bool) -> MethodOutput:
        return self._similarity("TF-IDF", methods.TfidfEmbedder([r.text + r.label for r in rows], char=True), rows,
                                need_self)

    def run_embedding(self, trained: Trained, rows: Sequence[Row], need_self: bool) -> MethodOutput:
        return self._similarity("base embedding", lambda texts: lm_model.base_embed(texts, self.config.settings),
                                rows, need_self)

    def backend(self) -> Backend:
        runners = {"ours": self.run_ours, "grad-dot": self.run_grad_dot, "DataInf": self.run_datainf,
                   "TF-IDF": self.run_tfidf, "base embedding": self.run_embedding}
        if self.final_only_arm:
            runners[FINAL_ONLY_ARM] = self.run_ours_final_only
        for overrides in self.design_arms:
            runners[ours.design_arm_name(overrides)] = self.design_arm(overrides)
        if self.peers:
            from bench.attribution import peers_lm

            runners.update(peers_lm.causal_runners(self, self.peers))
        # the product values classifiers only; summed scores beat gain weighting on this task's draws 0-2
        return Backend(self.train, runners, self.base_losses, ours_valuation="summed")
