"""The classification task's backend: MiniLM + LoRA via the factory trainer, and its methods."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from bench.attribution import cls_model, methods, ours
from bench.attribution.harness import Backend, Trained, matched_batch_size
from bench.attribution.methods import GradientFeatures, MethodOutput
from bench.attribution.ours import FINAL_ONLY_ARM
from bench.attribution.tasks import Row, Task
from provenant.attribution.gradients import per_example_gradients
from provenant.factory.base_models import load_base_model
from provenant.factory.model import encode
from provenant.factory.train import LoraSettings


@dataclass(frozen=True)
class ClsConfig:
    base_model: str = "minilm"
    settings: LoraSettings = LoraSettings(epochs=3, learning_rate=2e-3, max_length=32, batch_size=16)


class ClsBackend:
    def __init__(self, task: Task, config: ClsConfig, peers: Sequence[str] = (),
                 design_arms: Sequence[dict[str, object]] = (), final_only_arm: bool = False):
        self.task, self.config = task, config
        self._features: dict[int, GradientFeatures] = {}
        self._indexes: dict[int, object] = {}
        self.test_rows = list(task.test)
        self.latency: dict[str, float] = {}
        self.peers = list(peers)
        self.design_arms = list(design_arms)
        self.final_only_arm = final_only_arm
        self.full_model_skills = ""  # the first (full) model's test accuracy per skill, for the report

    # -- training ---------------------------------------------------------------------------
    def train(self, ids: Sequence[int], seed: int = 0, steps_like: int | None = None) -> Trained:
        settings = replace(self.config.settings, seed=seed, batch_size=matched_batch_size(
            len(ids), steps_like, self.config.settings.batch_size))
        trained = cls_model.train_cls(self.task.train, ids, settings, self.config.base_model)
        losses = cls_model.per_example_losses(trained.classifier, self.test_rows)
        preds = [p.label for p in trained.classifier.predict([r.text for r in self.test_rows])]
        correct = np.array([p == r.label for p, r in zip(preds, self.test_rows)])
        if not self.full_model_skills:  # a flipped label is detectable only on a skill the model learns
            owners = {r.skill: r.contributor for r in self.test_rows}
            self.full_model_skills = ", ".join(
                f"{skill} ({owner}) {correct[[r.skill == skill for r in self.test_rows]].mean():.2f}"
                for skill, owner in owners.items())
        return Trained(trained, np.asarray(ids), trained.seconds, losses, correct, seed)

    # -- shared gradient features -----------------------------------------------------------
    def features(self, trained: Trained, rows: Sequence[Row]) -> GradientFeatures:
        key = id(trained)
        if key not in self._features:
            clf = trained.model.classifier
            started = time.perf_counter()
            train = per_example_gradients(clf, [r.text for r in rows], [clf.label_to_id[r.label] for r in rows])
            train_s = time.perf_counter() - started
            started = time.perf_counter()
            test = per_example_gradients(clf, [r.text for r in self.test_rows],
                                         [clf.label_to_id[r.label] for r in self.test_rows])
            test_s = time.perf_counter() - started
            self._features = {key: GradientFeatures(train.numpy(), test.numpy(), cls_model.layer_groups(clf),
                                                    train_s, test_s)}  # keep one model's gradients only
        return self._features[key]

    # -- methods ----------------------------------------------------------------------------
    def run_ours(self, trained: Trained, rows: Sequence[Row], need_self: bool) -> MethodOutput:
        out, index = ours.ours_classification(trained.model.classifier, rows, self.test_rows, need_self,
                                              trained.model.epoch_adapters)
        if need_self and "ours_10k_ms" not in self.latency:  # per-answer latency at 10,000 training rows
            clf = trained.model.classifier
            self.latency["ours_10k_ms"] = 1000 * ours.latency_at(clf, index, self.test_rows, 10_000, 0)
            self.latency["ours_10k_cached_ms"] = 1000 * ours.latency_at(clf, index, self.test_rows, 10_000, 400 << 20)
        return out

    def run_ours_final_only(self, trained: Trained, rows: Sequence[Row], need_self: bool) -> MethodOutput:
        """The engine as sessions 1-8 shipped it: the final adapter only (IndexSettings(snapshots=1))."""
        return ours.ours_classification(trained.model.classifier, rows, self.test_rows, need_self,
                                        name=FINAL_ONLY_ARM, snapshots=1)[0]

    def design_arm(self, overrides: dict[str, object]):  # type: ignore[no-untyped-def]
        """'ours' with other `IndexSettings`: the product's index (every snapshot) built anew."""
        def run(trained: Trained, rows: Sequence[Row], need_self: bool) -> MethodOutput:
            return ours.ours_classification(trained.model.classifier, rows, self.test_rows, need_self,
                                            trained.model.epoch_adapters, name=ours.design_arm_name(overrides),
                                            **overrides)[0]
        return run

    def run_grad_dot(self, trained: Trained, rows: Sequence[Row], need_self: bool) -> MethodOutput:
        return methods.grad_dot(self.features(trained, rows), need_self)

    def run_datainf(self, trained: Trained, rows: Sequence[Row], need_self: bool) -> MethodOutput:
        return methods.datainf(self.features(trained, rows), need_self)

    def run_tfidf(self, trained: Trained, rows: Sequence[Row], need_self: bool) -> MethodOutput:
        embedder = methods.TfidfEmbedder([r.text for r in rows], char=False)
        return methods.similarity_method("TF-IDF", embedder, [r.text for r in rows], [r.label for r in rows],
                                         [r.text for r in self.test_rows], [r.label for r in self.test_rows],
                                         classes=True, need_self=need_self, bytes_per_row=embedder.bytes_per_row)

    def run_embedding(self, trained: Trained, rows: Sequence[Row], need_self: bool) -> MethodOutput:
        return methods.similarity_method("base embedding", self.base_embed, [r.text for r in rows],
                                         [r.label for r in rows], [r.text for r in self.test_rows],
                                         [r.label for r in self.test_rows], classes=True, need_self=need_self)

    @torch.no_grad()
    def base_embed(self, texts: Sequence[str]) -> np.ndarray:
        """Mean-pooled hidden states of the frozen base encoder (no LoRA): similarity the base already knows."""
        base = load_base_model(self.config.base_model)
        out = []
        for start in range(0, len(texts), 64):
            ids, mask = encode(base.tokenizer, list(texts[start:start + 64]), self.config.settings.max_length)
            hidden = base.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
            m = mask.unsqueeze(-1).to(hidden.dtype)
            out.append(((hidden * m).sum(1) / m.sum(1)).numpy())
        return np.concatenate(out)

    def backend(self) -> Backend:
        runners = {"ours": self.run_ours}
        if self.final_only_arm:
            runners[FINAL_ONLY_ARM] = self.run_ours_final_only
        for overrides in self.design_arms:
            runners[ours.design_arm_name(overrides)] = self.design_arm(overrides)
        runners.update({"grad-dot": self.run_grad_dot, "DataInf": self.run_datainf,
                        "TF-IDF": self.run_tfidf, "base embedding": self.run_embedding})
        if self.peers:
            from bench.attribution import peers

            runners.update(peers.classification_runners(self, self.peers))
        return Backend(self.train, runners, self.uniform_losses, ours_valuation="gain-weighted")  # as value_classifier

    def uniform_losses(self) -> np.ndarray:
        """Each test row's loss under a uniform guess over the labels: a classifier that learned nothing."""
        return np.full(len(self.test_rows), np.log(len({r.label for r in self.task.train})))
