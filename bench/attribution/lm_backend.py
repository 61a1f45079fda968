"""The causal-LM task's backend: tiny-llama + LoRA (bench/attribution/lm_model.py) and its methods.

Peers are not run on this task (see RESULTS.md): each would need its own LM wrapper, and the
2-core budget went to the classification task, where all of them run.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from bench.attribution import lm_model, methods, ours
from bench.attribution.harness import Backend, Trained
from bench.attribution.methods import GradientFeatures, MethodOutput
from bench.attribution.tasks import Row, Task


@dataclass(frozen=True)
class LmConfig:
    settings: lm_model.LmSettings = field(default_factory=lm_model.LmSettings)


class LmBackend:
    def __init__(self, task: Task, config: LmConfig):
        self.task, self.config = task, config
        self.test_rows = list(task.test)
        self._features: dict[int, GradientFeatures] = {}

    def train(self, ids: Sequence[int]) -> Trained:
        rows = [self.task.train[i] for i in ids]
        trained = lm_model.train_lm(rows, self.config.settings)
        return Trained(trained, np.asarray(ids), trained.seconds, lm_model.eval_losses(trained.model, self.test_rows),
                       lm_model.exact_match(trained.model, self.test_rows))

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

    def run_ours(self, trained: Trained, rows: Sequence[Row], need_self: bool) -> MethodOutput:
        import torch

        feats = self.features(trained, rows)
        layout = tuple((n, p.numel()) for n, p in lm_model.trainable(trained.model.model))
        return ours.ours_projected("ours", layout, torch.from_numpy(feats.train), torch.from_numpy(feats.test),
                                   (feats.train_seconds, feats.test_seconds), need_self,
                                   [r.text + "\n" + r.label for r in rows])

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
        return Backend(self.train, {"ours": self.run_ours, "grad-dot": self.run_grad_dot, "DataInf": self.run_datainf,
                                    "TF-IDF": self.run_tfidf, "base embedding": self.run_embedding})
