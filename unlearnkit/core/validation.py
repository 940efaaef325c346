"""Input checks shared by every Config and entry point: each returns the checked value or raises an
:class:`~unlearnkit.core.errors.UnlearnkitError` naming the value and what is accepted.

Use them in a Config's ``__post_init__``, one line per field, with the paper's names::

    @dataclass(frozen=True)
    class ESDConfig:
        lr: float = 1e-5
        iterations: int = 1000
        scope: str = "xattn"
        seed: int = 0
        negative_guidance: float = 1.0

        def __post_init__(self):
            check_number(self.lr, "lr", positive=True)                     # finite, > 0; "1e-4" (a string) refused
            check_number(self.iterations, "iterations", integer=True, minimum=1)   # 2.5, 2.0 and True refused
            check_choice(self.scope, "scope", SCOPES)
            check_seed(self.seed)                                           # an integer in [0, 2**63)
            check_number(self.negative_guidance, "negative_guidance")      # any finite number

What each rule refuses:

* **finiteness** — every :func:`check_number` refuses NaN and ±inf (they train into non-finite weights);
* **type** — ``bool`` is never a number; a string is never a number (``lr="1e-4"`` names the field and says to write
  it unquoted); ``integer=True`` refuses every float, even ``2.0`` (so nothing is truncated silently);
* **ranges** — ``minimum`` / ``maximum`` are inclusive, ``above`` / ``below`` exclusive, ``positive`` is ``above=0``;
* **choices** — :func:`check_choice` lists the accepted values; :func:`check_unique` names the repeated ones
  (the same concept twice); :func:`check_device` accepts only devices this machine has.

Type errors raise :class:`~unlearnkit.core.errors.BadTypeError` (also a ``TypeError``), value errors
:class:`~unlearnkit.core.errors.UnlearnkitError`; both are ``ValueError``s.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Iterable, Mapping

from unlearnkit.core.errors import BadTypeError, UnlearnkitError

__all__ = ["SEED_LIMIT", "check_number", "check_integer", "check_choice", "check_flag", "check_text", "check_seed",
           "check_seeds", "check_device", "check_unique", "check_prompts_and_seeds", "check_finite_tensors"]

#: seeds are integers in ``[0, SEED_LIMIT)``: what ``torch.Generator.manual_seed`` takes without wrapping
SEED_LIMIT = 2 ** 63


def _bounds_text(minimum, maximum, above, below) -> str:
    low = f"[{minimum:g}" if minimum is not None else (f"({above:g}" if above is not None else None)
    high = f"{maximum:g}]" if maximum is not None else (f"{below:g})" if below is not None else None)
    if low and high:
        return f" in {low}, {high}"
    if low:
        return f" >= {minimum:g}" if minimum is not None else f" > {above:g}"
    if high:
        return f" <= {maximum:g}" if maximum is not None else f" < {below:g}"
    return ""


def check_number(value, name: str, *, minimum: float | None = None, maximum: float | None = None,
                 above: float | None = None, below: float | None = None, positive: bool = False,
                 integer: bool = False, allow_none: bool = False):
    """``value`` as a Python ``int`` (``integer=True``) or ``float``: a finite real number within the bounds
    (``None`` passes when ``allow_none``)."""
    if positive and above is None:
        above = 0
    kind = "an integer" if integer else "a finite number"
    expected = kind + _bounds_text(minimum, maximum, above, below) + (" or None" if allow_none else "")
    if value is None and allow_none:
        return None
    if isinstance(value, str):
        raise BadTypeError(f"{name}={value!r} is a string: expected {expected} (write the number without quotes)")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise BadTypeError(f"{name}={value!r} ({type(value).__name__}): expected {expected}")
    shown = value.item() if hasattr(value, "item") else value   # numpy scalars print as plain numbers
    if integer:
        if not isinstance(value, numbers.Integral):
            raise BadTypeError(f"{name}={shown!r} is not an integer: expected {expected}")
        value = int(value)
    else:
        value = float(value)
        if not math.isfinite(value):
            raise UnlearnkitError(f"{name}={shown!r} is not finite: expected {expected}")
    if ((minimum is not None and value < minimum) or (maximum is not None and value > maximum)
            or (above is not None and value <= above) or (below is not None and value >= below)):
        raise UnlearnkitError(f"{name}={shown!r} is out of range: expected {expected}")
    return value


def check_integer(value, name: str, *, minimum: int | None = None, maximum: int | None = None,
                  allow_none: bool = False):
    """``check_number(value, name, integer=True, …)``: an ``int`` (never a bool or a float) within the bounds."""
    return check_number(value, name, minimum=minimum, maximum=maximum, integer=True, allow_none=allow_none)


def check_choice(value, name: str, choices: Iterable):
    """``value`` when it is one of ``choices``; else an error listing them."""
    choices = tuple(choices)
    try:
        accepted = value in choices
    except (TypeError, ValueError):   # e.g. an array, whose == is element-wise
        accepted = False
    if isinstance(value, bool) and not any(isinstance(c, bool) for c in choices):
        accepted = False   # True == 1: a flag is not the choice 1
    if not accepted:
        raise UnlearnkitError(f"{name}={value!r} is not accepted: expected one of {', '.join(map(repr, choices))}")
    return value


def check_flag(value, name: str) -> bool:
    """``value`` when it is ``True`` or ``False`` (not 0, 1 or a string)."""
    if not isinstance(value, bool):
        raise BadTypeError(f"{name}={value!r}: expected true or false")
    return value


def check_text(value, name: str, *, allow_blank: bool = False) -> str:
    """``value`` when it is a string (non-blank unless ``allow_blank``)."""
    if not isinstance(value, str):
        raise BadTypeError(f"{name}={value!r} ({type(value).__name__}): expected a string")
    if not allow_blank and not value.strip():
        raise UnlearnkitError(f"{name}={value!r} is blank: expected a non-empty string")
    return value


def check_seed(value, name: str = "seed") -> int:
    """``value`` as an ``int`` in ``[0, 2**63)``: not a bool, not a float (1.7 is not seed 1), not a string."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise BadTypeError(f"{name}={value!r} ({type(value).__name__}): expected an integer seed in [0, 2**63)")
    value = int(value)
    if not 0 <= value < SEED_LIMIT:
        raise UnlearnkitError(f"{name}={value!r} is out of range: expected an integer seed in [0, 2**63)")
    return value


def check_seeds(values, name: str = "seeds") -> list[int]:
    """Every element of ``values`` through :func:`check_seed` (a single seed is not a list of seeds)."""
    if isinstance(values, (str, bytes)) or isinstance(values, numbers.Number) or not isinstance(values, Iterable):
        raise BadTypeError(f"{name}={values!r}: expected a list of integer seeds")
    return [check_seed(v, f"{name}[{i}]") for i, v in enumerate(values)]


def check_device(device, name: str = "device", *, cuda_devices: int | None = None, meta: bool = False):
    """``device`` as a ``torch.device`` this machine has: ``cpu``, ``cuda`` / ``cuda:N`` (N below the number of
    visible GPUs, or ``cuda_devices`` when given) or ``mps`` where available; ``meta`` (shapes only, no memory)
    when ``meta``."""
    import torch

    accepted = "cpu, cuda, cuda:N or mps"
    if isinstance(device, torch.device):
        parsed = device
    elif isinstance(device, str):
        try:
            parsed = torch.device(device.strip())
        except (RuntimeError, ValueError):
            raise UnlearnkitError(f"{name}={device!r} is not a device: expected {accepted}") from None
    else:
        raise BadTypeError(f"{name}={device!r} ({type(device).__name__}): expected a device name ({accepted})")
    if parsed.type == "cpu" or (meta and parsed.type == "meta"):
        return parsed
    if parsed.type == "cuda":
        if cuda_devices is None:
            cuda_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if cuda_devices == 0:
            raise UnlearnkitError(f"{name}={str(device)!r}: no CUDA GPU is visible on this machine; use cpu")
        if parsed.index is not None and parsed.index >= cuda_devices:
            raise UnlearnkitError(f"{name}={str(device)!r}: this machine has {cuda_devices} visible GPU(s), "
                                  f"cuda:0 … cuda:{cuda_devices - 1}")
        return parsed
    if parsed.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise UnlearnkitError(f"{name}={str(device)!r}: MPS is not available on this machine; use cpu")
        return parsed
    raise UnlearnkitError(f"{name}={str(device)!r} is not supported: expected {accepted}")


def check_unique(values: Iterable, name: str, *, key: Callable[[Any], Any] | None = None) -> list:
    """``values`` as a list when no two have the same ``key`` (default: the value); else the repeats are named."""
    values = list(values)
    keys = [key(v) if key is not None else v for v in values]
    repeated = list(dict.fromkeys(k for i, k in enumerate(keys) if k in keys[:i]))
    if repeated:
        raise UnlearnkitError(f"{name} repeats {', '.join(map(repr, repeated))}: give each one once")
    return values


def check_prompts_and_seeds(prompts, seeds, purpose: str = "generate",
                            allow_blank: bool = True) -> tuple[list[str], list[int]]:
    """A non-empty list of prompts (strings; non-blank unless ``allow_blank``) and one seed per prompt
    (:func:`check_seed`)."""
    if isinstance(prompts, str):
        raise BadTypeError(f"prompts must be a list of strings, not one string: {prompts!r}")
    if not isinstance(prompts, Iterable):
        raise BadTypeError(f"prompts must be a list of strings, got {type(prompts).__name__}: {prompts!r}")
    prompts = list(prompts)
    if not prompts:
        raise UnlearnkitError(f"prompts is empty: give at least one prompt to {purpose}")
    for p in prompts:
        if not isinstance(p, str):
            raise BadTypeError(f"prompts must be strings, got {type(p).__name__}: {p!r}")
    if not allow_blank:
        bad = [p for p in prompts if not p.strip()]
        if bad:
            raise UnlearnkitError(f"prompts must be non-empty strings, got {bad[:3]!r}")
    seeds = check_seeds(seeds)
    if len(seeds) != len(prompts):
        raise UnlearnkitError(f"got {len(prompts)} prompts but {len(seeds)} seeds; give one seed per prompt")
    return prompts, seeds


def check_finite_tensors(tensors: Mapping[str, Any], what: str) -> None:
    """Raise naming the first tensor of ``tensors`` (``{name: tensor}``) that holds NaN or ±inf."""
    import torch

    for key, tensor in tensors.items():
        if tensor.is_floating_point() or tensor.is_complex():
            if not bool(torch.isfinite(tensor).all()):
                bad = int((~torch.isfinite(tensor)).sum())
                raise UnlearnkitError(f"{what}: tensor {key!r} holds {bad} non-finite value(s) (NaN or inf); "
                                      f"refused")

