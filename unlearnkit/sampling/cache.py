"""Resumable, shardable image generation backed by a content-addressed PNG cache.

``generate_cached`` names each image by a sha256 of what it depends on (model weights, prompt, seed, sampler
settings, guidance id) and stores it once, as ``cache_dir/<key[:2]>/<key>.png``. A second call with the same
inputs reads the images back; a run killed halfway resumes where it stopped; an edited model (any changed weight)
gets a new model fingerprint and hence new keys.

``cache_dir/index.jsonl`` records, one JSON line per generated image, its key, prompt, seed, sampler settings,
guidance id and model id, so any PNG in the cache can be traced back to what made it.

Sharding over several processes or GPUs
---------------------------------------
Write a script that calls ``generate_cached`` and start it with ``accelerate launch``::

    # gen.py
    from accelerate import PartialState
    from unlearnkit.sampling.cache import generate_cached
    from unlearnkit.worlds import load_world

    state = PartialState()
    world = load_world("mini", state.device)
    generate_cached(world.pipe, prompts, seeds, world.sampler, "cache/", embeddings=world.embeddings)
    state.wait_for_everyone()
    if state.is_main_process:
        images = generate_cached(world.pipe, prompts, seeds, world.sampler, "cache/")  # all cache hits now

    $ accelerate launch --num_processes 4 gen.py

Each process picks its shard from accelerate (``process_index``, ``num_processes``); item ``i`` of the input
belongs to shard ``i % num_processes``. Shards share nothing but the cache folder, so the same split works
across machines on a shared filesystem (pass ``shard=(index, count)`` there). A shard returns the full image
array only if every image is in the cache once its own work is done, and ``None`` otherwise.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from unlearnkit.core.diffusion import TextEmbeddingCache
from unlearnkit.core.errors import BadTypeError, UnlearnkitError
from unlearnkit.core.validation import check_prompts_and_seeds  # noqa: F401  (the one prompt/seed check)
from unlearnkit.sampling import Guidance, SamplerSettings, check_batch_size, generate

__all__ = [
    "model_fingerprint",
    "image_key",
    "image_keys",
    "cache_path",
    "read_cached_image",
    "missing_items",
    "load_cached_images",
    "default_shard",
    "shard_items",
    "generate_cached",
]

logger = logging.getLogger(__name__)

# Bump when the key recipe changes, so old cache entries can never be mistaken for new ones.
CACHE_FORMAT_VERSION = 1
INDEX_FILENAME = "index.jsonl"
FINGERPRINTED_COMPONENTS = ("unet", "text_encoder", "vae")


# --- model identity ---------------------------------------------------------------------------------------------
def _hash_tensor(hasher, name: str, tensor: torch.Tensor) -> None:
    """Feed a tensor's name, shape, dtype and raw bytes to ``hasher``."""
    tensor = tensor.detach()
    hasher.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}\n".encode())
    # Viewing as bytes works for every dtype (numpy has no bfloat16) and copies nothing on CPU.
    raw = tensor.contiguous().reshape(-1).view(torch.uint8).cpu().numpy()
    hasher.update(memoryview(raw))


def _is_adapter_layer(module: torch.nn.Module) -> bool:
    """True for a peft tuner layer (LoRA and friends), whose output depends on its enable/disable switch."""
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:
        return False
    return isinstance(module, BaseTunerLayer)


def _hash_adapter_state(hasher, name: str, module: torch.nn.Module) -> None:
    """Feed a peft adapter layer's switch state: a LoRA that is disabled leaves the weights untouched but changes
    the model, so enabling/disabling an adapter must change the fingerprint too."""
    state = {
        "active": list(getattr(module, "active_adapters", [])),
        "disabled": bool(getattr(module, "disable_adapters", False)),
        "merged": list(getattr(module, "merged_adapters", [])),
    }
    scaling = getattr(module, "scaling", None)
    if isinstance(scaling, dict):
        state["scaling"] = {k: float(v) for k, v in sorted(scaling.items())}
    hasher.update(f"adapter:{name}|{json.dumps(state, sort_keys=True)}\n".encode())


def model_fingerprint(pipe) -> str:
    """sha256 over every parameter and buffer (name, shape, dtype, bytes) of the pipeline's UNet, text encoder and
    VAE, the on/off state of any peft adapters, and the scheduler config.

    One pass over all weights (seconds for SD v1.4): compute it once and pass it as ``model_id`` to repeated
    ``generate_cached`` calls on the same weights. Code changes (attention processors, another device's kernels)
    are not covered; fold those into a ``model_id`` of your own if they matter.
    """
    hasher = hashlib.sha256()
    for component in FINGERPRINTED_COMPONENTS:
        module = getattr(pipe, component)
        for name, param in module.named_parameters():
            _hash_tensor(hasher, f"{component}.{name}", param)
        for name, buffer in module.named_buffers():
            _hash_tensor(hasher, f"{component}.{name}:buffer", buffer)
        for name, sub in module.named_modules():
            if _is_adapter_layer(sub):
                _hash_adapter_state(hasher, f"{component}.{name}", sub)
    scheduler_config = json.dumps(dict(pipe.scheduler.config), sort_keys=True, default=str)
    hasher.update(f"scheduler|{scheduler_config}\n".encode())
    return hasher.hexdigest()


# --- keys and cache files ---------------------------------------------------------------------------------------
def image_key(model_id: str, prompt: str, seed: int, settings: SamplerSettings, guidance_id: str | None = None) -> str:
    """sha256 naming one image: everything the image depends on, and nothing else (not the batch it was in)."""
    recipe = {
        "version": CACHE_FORMAT_VERSION,
        "model": model_id,
        "prompt": prompt,
        "seed": int(seed),
        "settings": settings.as_dict(),
        "guidance": guidance_id,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def image_keys(prompts: Sequence[str], seeds: Sequence[int], settings: SamplerSettings, model_id: str,
               guidance_id: str | None = None) -> list[str]:
    """One :func:`image_key` per (prompt, seed) pair, in input order."""
    return [image_key(model_id, p, s, settings, guidance_id) for p, s in zip(prompts, seeds)]


def cache_path(cache_dir: str | Path, key: str) -> Path:
    """``cache_dir/<key[:2]>/<key>.png`` — the two-character folders keep directory listings short."""
    return Path(cache_dir) / key[:2] / f"{key}.png"


def read_cached_image(path: str | Path) -> np.ndarray | None:
    """uint8 ``[H, W, 3]`` image at ``path``, or ``None`` if it is missing or does not decode (truncated, corrupt)."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, ValueError, SyntaxError):
        # PIL raises OSError for truncated data, SyntaxError/ValueError for broken headers.
        return None


def missing_items(cache_dir: str | Path, keys: Sequence[str]) -> list[int]:
    """Indices of ``keys`` whose cached PNG is missing or unreadable."""
    return [i for i, key in enumerate(keys) if read_cached_image(cache_path(cache_dir, key)) is None]


def load_cached_images(cache_dir: str | Path, keys: Sequence[str]) -> np.ndarray:
    """Read the images for ``keys`` in order as uint8 ``[N, H, W, 3]``; raise if any is missing."""
    images = [read_cached_image(cache_path(cache_dir, key)) for key in keys]
    absent = [i for i, img in enumerate(images) if img is None]
    if absent:
        raise FileNotFoundError(f"{len(absent)} of {len(keys)} images are not in the cache {cache_dir} "
                                f"(first missing item: index {absent[0]}, key {keys[absent[0]]})")
    return np.stack(images)


def _write_png_atomically(image: np.ndarray, path: Path) -> None:
    """Write via a temp file in the same folder and ``os.replace``, so a kill never leaves a half-written PNG under
    the final name (a reader sees the old state or the complete new file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem[:16]}-", suffix=".png.tmp")
    try:
        with os.fdopen(fd, "wb") as tmp:
            Image.fromarray(image).save(tmp, format="PNG")
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _append_index_lines(cache_dir: Path, records: list[dict]) -> None:
    """Append provenance records to ``index.jsonl`` with one ``O_APPEND`` write, so lines from concurrent shards
    never interleave within a line."""
    payload = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode()
    fd = os.open(cache_dir / INDEX_FILENAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, payload)
    finally:
        os.close(fd)


# --- sharding ---------------------------------------------------------------------------------------------------
def _launched_as_distributed() -> bool:
    """True under ``accelerate launch`` / ``torchrun`` (they set ``ACCELERATE_*`` or ``WORLD_SIZE``)."""
    return "WORLD_SIZE" in os.environ or any(k.startswith("ACCELERATE_") for k in os.environ)


def default_shard() -> tuple[int, int]:
    """``(process_index, num_processes)`` from accelerate when launched by it, else ``(0, 1)``."""
    if not _launched_as_distributed():
        return 0, 1
    from accelerate import PartialState

    state = PartialState()
    return state.process_index, state.num_processes


def _validate_shard(shard) -> tuple[int, int]:
    if (not isinstance(shard, (tuple, list)) or len(shard) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in shard)):
        raise UnlearnkitError(f"shard must be a pair of integers (index, count), got {shard!r}")
    index, count = shard
    if count < 1 or not 0 <= index < count:
        raise UnlearnkitError(f"shard={shard!r} is invalid: need count >= 1 and 0 <= index < count")
    return index, count


def shard_items(indices: Sequence[int], shard: tuple[int, int]) -> list[int]:
    """The input indices that belong to ``shard = (index, count)``: ``i % count == index`` (by input position, so
    processes agree on who owns what whenever each looked at the cache)."""
    index, count = shard
    return [i for i in indices if i % count == index]


# --- validation -------------------------------------------------------------------------------------------------
def _validate_inputs(prompts, seeds, settings, cache_dir, guidance, guidance_id, batch_size, model_id):
    prompts, seeds = check_prompts_and_seeds(prompts, seeds)
    if not isinstance(settings, SamplerSettings):
        raise BadTypeError(f"settings must be a SamplerSettings, got {type(settings).__name__}: {settings!r}")
    if guidance is not None and not (isinstance(guidance_id, str) and guidance_id):
        raise UnlearnkitError(f"a custom guidance needs a non-empty guidance_id string naming it (a callable "
                              f"cannot be hashed reliably), got guidance_id={guidance_id!r}")
    if guidance is None and guidance_id is not None:
        raise UnlearnkitError(f"guidance_id={guidance_id!r} was given without a guidance callable; the default CFG "
                              f"needs no id")
    check_batch_size(batch_size)
    if model_id is not None and not (isinstance(model_id, str) and model_id):
        raise UnlearnkitError(f"model_id must be a non-empty string (e.g. from model_fingerprint), got {model_id!r}")
    if not isinstance(cache_dir, (str, os.PathLike)) or not str(cache_dir):
        raise BadTypeError(f"cache_dir must be a folder path, got {cache_dir!r}")
    cache_dir = Path(cache_dir)
    if cache_dir.exists() and not cache_dir.is_dir():
        raise NotADirectoryError(f"cache_dir {str(cache_dir)!r} exists and is not a directory")
    return prompts, seeds, cache_dir


# --- generation -------------------------------------------------------------------------------------------------
def _first_occurrences(keys: Sequence[str]) -> list[int]:
    """Index of the first occurrence of each distinct key: a repeated (prompt, seed) is generated once."""
    seen: dict[str, int] = {}
    for i, key in enumerate(keys):
        seen.setdefault(key, i)
    return sorted(seen.values())


def _padded(indices: list[int], size: int) -> list[int]:
    """``indices`` padded to ``size`` by repeating the last one: kernels differ by batch size in the last bits, so
    one fixed batch size keeps pixels independent of sharding, resumption and what was cached already."""
    return indices + [indices[-1]] * (size - len(indices))


def _generate_and_store(pipe, prompts, seeds, settings, cache_dir, keys, todo, guidance, guidance_id, embeddings,
                        batch_size, fixed_batch, progress, model_id) -> dict[int, np.ndarray]:
    """Generate the items ``todo`` in batches of ``fixed_batch`` size, writing each image (and its index line)
    as soon as its batch is done; return the new images by input index."""
    made: dict[int, np.ndarray] = {}
    with tqdm(total=len(todo), desc="generating", unit="img", disable=not progress) as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            run = _padded(batch, fixed_batch)
            images = generate(pipe, [prompts[i] for i in run], [seeds[i] for i in run], settings, guidance,
                              embeddings, batch_size=fixed_batch)
            records = []
            for i, image in zip(batch, images):
                _write_png_atomically(image, cache_path(cache_dir, keys[i]))
                made[i] = image
                records.append({"key": keys[i], "prompt": prompts[i], "seed": seeds[i],
                                "settings": settings.as_dict(), "guidance_id": guidance_id, "model_id": model_id})
            _append_index_lines(cache_dir, records)
            bar.update(len(batch))
    return made


def generate_cached(pipe, prompts: Sequence[str], seeds: Sequence[int], settings: SamplerSettings, cache_dir,
                    guidance: Guidance | None = None, guidance_id: str | None = None,
                    embeddings: TextEmbeddingCache | None = None, batch_size: int = 64,
                    shard: tuple[int, int] | None = None, progress: bool = True,
                    model_id: str | None = None) -> np.ndarray | None:
    """Generate one image per (prompt, seed) through a PNG cache: uint8 ``[N, H, W, 3]``, or ``None`` (sharded).

    Only images missing from ``cache_dir`` (or whose PNG does not decode) are generated; each is written
    atomically right after its batch.

    Args:
        guidance: custom guidance hook (default: CFG at ``settings.guidance_scale``); needs ``guidance_id``, a
            string that names it in the cache key — e.g. ``"cfg-reversal:s=7.5,t'=43"`` — unless the hook has
            its own ``guidance_id`` (:class:`unlearnkit.sampling.sld.SafeLatentGuidance` does).
        embeddings: text-embedding cache for ``pipe``'s own text encoder (it is not part of the key).
        batch_size: images per UNet batch; every batch runs at ``min(batch_size, distinct items)`` images,
            padded if needed, so pixels do not depend on how the work was split.
        shard: ``(index, count)``: generate only input items ``i`` with ``i % count == index``. Default:
            accelerate's ``(process_index, num_processes)`` under ``accelerate launch``, else ``(0, 1)``.
        model_id: precomputed :func:`model_fingerprint` (or any string identifying the weights); computed here
            when omitted, which reads every weight once.
    Returns:
        All images in input order if every one exists after this shard's work; otherwise ``None``, after
        logging how many are still missing (other shards' items).
    """
    if guidance_id is None:
        guidance_id = getattr(guidance, "guidance_id", None)   # a hook that names itself (SLD)
    prompts, seeds, cache_dir = _validate_inputs(prompts, seeds, settings, cache_dir, guidance, guidance_id,
                                                 batch_size, model_id)
    shard = _validate_shard(default_shard() if shard is None else shard)
    cache_dir.mkdir(parents=True, exist_ok=True)
    model_id = model_id or model_fingerprint(pipe)
    keys = image_keys(prompts, seeds, settings, model_id, guidance_id)
    distinct = _first_occurrences(keys)
    found = {i: read_cached_image(cache_path(cache_dir, keys[i])) for i in distinct}
    todo = shard_items([i for i in distinct if found[i] is None], shard)
    if todo:
        fixed_batch = min(batch_size, len(distinct))
        found.update(_generate_and_store(pipe, prompts, seeds, settings, cache_dir, keys, todo, guidance,
                                         guidance_id, embeddings, batch_size, fixed_batch, progress, model_id))
    # Items owned by other shards may have arrived while we worked: look again before giving up.
    for i in distinct:
        if found[i] is None:
            found[i] = read_cached_image(cache_path(cache_dir, keys[i]))
    still_missing = sum(found[i] is None for i in distinct)
    if still_missing:
        logger.warning("shard %s: %d of %d distinct images are still missing from %s (other shards' items); "
                       "call again once every shard has finished", shard, still_missing, len(distinct), cache_dir)
        return None
    first_index = {key: i for i, key in reversed(list(enumerate(keys)))}
    return np.stack([found[first_index[key]] for key in keys])
