"""Peer libraries on both tasks: TRAK (traker), Kronfluence (EK-FAC), dattri.

Imported only when peers are requested (they live in bench/.venv-attribution, not the product's
venv). Each peer sees the same trained model and only its trainable tensors (LoRA, + head on the
classifier): the frozen base weights are passed as buffers / not tracked, as in every LoRA study.
classification_runners wires the MiniLM classifier here; peers_lm.causal_runners the small Llama,
with the same settings (the shared helpers live here).

Sign convention: every output is 'helpful' = positive. Kronfluence and dattri's influence
functions use the influence-function sign (upweighting -> change in loss), so their sign is set by
the sign of their correlation with grad-dot on this run (reported in the notes), not assumed.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call

from bench.attribution.harness import Trained
from bench.attribution.methods import MethodOutput
from bench.attribution.tasks import Row
from provenant.factory.model import load_adapter_bytes, trainable_parameters
from provenant.serving.engine import Classifier

PEERS = ("TRAK", "Kronfluence", "dattri-TracIn", "dattri-IF")
TRAK_PROJ_DIM = 256  # capped at half the rows: traker 0.3.2 returns wrong scores when rows < proj_dim


def _fresh_classifier(trained: Trained) -> Classifier:
    """A private copy of the trained classifier (peers wrap or swap its modules)."""
    return Classifier.load(trained.model.epoch_adapters[-1], trained.model.config)


def _tensors(clf: Classifier, rows: Sequence[Row]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every row padded to max_length (vmapped peers need one shape)."""
    batch = clf.base.tokenizer([r.text for r in rows], padding="max_length", truncation=True,
                               max_length=clf.max_length, return_tensors="pt")
    labels = torch.tensor([clf.label_to_id[r.label] for r in rows], dtype=torch.int64)
    return batch["input_ids"], batch["attention_mask"], labels


def _additive(mask: torch.Tensor) -> torch.Tensor:
    """The 4D additive attention mask for one row, built outside transformers (vmap-safe)."""
    return (1.0 - mask.to(torch.float32))[None, None, None, :] * torch.finfo(torch.float32).min


def _aligned_sign(scores: np.ndarray, reference: np.ndarray | None) -> tuple[np.ndarray, str]:
    if reference is None:
        return scores, "sign as returned"
    corr = float(np.corrcoef(scores.ravel(), reference.ravel())[0, 1])
    return (scores, f"corr with grad-dot {corr:+.2f}") if corr >= 0 else (-scores, f"sign flipped (corr {corr:+.2f})")


# -- TRAK ----------------------------------------------------------------------------------------
def _trak_block(proj_dim: int) -> int:
    """traker 0.3.2 frees a one-block projector's matrix after featurizing and never rebuilds it for
    scoring (AttributeError: proj_matrix): keep at least two blocks (100 columns each when proj_dim > 100)."""
    return 100 if proj_dim > 100 else max(1, (proj_dim + 1) // 2)


def _trainable_only(trainable: Sequence[str]):  # type: ignore[no-untyped-def]
    """A traker gradient computer that differentiates w.r.t. the LoRA (+ head) tensors only."""
    from trak.gradient_computers import FunctionalGradientComputer

    class TrainableOnly(FunctionalGradientComputer):
        """The frozen base rides as buffers."""

        def load_model_params(self, model):  # type: ignore[no-untyped-def]
            params = dict(model.named_parameters())
            self.func_weights = {n: params[n] for n in trainable}
            self.func_buffers = {**dict(model.named_buffers()),
                                 **{n: p for n, p in params.items() if n not in self.func_weights}}

    return TrainableOnly


def run_trak(trained: Trained, rows: Sequence[Row], test_rows: Sequence[Row], need_self: bool,
             workdir: str) -> MethodOutput:
    from trak import TRAKer
    from trak.modelout_functions import AbstractModelOutput
    from trak.projectors import BasicProjector, ProjectionType

    clf = _fresh_classifier(trained)
    model = clf.model
    trainable = [n for n, _ in trainable_parameters(model)]

    class LoraMarginOutput(AbstractModelOutput):
        """TRAK's text-classification margin, for our model signature (ids, mask) -> logits."""

        def __init__(self) -> None:
            super().__init__()

        @staticmethod
        def get_output(model, weights, buffers, input_ids, mask, label):  # type: ignore[no-untyped-def]
            logits = functional_call(model, (weights, buffers), (input_ids[None], mask[None]),
                                     {"backbone_mask": _additive(mask)})
            onehot = torch.arange(logits.shape[-1]) == label  # no indexing by a tensor: vmap-safe
            correct = (logits[0] * onehot).sum()
            others = logits[0].masked_fill(onehot, -torch.inf)
            return correct - others.logsumexp(-1)

        def get_out_to_loss_grad(self, model, weights, buffers, batch):  # type: ignore[no-untyped-def]
            input_ids, mask, labels = batch
            logits = functional_call(model, (weights, buffers), (input_ids, mask))
            p = torch.softmax(logits, -1)[torch.arange(len(labels)), labels]
            return (1 - p).clone().detach().unsqueeze(-1)

    TrainableOnly = _trainable_only(trainable)
    n_params = sum(p.numel() for _, p in trainable_parameters(model))
    proj_dim = min(TRAK_PROJ_DIM, len(rows) // 2)
    started = time.perf_counter()
    projector = BasicProjector(grad_dim=n_params, proj_dim=proj_dim, seed=0, proj_type=ProjectionType.normal,
                               device="cpu", dtype=torch.float32, block_size=_trak_block(proj_dim))
    traker = TRAKer(model=model, task=LoraMarginOutput(), train_set_size=len(rows), save_dir=workdir,
                    load_from_save_dir=True, device="cpu", gradient_computer=TrainableOnly, projector=projector,
                    use_half_precision=False, grad_wrt=trainable, lambda_reg=1e-3, logging_level=40)
    traker.load_checkpoint(model.state_dict(), model_id=0)
    ids, mask, labels = _tensors(clf, rows)
    for start in range(0, len(rows), 32):
        traker.featurize(batch=(ids[start:start + 32], mask[start:start + 32], labels[start:start + 32]),
                         num_samples=min(32, len(rows) - start))
    traker.finalize_features()
    build = time.perf_counter() - started

    def score(targets: Sequence[Row], exp: str) -> np.ndarray:
        t_ids, t_mask, t_labels = _tensors(clf, targets)
        traker.start_scoring_checkpoint(exp_name=exp, checkpoint=model.state_dict(), model_id=0,
                                        num_targets=len(targets))
        for start in range(0, len(targets), 32):
            traker.score(batch=(t_ids[start:start + 32], t_mask[start:start + 32], t_labels[start:start + 32]),
                         num_samples=min(32, len(targets) - start))
        return np.asarray(traker.finalize_scores(exp_name=exp), dtype=np.float64).T  # (targets, train)

    started = time.perf_counter()
    scores = score(test_rows, "test")
    query = (time.perf_counter() - started) / len(test_rows)
    self_scores = np.diag(score(rows, "self")).copy() if need_self else None
    return MethodOutput("TRAK", scores, self_scores, "self-influence (TRAK score of a row on itself)", build, query,
                        proj_dim * 4.0, [f"traker 0.3.2, 1 checkpoint (no ensemble), proj_dim {proj_dim}, lambda_reg 1e-3"])


# -- Kronfluence ---------------------------------------------------------------------------------
def run_kronfluence(trained: Trained, rows: Sequence[Row], test_rows: Sequence[Row], need_self: bool,
                    workdir: str, reference: np.ndarray | None) -> MethodOutput:
    from kronfluence.task import Task

    clf = _fresh_classifier(trained)
    model = clf.model
    tracked = sorted({n.rsplit(".", 1)[0] for n, _ in trainable_parameters(model)})  # lora_A/B.default, head

    class ClsTask(Task):
        def compute_train_loss(self, batch: Any, model: torch.nn.Module, sample: bool = False) -> torch.Tensor:
            logits = model(batch["input_ids"], batch["attention_mask"])
            if not sample:
                return F.cross_entropy(logits, batch["labels"], reduction="sum")
            with torch.no_grad():
                sampled = torch.multinomial(torch.softmax(logits.detach(), -1), 1).flatten()
            return F.cross_entropy(logits, sampled, reduction="sum")

        def compute_measurement(self, batch: Any, model: torch.nn.Module) -> torch.Tensor:
            return F.cross_entropy(model(batch["input_ids"], batch["attention_mask"]), batch["labels"], reduction="sum")

        def get_influence_tracked_modules(self) -> list[str]:
            return tracked

        def get_attention_mask(self, batch: Any) -> torch.Tensor:
            return batch["attention_mask"]

    class Rows(torch.utils.data.Dataset):
        def __init__(self, items: Sequence[Row]):
            self.ids, self.mask, self.labels = _tensors(clf, items)

        def __len__(self) -> int:
            return len(self.labels)

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            return {"input_ids": self.ids[i], "attention_mask": self.mask[i], "labels": self.labels[i]}

    shapes = [p.shape for n, p in trainable_parameters(model) if n.endswith("weight")]
    return kronfluence_output(model, ClsTask(), Rows(rows), Rows(test_rows), analysis="cls", strategy="ekfac",
                              weight_shapes=shapes, tracked="LoRA A/B + head", need_self=need_self,
                              reference=reference, workdir=workdir)


KRONFLUENCE_SEED = 0


def kronfluence_output(model: torch.nn.Module, task: Any, train_ds: Any, test_ds: Any, *, analysis: str,
                       strategy: str, weight_shapes: Sequence[torch.Size], tracked: str, need_self: bool,
                       reference: np.ndarray | None, workdir: str) -> MethodOutput:
    """Kronfluence with a task's `Task` and datasets (either benchmark task): prepare the model, fit and
    score (`kronfluence_scores`), and report it. Bytes per row: EK-FAC keeps, per tracked module, both
    eigenbases and the corrected eigenvalues (float32), over the training rows."""
    from kronfluence.analyzer import Analyzer, prepare_model

    factor_bytes = sum((out_f ** 2 + in_f ** 2 + out_f * in_f) * 4 for out_f, in_f in weight_shapes)
    analyzer = Analyzer(analysis_name=analysis, model=prepare_model(model, task), task=task, cpu=True,
                        disable_tqdm=True, output_dir=workdir, disable_model_save=True)
    scores, self_scores, build, query, sign_note = kronfluence_scores(analyzer, train_ds, test_ds, strategy,
                                                                      need_self, reference)
    return MethodOutput("Kronfluence", scores, self_scores, "self-influence (EK-FAC)", build, query,
                        factor_bytes / len(train_ds),
                        [f"kronfluence 1.0.1 EK-FAC, tracked: {tracked}", sign_note,
                         "stores no per-row features: every query batch recomputes all training gradients"])


def kronfluence_scores(analyzer: Any, train_ds: Any, test_ds: Any, strategy: str, need_self: bool,
                       reference: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None, float, float, str]:
    """Kronfluence on a prepared Analyzer (either benchmark task): fit the factors, score every
    (test, train) pair, align the sign with grad-dot, self-influence when asked.
    Returns (scores, self_scores, build seconds, query seconds per test row, sign note)."""
    from kronfluence.arguments import FactorArguments
    from kronfluence.utils.dataset import DataLoaderKwargs

    loader_kwargs = DataLoaderKwargs(num_workers=0)
    started = time.perf_counter()
    # EK-FAC's Fisher samples labels from the model (compute_train_loss(sample=True), global torch RNG):
    # a fixed seed, in a forked RNG, makes the peer's row the same run to run
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(KRONFLUENCE_SEED)
        analyzer.fit_all_factors(factors_name="ekfac", dataset=train_ds, per_device_batch_size=32,
                                 factor_args=FactorArguments(strategy=strategy), dataloader_kwargs=loader_kwargs,
                                 overwrite_output_dir=True)
    build = time.perf_counter() - started
    started = time.perf_counter()
    analyzer.compute_pairwise_scores(scores_name="pairs", factors_name="ekfac", query_dataset=test_ds,
                                     train_dataset=train_ds, per_device_query_batch_size=len(test_ds),
                                     per_device_train_batch_size=64, dataloader_kwargs=loader_kwargs,
                                     overwrite_output_dir=True)
    scores = analyzer.load_pairwise_scores("pairs")["all_modules"].double().numpy()
    query = (time.perf_counter() - started) / len(test_ds)
    scores, sign_note = _aligned_sign(scores, reference)
    self_scores = None
    if need_self:
        analyzer.compute_self_scores(scores_name="self", factors_name="ekfac", train_dataset=train_ds,
                                     per_device_train_batch_size=64, dataloader_kwargs=loader_kwargs,
                                     overwrite_output_dir=True)
        self_scores = analyzer.load_self_scores("self")["all_modules"].double().numpy()
    return scores, self_scores, build, query, sign_note


# -- dattri --------------------------------------------------------------------------------------
def _dattri_task(trained: Trained, checkpoints: Sequence[bytes]):  # type: ignore[no-untyped-def]
    from dattri.task import AttributionTask

    clf = _fresh_classifier(trained)
    model = clf.model

    def loss_func(params: dict[str, torch.Tensor], data: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """One row under vmap (TracIn, per-example gradients) or a whole batch (Arnoldi's HVPs)."""
        input_ids, mask, label = data
        if input_ids.dim() == 2:  # dattri vmaps its Hessian-vector products too: prepare the mask here
            additive = (1.0 - mask.to(torch.float32))[:, None, None, :] * torch.finfo(torch.float32).min
            return F.cross_entropy(functional_call(model, params, (input_ids, mask), {"backbone_mask": additive}), label)
        logits = functional_call(model, params, (input_ids[None], mask[None]), {"backbone_mask": _additive(mask)})
        return F.cross_entropy(logits, label[None])

    def load(model: torch.nn.Module, adapter: bytes) -> torch.nn.Module:
        load_adapter_bytes(model, adapter)
        return model

    task = AttributionTask(loss_func=loss_func, model=model, checkpoints=list(checkpoints),
                           checkpoints_load_func=load)
    return task, clf


def _loader(clf: Classifier, rows: Sequence[Row], batch_size: int = 32) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*_tensors(clf, rows)), batch_size=batch_size,
                                       shuffle=False)


def run_dattri_tracin(trained: Trained, rows: Sequence[Row], test_rows: Sequence[Row], need_self: bool,
                      learning_rate: float) -> MethodOutput:
    """Real TracIn: the sum over the epoch-end checkpoints of lr x grad-dot (dattri, projected to 512)."""
    from dattri.algorithm.tracin import TracInAttributor

    checkpoints = trained.model.epoch_adapters
    task, clf = _dattri_task(trained, checkpoints)
    attributor = TracInAttributor(task=task, weight_list=torch.full((len(checkpoints),), learning_rate),
                                  normalized_grad=False, projector_kwargs={"proj_dim": 512, "device": "cpu"},
                                  device="cpu")
    started = time.perf_counter()
    # dattri recomputes the test gradients for every training batch: few, large batches keep that cheap
    scores = attributor.attribute(_loader(clf, rows, 128), _loader(clf, test_rows, len(test_rows))).double().numpy().T
    elapsed = time.perf_counter() - started
    self_scores = attributor.self_attribute(_loader(clf, rows, 128)).double().numpy() if need_self else None
    frac = len(rows) / (len(rows) + len(test_rows))  # one fused pass: split its time by rows
    return MethodOutput("dattri-TracIn", scores, self_scores, "self-influence (TracIn)", elapsed * frac,
                        elapsed * (1 - frac) / len(test_rows), 512 * 4.0 * len(checkpoints),
                        [f"dattri 0.3.0 TracInAttributor, {len(checkpoints)} epoch checkpoints, proj 512"])


def run_dattri_if(trained: Trained, rows: Sequence[Row], test_rows: Sequence[Row], need_self: bool,
                  reference: np.ndarray | None) -> MethodOutput:
    """dattri's influence function with its Arnoldi (top-eigenspace) inverse-Hessian."""
    task, clf = _dattri_task(trained, trained.model.epoch_adapters[-1:])
    return dattri_if_output(task, lambda: _loader(clf, rows, 128), _loader(clf, test_rows, len(test_rows)),
                            need_self, reference)


def dattri_if_output(task: Any, train_loader: Callable[[], Any], test_loader: Any, need_self: bool,
                     reference: np.ndarray | None) -> MethodOutput:
    """dattri's Arnoldi influence function on a dattri task (either benchmark task): cache, score,
    align the sign with grad-dot, and self-influence when asked."""
    from dattri.algorithm.influence_function import IFAttributorArnoldi

    attributor = IFAttributorArnoldi(task=task, device="cpu", proj_dim=30, max_iter=30, regularization=1e-3)
    started = time.perf_counter()
    attributor.cache(train_loader())
    build = time.perf_counter() - started
    started = time.perf_counter()
    scores = attributor.attribute(train_loader(), test_loader).double().numpy().T
    query = (time.perf_counter() - started) / len(test_loader.dataset)
    scores, sign_note = _aligned_sign(scores, reference)
    self_scores = None
    if need_self:
        raw = attributor.self_attribute(train_loader()).double().numpy()
        self_scores = raw if "flipped" not in sign_note else -raw
    return MethodOutput("dattri-IF", scores, self_scores, "self-influence (IF, Arnoldi)", build, query, 0.0,
                        ["dattri 0.3.0 IFAttributorArnoldi (proj 30, 30 iterations, reg 1e-3)", sign_note,
                         "stores no per-row features: queries recompute training gradients"])


def checked_peers(names: Sequence[str]) -> None:
    unknown = sorted(set(names) - set(PEERS))
    if unknown:
        raise ValueError(f"unknown peer(s) {unknown}; choose from {list(PEERS)}")


def grad_dot_reference(backend: Any) -> Callable[[Trained, Sequence[Row]], np.ndarray]:
    """(test, train) grad-dot scores on a backend's features: the sign reference for IF peers."""
    def reference(trained: Trained, rows: Sequence[Row]) -> np.ndarray:
        feats = backend.features(trained, rows)
        return feats.test.astype(np.float64) @ feats.train.astype(np.float64).T

    return reference


def classification_runners(backend: Any, names: Sequence[str]) -> dict[str, Callable[[Trained, Sequence[Row], bool], MethodOutput]]:
    checked_peers(names)
    test_rows = backend.test_rows
    lr = backend.config.settings.learning_rate
    reference = grad_dot_reference(backend)

    def workdir() -> str:
        return tempfile.mkdtemp(prefix="bench-attr-")

    table = {
        "TRAK": lambda t, rows, s: run_trak(t, rows, test_rows, s, workdir()),
        "Kronfluence": lambda t, rows, s: run_kronfluence(t, rows, test_rows, s, workdir(), reference(t, rows)),
        "dattri-TracIn": lambda t, rows, s: run_dattri_tracin(t, rows, test_rows, s, lr),
        "dattri-IF": lambda t, rows, s: run_dattri_if(t, rows, test_rows, s, reference(t, rows)),
    }
    return {name: table[name] for name in PEERS if name in names}
