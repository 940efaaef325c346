"""Core diffusion primitives shared by every method and both worlds.

Timesteps have one meaning in unlearnkit:

* **train timesteps** ``t`` are DDPM indices ``0 … T-1`` (``T = num_train_timesteps``, 1000 for SD v1.4);
  larger is noisier. Every loss, every ``q_sample`` and every UNet call takes train timesteps.
* **paper steps** are the papers' 50-step DDIM indices, counted the way ANT Fig. 3 and Table 6 count them:
  ``50`` is pure noise, ``1`` is the last step. ANT's ``t'`` (e.g. 43 for NSFW) is stored in this convention.

The only conversion between the two lives here: paper step ``s`` of an ``N``-step schedule covers the train
timesteps ``((s-1)·T/N, s·T/N]``, so the DDIM timestep taken at paper step ``s`` (``(s-1)·T/N + offset``)
satisfies ``t <= t'_train`` exactly when ``s <= t'``, with ``t'_train = t' · T/N``. Released code that counts
"k steps taken from noise" (ANT ``Multiple/``, LECO) maps to paper steps by ``s = N - k``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import torch

from unlearnkit.core.errors import UnlearnkitError
from unlearnkit.core.validation import check_integer, check_number

__all__ = [
    "TextEmbeddingCache",
    "predict_eps",
    "guided_eps",
    "q_sample",
    "sample_train_timesteps",
    "paper_step_to_train_t",
    "train_t_to_paper_step",
    "steps_taken_to_paper_step",
    "validate_paper_step",
]


def validate_paper_step(step: float, num_inference_steps: int = 50, name: str = "t'") -> None:
    """Raise a clear error unless ``step`` is a number with ``0 <= step <= num_inference_steps``."""
    check_integer(num_inference_steps, "num_inference_steps", minimum=1)
    check_number(step, name)
    if not (0 <= step <= num_inference_steps):
        raise UnlearnkitError(
            f"{name}={step!r} is outside the {num_inference_steps}-step schedule; "
            f"expected a paper step in [0, {num_inference_steps}] (50 = pure noise, 1 = last step)"
        )


def paper_step_to_train_t(step: float, num_inference_steps: int = 50, num_train_timesteps: int = 1000) -> int:
    """Convert a paper step (``N`` = noise … ``1`` = last) to the train-timestep threshold ``step · T / N``."""
    validate_paper_step(step, num_inference_steps)
    check_integer(num_train_timesteps, "num_train_timesteps", minimum=1)
    return int(round(step * num_train_timesteps / num_inference_steps))


def train_t_to_paper_step(t: int | torch.Tensor, num_inference_steps: int = 50, num_train_timesteps: int = 1000):
    """Inverse of :func:`paper_step_to_train_t` for DDIM timesteps: the paper step whose interval holds ``t``."""
    stride = num_train_timesteps / num_inference_steps
    if isinstance(t, torch.Tensor):
        return torch.clamp(torch.ceil(t.double() / stride), min=1).long()
    import math

    return max(1, int(math.ceil(t / stride)))


def steps_taken_to_paper_step(k: int, num_inference_steps: int = 50) -> int:
    """Released LECO/diffusers code counts ``k`` steps *taken from noise*; that is paper step ``N - k``."""
    check_integer(k, "k")
    if not (0 <= k <= num_inference_steps):
        raise UnlearnkitError(f"k={k!r} steps taken must lie in [0, {num_inference_steps}]")
    return num_inference_steps - k


class TextEmbeddingCache:
    """Encode prompts once: ``cache(["a", "b"]) -> [B, L, d]`` last hidden states, kept on ``device``.

    Text encoders are frozen in every method of the three papers, so a prompt's embedding never changes
    during training; caching it removes the text encoder from every optimisation step.
    """

    def __init__(self, tokenizer, text_encoder, device: torch.device | str | None = None, dtype=None):
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.device = torch.device(device) if device is not None else next(text_encoder.parameters()).device
        self.dtype = dtype
        self._store: dict[str, torch.Tensor] = {}

    @property
    def max_length(self) -> int:
        return int(self.tokenizer.model_max_length)

    def token_ids(self, prompts: Sequence[str]) -> torch.Tensor:
        return self.tokenizer(
            list(prompts), padding="max_length", max_length=self.max_length, truncation=True, return_tensors="pt"
        ).input_ids

    @torch.no_grad()
    def _encode(self, prompts: list[str]) -> torch.Tensor:
        ids = self.token_ids(prompts).to(next(self.text_encoder.parameters()).device)
        hidden = self.text_encoder(ids)[0]
        return hidden.to(self.device, dtype=self.dtype or hidden.dtype)

    def __call__(self, prompts: str | Iterable[str]) -> torch.Tensor:
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = list(prompts)
        if not prompts:
            raise ValueError("prompts is empty: give at least one prompt to encode")
        for p in prompts:
            if not isinstance(p, str):
                raise TypeError(f"prompts must be strings, got {type(p).__name__}: {p!r}")
        missing = list(dict.fromkeys(p for p in prompts if p not in self._store))
        if missing:
            for prompt, emb in zip(missing, self._encode(missing)):
                self._store[prompt] = emb
        return torch.stack([self._store[p] for p in prompts])

    @property
    def empty(self) -> torch.Tensor:
        """Embedding of the empty prompt ``""`` (``c_∅``), shape ``[1, L, d]``."""
        return self([""])

    def __len__(self) -> int:
        return len(self._store)


def _expand_t(t: torch.Tensor | int, batch: int, device) -> torch.Tensor:
    t = torch.as_tensor(t, device=device)
    if t.ndim == 0:
        t = t.expand(batch)
    return t


def predict_eps(unet, x_t: torch.Tensor, t, cond: torch.Tensor, uncond: torch.Tensor | None = None):
    """Noise prediction ``ε(x_t, t, c)`` and optionally ``ε(x_t, t)`` in **one** batched UNet call.

    Args:
        x_t: ``[B, C, H, W]`` noisy latents.
        t: scalar or ``[B]`` train timesteps.
        cond: ``[B, L, d]`` (or ``[1, L, d]``, broadcast) conditional text embeddings.
        uncond: optional ``[B|1, L, d]`` unconditional embeddings.
    Returns:
        ``eps_cond`` if ``uncond`` is None, else ``(eps_cond, eps_uncond)``.
    """
    batch = x_t.shape[0]
    t = _expand_t(t, batch, x_t.device)
    cond = cond.expand(batch, -1, -1) if cond.shape[0] == 1 else cond
    if uncond is None:
        return unet(x_t, t, encoder_hidden_states=cond).sample
    uncond = uncond.expand(batch, -1, -1) if uncond.shape[0] == 1 else uncond
    eps = unet(torch.cat([x_t, x_t]), torch.cat([t, t]), encoder_hidden_states=torch.cat([cond, uncond])).sample
    eps_cond, eps_uncond = eps.chunk(2)
    return eps_cond, eps_uncond


def guided_eps(eps_cond: torch.Tensor, eps_uncond: torch.Tensor, scale: float | torch.Tensor) -> torch.Tensor:
    """Classifier-free guidance ``ε(∅) + s·(ε(c) − ε(∅))``; ``s`` may be a ``[B]`` tensor (per-sample sign)."""
    if isinstance(scale, torch.Tensor) and scale.ndim == 1:
        scale = scale.view(-1, *([1] * (eps_cond.ndim - 1))).to(eps_cond)
    return eps_uncond + scale * (eps_cond - eps_uncond)


def q_sample(scheduler, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Forward diffusion ``x_t = sqrt(ᾱ_t) x_0 + sqrt(1-ᾱ_t) ε`` with the scheduler's own ᾱ table."""
    return scheduler.add_noise(x0, noise, t.to(x0.device))


@dataclass(frozen=True)
class TimestepRange:
    """Half-open train-timestep range ``[low, high)``."""

    low: int
    high: int

    def __post_init__(self):
        check_integer(self.low, "low")
        check_integer(self.high, "high")
        if not (0 <= self.low < self.high):
            raise UnlearnkitError(f"empty or negative timestep range [{self.low}, {self.high})")


def sample_train_timesteps(n: int, low: int, high: int, generator: torch.Generator | None = None,
                           device=None) -> torch.Tensor:
    """``n`` integer train timesteps drawn uniformly from ``[low, high)``."""
    check_integer(n, "n", minimum=0)
    TimestepRange(low, high)
    return torch.randint(low, high, (n,), generator=generator).to(device or "cpu")
