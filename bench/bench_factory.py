"""Model Factory training benchmark (issue 5): our LoRA trainer vs a plain Hugging Face Trainer + peft
script, on the same data, base model, hyperparameters and threads, side by side in one run.

    .venv/bin/python bench/bench_factory.py [--rows 256] [--epochs 2] [--repeats 2] [--threads 2] [--out FILE]
        [--device cpu|cuda]

Tasks (each arm runs in its own fresh process, so peak RSS is per arm; arms alternate, repeated):
  causal LM: the config-built tiny Llama (~29M params), prompt/completion rows (loss on the completion
      only, the same token ids and labels for both arms), LoRA r=8 alpha=16 on q_proj/v_proj.
  classification: the packaged MiniLM encoder, synthetic topic rows, LoRA r=8 on query/value + a
      linear head; ours mean-pools (the Factory's classifier), the Trainer arm is peft's
      SEQ_CLS model (BertForSequenceClassification: [CLS] pooler + head), what a hand-written script uses.
Both arms: AdamW (weight decay 0), constant learning rate, no warm-up, no gradient clipping, batch
size and epochs equal, shuffled batches, fp32, on the CPU (or both on one GPU with --device cuda;
then peak GPU memory is reported too). The Trainer arm's own defaults would add a linear
decay and clipping at 1.0; they are switched off so that both arms do the same optimisation.
Neither arm records anything for attribution during training (the Factory builds its attribution
index after training, for classifiers), so "attribution capture off" is the only case there is.
Measured: wall time of the training call (model build + data + epochs, model load excluded for
both), examples/s, peak RSS of the process, final training-epoch loss, held-out loss (per target
token for the LM) and accuracy (classifier), computed by the same code for both arms.
It measures and prints; it asserts nothing about time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "backend"))

LR, RANK, ALPHA, SEED = 5e-3, 8, 16, 0


class Clock:
    """Wall time and this process's CPU time (all threads) of the timed section. CPU time moves far
    less than wall time when other jobs share the cores, so both are reported."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def lm_rows(n: int, seed: int) -> list:
    """Prompt/completion rows: short questions about numbers with a deterministic answer."""
    import random

    from provenant.factory.train_lm import LmExample

    rng = random.Random(seed)
    ops = [("plus", lambda a, b: a + b), ("times", lambda a, b: a * b), ("minus", lambda a, b: a - b)]
    rows = []
    for i in range(n):
        a, b = rng.randrange(100), rng.randrange(100)
        name, fn = ops[i % 3]
        rows.append(LmExample(f"Question: what is {a} {name} {b}? Answer:", f" {fn(a, b)}", 1, i, 1))
    return rows


def lm_settings(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from provenant.factory.train import LoraSettings

    return LoraSettings(rank=RANK, alpha=ALPHA, target_modules=("q_proj", "v_proj"), learning_rate=LR,
                        epochs=args.epochs, batch_size=args.batch_size, max_length=48, seed=SEED)


def cls_settings(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from provenant.factory.train import LoraSettings

    return LoraSettings(rank=RANK, alpha=ALPHA, target_modules=("query", "value"), learning_rate=1e-3,
                        epochs=args.epochs, batch_size=args.batch_size, max_length=32, seed=SEED)


def lm_eval_loss(model, base, rows, settings) -> float:  # type: ignore[no-untyped-def]
    from provenant.factory.train_lm import evaluate_lm

    model.eval()
    return evaluate_lm(model, base, rows, settings, next(model.parameters()).device)["eval_loss"]


# -- arms (each runs in a child process) -----------------------------------------------------------
def arm_ours_lm(args: argparse.Namespace) -> dict:
    from provenant.factory.base_models import load_causal_base_model
    from provenant.factory.train_lm import fit_causal_lm

    settings, base = lm_settings(args), load_causal_base_model("tiny-llama")
    train, held = lm_rows(args.rows, 1), lm_rows(args.eval_rows, 2)
    clock = Clock()
    adapter, model = fit_causal_lm(train, settings, "tiny-llama", device=args.device)
    seconds, cpu_seconds = clock.stop()
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "final_train_loss": adapter.metrics["train_loss"][-1],
            "eval_loss": lm_eval_loss(model, base, held, settings)}


def _trainer_args(args: argparse.Namespace, out: str, lr: float):  # type: ignore[no-untyped-def]
    from transformers import TrainingArguments

    return TrainingArguments(output_dir=out, per_device_train_batch_size=args.batch_size,
                             num_train_epochs=args.epochs, learning_rate=lr, lr_scheduler_type="constant",
                             warmup_steps=0, weight_decay=0.0, max_grad_norm=0.0, optim="adamw_torch",
                             logging_strategy="epoch", save_strategy="no", report_to="none",
                             use_cpu=args.device == "cpu",
                             seed=SEED, dataloader_num_workers=0, disable_tqdm=True, remove_unused_columns=False)


def arm_peft_lm(args: argparse.Namespace) -> dict:
    """A plain script: peft's get_peft_model over the base, Hugging Face's Trainer, a padding collator."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import Trainer

    from provenant.factory.base_models import build_tiny_llama, load_causal_base_model
    from provenant.factory.train_lm import collate, pad_id, tokenize

    settings, base = lm_settings(args), load_causal_base_model("tiny-llama")
    train, held = lm_rows(args.rows, 1), lm_rows(args.eval_rows, 2)
    model = build_tiny_llama()  # the same weights as the shared base (seeded)
    clock = Clock()
    model = get_peft_model(model, LoraConfig(task_type=TaskType.CAUSAL_LM, r=RANK, lora_alpha=ALPHA,
                                             lora_dropout=0.0, target_modules=["q_proj", "v_proj"]))
    data = [tokenize(base, ex, settings.max_length) for ex in train]
    pad = pad_id(base)

    def collator(rows):  # type: ignore[no-untyped-def]
        ids, mask, labels = collate(rows, pad)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(model=model, args=_trainer_args(args, out, LR), train_dataset=data, data_collator=collator)
        trainer.train()
    seconds, cpu_seconds = clock.stop()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    with torch.no_grad():
        return {"seconds": seconds, "cpu_seconds": cpu_seconds, "final_train_loss": losses[-1] if losses else float("nan"),
                "eval_loss": lm_eval_loss(model, base, held, settings)}


def _cls_data(args: argparse.Namespace) -> tuple[list, list]:
    from provenant.factory.synthetic import synthetic_examples

    return synthetic_examples(args.cls_rows, seed=1), synthetic_examples(args.eval_rows, seed=2)


def arm_ours_cls(args: argparse.Namespace) -> dict:
    from provenant.factory.base_models import load_base_model
    from provenant.factory.train import fit_classifier

    load_base_model("minilm")
    train, held = _cls_data(args)
    clock = Clock()
    adapter, _ = fit_classifier(train, cls_settings(args), "minilm", eval_examples=held, device=args.device)
    seconds, cpu_seconds = clock.stop()
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "final_train_loss": adapter.metrics["train_loss"][-1],
            "eval_loss": adapter.metrics["eval_loss"], "eval_accuracy": adapter.metrics["eval_accuracy"]}


def arm_peft_cls(args: argparse.Namespace) -> dict:
    import torch
    import torch.nn.functional as F
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer

    from provenant.factory.base_models import resolve_base_model

    path = resolve_base_model("minilm")
    settings = cls_settings(args)
    train, held = _cls_data(args)
    labels = sorted({ex.label for ex in train})
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(labels), local_files_only=True)
    clock = Clock()
    model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=RANK, lora_alpha=ALPHA, lora_dropout=0.0,
                                             target_modules=["query", "value"]))
    data = [{"text": ex.text, "label": labels.index(ex.label)} for ex in train]

    def collator(rows):  # type: ignore[no-untyped-def]
        batch = tokenizer([r["text"] for r in rows], padding=True, truncation=True, max_length=settings.max_length,
                          return_tensors="pt")
        return {**batch, "labels": torch.tensor([r["label"] for r in rows])}

    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(model=model, args=_trainer_args(args, out, settings.learning_rate), train_dataset=data,
                          data_collator=collator)
        trainer.train()
    seconds, cpu_seconds = clock.stop()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    model.eval()
    correct, loss_sum, where = 0, 0.0, next(model.parameters()).device
    with torch.no_grad():
        for start in range(0, len(held), settings.batch_size):
            chunk = held[start:start + settings.batch_size]
            batch = {k: v.to(where) for k, v in collator([{"text": ex.text, "label": labels.index(ex.label)}
                                                           for ex in chunk]).items()}
            target = batch.pop("labels")
            logits = model(**batch).logits
            loss_sum += F.cross_entropy(logits, target).item() * len(chunk)
            correct += int((logits.argmax(-1) == target).sum())
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "final_train_loss": losses[-1] if losses else float("nan"),
            "eval_loss": loss_sum / len(held), "eval_accuracy": correct / len(held)}


ARMS = {"ours-lm": arm_ours_lm, "peft-lm": arm_peft_lm, "ours-cls": arm_ours_cls, "peft-cls": arm_peft_cls}


def run_arm(name: str, args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    result = ARMS[name](args)
    rows = args.rows if name.endswith("-lm") else args.cls_rows
    result.update(arm=name, examples_per_second=rows * args.epochs / result["seconds"],
                  peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, threads=args.threads,
                  device=args.device)
    if args.device != "cpu":
        result.update(peak_gpu_mb=torch.cuda.max_memory_allocated() / 2**20, gpu=torch.cuda.get_device_name())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=256, help="LM training rows")
    parser.add_argument("--cls-rows", type=int, default=384, help="classification training rows")
    parser.add_argument("--eval-rows", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tasks", default="lm,cls")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda: both arms on the same GPU")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON results here")
    parser.add_argument("--arm", choices=sorted(ARMS), help=argparse.SUPPRESS)  # internal: run one arm, print JSON
    args = parser.parse_args()
    if args.arm:
        print(json.dumps(run_arm(args.arm, args)))
        return

    passthrough = [f"--rows={args.rows}", f"--cls-rows={args.cls_rows}", f"--eval-rows={args.eval_rows}",
                   f"--epochs={args.epochs}", f"--batch-size={args.batch_size}", f"--threads={args.threads}",
                   f"--device={args.device}"]
    results: list[dict] = []
    load_before = os.getloadavg()
    for task in args.tasks.split(","):
        for rep in range(args.repeats):
            order = [f"ours-{task}", f"peft-{task}"] if rep % 2 == 0 else [f"peft-{task}", f"ours-{task}"]
            for arm in order:
                out = subprocess.run([sys.executable, __file__, f"--arm={arm}", *passthrough], check=True,
                                     capture_output=True, text=True)
                result = json.loads(out.stdout.strip().splitlines()[-1])
                result["repeat"] = rep
                results.append(result)
                print(json.dumps(result), flush=True)
    summary = {}
    for task in args.tasks.split(","):
        ours = [r for r in results if r["arm"] == f"ours-{task}"]
        peft = [r for r in results if r["arm"] == f"peft-{task}"]
        ratios = [p["seconds"] / o["seconds"] for o, p in zip(ours, peft)]  # > 1: ours is faster
        cpu_ratios = [p["cpu_seconds"] / o["cpu_seconds"] for o, p in zip(ours, peft)]
        summary[task] = {"speedup_vs_trainer_per_repeat": ratios, "cpu_time_ratio_per_repeat": cpu_ratios,
                         "ours_median_s": sorted(r["seconds"] for r in ours)[len(ours) // 2],
                         "trainer_median_s": sorted(r["seconds"] for r in peft)[len(peft) // 2]}
        print(f"{task}: Trainer time / ours = {', '.join(f'{x:.2f}x' for x in ratios)}; "
              f"CPU time: {', '.join(f'{x:.2f}x' for x in cpu_ratios)}")
    report = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()} {os.cpu_count()} cores",
              "device": args.device,
              "load_average_before": load_before, "load_average_after": os.getloadavg(),
              "args": {k: v for k, v in vars(args).items() if k not in ("out", "arm")}, "results": results,
              "summary": summary}
    print(json.dumps({k: report[k] for k in ("date", "machine", "load_average_before", "load_average_after")}))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
