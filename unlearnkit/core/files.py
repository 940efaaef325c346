"""Reading the files unlearnkit is given, safely: every failure is a :class:`~unlearnkit.core.errors.BadFileError`
naming the file and what was expected, and nothing is ever unpickled.

* safetensors files are checked (header, sizes, no truncation) before any tensor is read; a pickle or a zip archive
  (``torch.save``, TorchScript) under a ``.safetensors`` name is refused for safety;
* other weight files are read with ``torch.load(weights_only=True)`` only — a file that needs a full unpickling is
  refused;
* state dicts are loaded into a model strictly, so weights of another architecture are named as such;
* text and JSON must be UTF-8; model folders that carry code (Python files, components from other libraries,
  ``auto_map``) are refused before any loader sees them.
"""
from __future__ import annotations

import json
import os
import struct
import zipfile
from pathlib import Path
from typing import Any

from unlearnkit.core.errors import BadFileError

__all__ = ["file_kind", "safetensors_header", "load_safetensors", "load_weights_only", "load_state_dict_file",
           "load_into", "read_text", "read_json", "check_code_free_folder", "check_safetensors_in"]

PICKLE_PROTOCOL_BYTE = 0x80       # protocols 2-5 start with PROTO
ZIP_MAGIC = b"PK\x03\x04"         # torch.save's default format and TorchScript archives
CODE_SUFFIXES = (".py", ".pyc", ".so", ".pyd")
SAFE_LIBRARIES = ("diffusers", "transformers", None)
_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
                "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8}
_UNSAFE = "refused for safety: unpickling a file can run code it carries"


def file_kind(path: str | os.PathLike) -> str:
    """What the file's first bytes say it is: ``"safetensors"`` (a plausible header), ``"torchscript"``, ``"zip"``,
    ``"pickle"`` or ``"unknown"``."""
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        head = handle.read(9)
    # first: a header length that fits the file and a JSON object after it (a length of 128 + 256·k starts with the
    # byte a pickle starts with, so the order matters)
    if len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] <= size - 8:
        return "safetensors"
    if head.startswith(ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except zipfile.BadZipFile:
            return "zip"
        return "torchscript" if any("/code/" in n or n.endswith("constants.pkl") for n in names) else "zip"
    if head[:1] == bytes([PICKLE_PROTOCOL_BYTE]):
        return "pickle"
    return "unknown"


def _refuse_other_formats(path: Path, what: str) -> None:
    kind = file_kind(path)
    if kind in ("pickle", "zip", "torchscript"):
        described = {"pickle": "a Python pickle", "zip": "a zip archive (torch.save format)",
                     "torchscript": "a TorchScript archive"}[kind]
        raise BadFileError(path, f"is {described}, not safetensors: {_UNSAFE}; expected {what} as a .safetensors "
                                 f"file")


def safetensors_header(path: str | os.PathLike, what: str) -> dict:
    """The parsed header of a safetensors file, after checking that it is one and that no tensor runs past the end
    of the file (a truncated download)."""
    path = Path(path)
    _refuse_other_formats(path, what)
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        length = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else None
        if length is None or not 2 <= length <= size - 8:
            raise BadFileError(path, f"is not a safetensors file (corrupt or truncated: {size} bytes, no valid "
                                     f"header); expected {what}")
        raw = handle.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadFileError(path, f"has a corrupt safetensors header ({error}); expected {what}") from None
    if not isinstance(header, dict):
        raise BadFileError(path, f"has a corrupt safetensors header (not a JSON object); expected {what}")
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            if entry is not None and not (isinstance(entry, dict) and all(isinstance(v, str) for v in entry.values())):
                raise BadFileError(path, "has __metadata__ that is not a map of strings; expected a safetensors file")
            continue
        try:
            start, stop = entry["data_offsets"]
            count = 1
            for dim in entry["shape"]:
                count *= int(dim)
            width = _DTYPE_BYTES.get(entry["dtype"])
        except (KeyError, TypeError, ValueError):
            raise BadFileError(path, f"has a corrupt header entry for tensor {name!r}; expected {what}") from None
        if width is not None and stop - start != count * width:
            raise BadFileError(path, f"tensor {name!r} has {stop - start} bytes for shape {entry['shape']}; the file "
                                     f"is corrupt")
        end = max(end, stop)
    if 8 + length + end > size:
        raise BadFileError(path, f"is truncated: its header needs {8 + length + end} bytes, the file has {size}; "
                                 f"expected {what} (the file is incomplete: write or download it again)")
    return header


def load_safetensors(path: str | os.PathLike, what: str) -> tuple[dict, dict[str, str]]:
    """``(tensors, metadata)`` of a checked safetensors file (:func:`safetensors_header`), on the CPU."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    header = safetensors_header(path, what)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, RuntimeError) as error:
        raise BadFileError(path, f"cannot be read as safetensors ({error}); expected {what}") from None
    return tensors, dict(header.get("__metadata__") or {})


def load_weights_only(path: str | os.PathLike, what: str):
    """``torch.load(path, weights_only=True)`` on the CPU: tensors and plain containers only, never a full
    unpickling."""
    import pickle

    import torch

    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if file_kind(path) == "torchscript":
            raise BadFileError(path, f"is a TorchScript archive, not a state dict; expected {what}") from None
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise BadFileError(path, f"holds objects other than tensors ({first}); {_UNSAFE}, so it is not loaded; "
                                 f"expected {what} as a state dict of tensors (.safetensors preferred)") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as error:
        raise BadFileError(path, f"cannot be read as a torch state dict (corrupt or truncated: {error}); "
                                 f"expected {what}") from None


def load_state_dict_file(path: str | os.PathLike, what: str = "a state dict") -> dict:
    """A state dict from ``.safetensors`` (checked) or any other file (weights-only ``torch.load``)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_safetensors(path, what)[0]
    state = load_weights_only(path, what)
    if not isinstance(state, dict):
        raise BadFileError(path, f"holds a {type(state).__name__}, not a state dict; expected {what}")
    return state


def load_into(module, state: dict, path: str | os.PathLike, what: str, strict: bool = True) -> None:
    """``module.load_state_dict(state, strict)``; a mismatch (names or shapes: weights of another architecture)
    raises naming the file."""
    try:
        module.load_state_dict(state, strict=strict)
    except RuntimeError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        detail = "; ".join(lines[1:3] or lines[:1])[:300]
        raise BadFileError(path, f"does not hold the weights of {what} (another architecture? {detail})") from None


def read_text(path: str | os.PathLike, what: str) -> str:
    """The file as UTF-8 text."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise BadFileError(path, f"is not UTF-8 text (byte {error.start}: {error.reason}); expected {what} "
                                 f"saved as UTF-8") from None


def read_json(path: str | os.PathLike, what: str) -> Any:
    """The file parsed as UTF-8 JSON."""
    try:
        return json.loads(read_text(path, what))
    except json.JSONDecodeError as error:
        raise BadFileError(path, f"is not valid JSON ({error}); expected {what}") from None


def _is_diffusers_pipeline(library: str) -> bool:
    """True for a diffusers pipeline package name (SD v1.4 lists its safety checker as ``"stable_diffusion"``)."""
    import importlib.util

    return isinstance(library, str) and library.isidentifier() and \
        importlib.util.find_spec(f"diffusers.pipelines.{library}") is not None


def check_code_free_folder(folder: str | os.PathLike, what: str) -> None:
    """Refuse a model folder that carries code: Python files (in it or one level down), ``model_index.json``
    components from libraries other than diffusers / transformers, or a config with ``auto_map`` (remote code)."""
    folder = Path(folder)
    for path in [*folder.glob("*"), *folder.glob("*/*")]:
        if path.suffix in CODE_SUFFIXES and path.is_file():
            raise BadFileError(path, f"is code inside {what} {str(folder)!r}; a model folder that carries code is "
                                     f"refused for safety (only configs and weights are read)")
    index = folder / "model_index.json"
    if index.is_file():
        components = read_json(index, f"the model index of {what}")
        if not isinstance(components, dict):
            raise BadFileError(index, f"is not a JSON object; expected the model index of {what}")
        for name, value in components.items():
            if name.startswith("_") or not isinstance(value, list) or len(value) != 2:
                continue
            if value[0] is not None and value[0] not in SAFE_LIBRARIES and not _is_diffusers_pipeline(value[0]):
                raise BadFileError(index, f"component {name!r} comes from {value[0]!r}, not diffusers or transformers: "
                                          f"custom code is refused for safety")
    for config in [folder / "config.json", *folder.glob("*/config.json")]:
        if config.is_file() and "auto_map" in (read_json(config, f"a config of {what}") or {}):
            raise BadFileError(config, "names remote code (auto_map): refused for safety")


def check_safetensors_in(folder: str | os.PathLike, what: str) -> None:
    """:func:`safetensors_header` of every ``.safetensors`` file in ``folder`` and its subfolders."""
    for path in sorted(Path(folder).rglob("*.safetensors")):
        safetensors_header(path, what)
