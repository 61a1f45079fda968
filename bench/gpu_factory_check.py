"""The Model Factory on a CUDA GPU (issue 5): the device path and the torchrun path, checked for real.

    python3 bench/gpu_factory_check.py [--rows 512] [--out FILE]      (run by bench/gpu_checks.sh)

1. The same causal-LM job (config-built tiny Llama, LoRA r=8 on q/v) trained on the CPU once and on
   the GPU twice: are two GPU runs bit-identical, how far is the GPU adapter from the CPU one, do
   both reach the same held-out loss, and how fast is each.
2. torchrun with 2 processes sharing the GPU (Gloo: NCCL refuses two processes on one GPU) against
   one process on the GPU: the largest difference between the two adapters.
3. QLoRA (`quantize_base="nf4"`, needs bitsandbytes): the same job over a 4-bit base, its held-out
   loss and peak GPU memory beside the float32 GPU run.
It measures and prints; it asserts nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "backend"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import torch  # noqa: E402
from safetensors.torch import load as load_safetensors  # noqa: E402

from bench_factory import lm_rows  # noqa: E402
from provenant.factory.base_models import load_causal_base_model  # noqa: E402
from provenant.factory.train import LoraSettings  # noqa: E402
from provenant.factory.train_lm import evaluate_lm, fit_causal_lm  # noqa: E402


def max_difference(a: bytes, b: bytes) -> float:
    x, y = load_safetensors(a), load_safetensors(b)
    return max(float((x[k] - y[k]).abs().max()) for k in x)


def train(rows: list, held: list, settings: LoraSettings, device: str) -> dict:
    if device != "cpu":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    adapter, model = fit_causal_lm(rows, settings, "tiny-llama", device=device)
    seconds = time.perf_counter() - started
    base = load_causal_base_model("tiny-llama")
    return {"device": adapter.metrics["device"], "seconds": seconds,
            "examples_per_second": adapter.metrics["examples_per_second"],
            "sha256": hashlib.sha256(adapter.adapter_bytes).hexdigest(),
            "eval_loss": evaluate_lm(model, base, held, settings)["eval_loss"], "bytes": adapter.adapter_bytes,
            "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if device != "cpu" else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--device", default="cuda", help="cuda; cpu only to try this script without a GPU")
    parser.add_argument("--parts", default="devices,torchrun,qlora", help="which checks to run")
    args = parser.parse_args()
    torch.set_num_threads(min(8, os.cpu_count() or 1))
    settings = LoraSettings(target_modules=("q_proj", "v_proj"), epochs=2, batch_size=32, max_length=48,
                            learning_rate=5e-3, seed=0)
    rows, held = lm_rows(args.rows, 1), lm_rows(64, 2)
    parts = set(args.parts.split(","))
    report: dict = {"gpu": torch.cuda.get_device_name() if args.device != "cpu" else "none",
                    "torch": torch.__version__, "rows": args.rows, "epochs": settings.epochs}
    if "qlora" in parts:
        full = train(rows, held, settings, args.device)
        try:
            nf4 = train(rows, held, LoraSettings(**{**settings.to_dict(), "quantize_base": "nf4"}), args.device)
            report["qlora"] = {"float32": {k: v for k, v in full.items() if k != "bytes"},
                               "nf4": {k: v for k, v in nf4.items() if k != "bytes"},
                               "max_abs_difference_nf4_vs_float32": max_difference(nf4["bytes"], full["bytes"])}
        except ValueError as exc:
            report["qlora"] = {"refused": str(exc)}
    if "devices" in parts:
        report.update(devices(rows, held, settings, args.device))
    if "torchrun" in parts:
        report["torchrun"] = torchrun(args.device)
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


def devices(rows: list, held: list, settings: LoraSettings, device: str) -> dict:
    cpu = train(rows, held, settings, "cpu")
    gpu_a = train(rows, held, settings, device)
    gpu_b = train(rows, held, settings, device)
    return {
        "runs": {name: {k: v for k, v in r.items() if k != "bytes"} for name, r in
                 (("cpu", cpu), ("cuda_1", gpu_a), ("cuda_2", gpu_b))},
        "cuda_runs_bit_identical": gpu_a["bytes"] == gpu_b["bytes"],
        "max_abs_difference_cuda_vs_cpu": max_difference(gpu_a["bytes"], cpu["bytes"]),
        "speedup_cuda_vs_cpu": cpu["seconds"] / gpu_a["seconds"],
    }


def torchrun(device: str) -> dict:
    """2 processes on the one GPU vs 1 process (the small job of the CPU test, on the GPU)."""
    from test_factory_replicas import LM_ROWS, LM_SETTINGS

    single, _ = fit_causal_lm(LM_ROWS, LM_SETTINGS, "tiny-llama", device=device)
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                              str(ROOT / "tests" / "factory_replicas_worker.py"), tmp, device, "lm"],
                             env=env, capture_output=True, text=True, timeout=300)
        result: dict = {"returncode": run.returncode, "stderr_tail": run.stderr[-8000:]}
        if run.returncode == 0:
            split = (Path(tmp) / "lm.safetensors").read_bytes()
            result.update(processes=(Path(tmp) / "processes").read_text(), device=(Path(tmp) / "device").read_text(),
                          max_abs_difference_vs_one_process=max_difference(split, single.adapter_bytes))
    return result


if __name__ == "__main__":
    main()
