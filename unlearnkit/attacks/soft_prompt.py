"""White-box soft-prompt attack in the style of UnlearnDiffAtk (Zhang et al., ECCV 2024).

Given an image of the erased concept (from the **original** model), find the prompt under which the **erased**
model denoises it best; if the concept is still in the weights, that prompt brings it back.

With ``x₀`` the target latent, ``θ*`` the erased UNet, ``P`` the user prompt and ``δ`` ``k`` prefix tokens placed in
front of it, the attack solves (UnlearnDiffAtk §4, the denoising-error objective)

    min_δ  E_{t, ε} ‖ ε_θ*( √ᾱ_t x₀ + √(1−ᾱ_t) ε,  t,  f([δ; P]) ) − ε ‖²

by gradient descent on the prefix token *embeddings* (the input of the frozen text encoder ``f``), for a fixed
number of steps with AdamW; each step draws ``noise_samples`` pairs ``(t, ε)`` per prompt. Discrete prompts come
from projecting each optimised prefix embedding to its nearest vocabulary word (cosine similarity):

* ``projection="final"`` — optimise freely, project once at the end;
* ``projection="straight_through"`` — every step runs the text encoder on the projected words and passes the
  gradient straight through to the continuous embeddings (PEZ-style, as UnlearnDiffAtk's release does); the
  result *is* a discrete prompt;
* ``projection="none"`` — soft prompt only.

Every prompt has its own prefix and draws its own ``(t, ε)`` from a generator seeded with its seed, so the
prompts are optimised together in one batch while each result depends only on its own prompt and seed.
A budget of 0 steps returns the original prompt and its plain embedding.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from typing import Iterator, Sequence

import torch

from unlearnkit.core.diffusion import TextEmbeddingCache, q_sample
from unlearnkit.core.edits import Edit
from unlearnkit.core.errors import BadTypeError, UnlearnkitError
from unlearnkit.core.validation import check_choice, check_integer, check_number
from unlearnkit.sampling import SamplerSettings, sample_latents
from unlearnkit.attacks.text import PromptEmbeddings, soft_prompt_key, validate_prompts_and_seeds, vocabulary_words

__all__ = ["SoftPromptConfig", "SoftPromptResult", "PROJECTIONS", "prefixed_token_ids", "encode_with_prefix",
           "nearest_words", "soft_prompt_attack"]

PROJECTIONS = ("none", "final", "straight_through")


@dataclass(frozen=True)
class SoftPromptConfig:
    """Hyperparameters of the soft-prompt attack.

    ``prefix_tokens`` 5 and ``steps`` 40 (AdamW, ``lr`` 0.01) as in UnlearnDiffAtk. ``noise_samples``: ``(t, ε)``
    draws per prompt and step. ``timesteps``: the half-open train-timestep range ``t`` is drawn from.
    """

    prefix_tokens: int = 5
    steps: int = 40
    lr: float = 0.01
    weight_decay: float = 0.0
    noise_samples: int = 4
    projection: str = "final"
    timesteps: tuple[int, int] = (0, 1000)

    def __post_init__(self):
        check_integer(self.prefix_tokens, "prefix_tokens", minimum=0)
        check_integer(self.steps, "steps", minimum=0)
        if self.steps > 0 and self.prefix_tokens == 0:
            raise UnlearnkitError("prefix_tokens must be >= 1 when steps > 0: there is nothing to optimise")
        check_integer(self.noise_samples, "noise_samples", minimum=1)
        check_number(self.lr, "lr", positive=True)
        check_number(self.weight_decay, "weight_decay", minimum=0)
        check_choice(self.projection, "projection", PROJECTIONS)
        if isinstance(self.timesteps, str) or len(tuple(self.timesteps)) != 2:
            raise BadTypeError(f"timesteps must be a pair (low, high), got {self.timesteps!r}")
        low, high = (check_integer(t, "timesteps bound", minimum=0) for t in self.timesteps)
        if not low < high:
            raise UnlearnkitError(f"timesteps must be a range [low, high) with 0 <= low < high, got "
                                  f"{self.timesteps!r}")
        object.__setattr__(self, "timesteps", (low, high))

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class SoftPromptResult:
    """What the attack found, one entry per attacked prompt.

    Attributes:
        prompts: the original prompts.
        keys: prompt strings naming the soft embeddings (:func:`.text.soft_prompt_key`); the original prompts when
            the budget was 0. Generate with ``generate(pipe, result.keys, seeds, embeddings=result.table(cache))``.
        embeddings: ``[N, L, d]`` text-encoder output of each optimised prompt (what the UNet is conditioned on).
        prefix_embeddings: ``[N, k, d]`` the optimised token embeddings (input side of the text encoder).
        projected_prompts: the discrete prompts (nearest words prepended), or ``None`` with ``projection="none"``.
        losses: the mean denoising loss of each step.
    """

    prompts: list[str]
    keys: list[str]
    embeddings: torch.Tensor
    prefix_embeddings: torch.Tensor
    projected_prompts: list[str] | None
    losses: list[float] = field(default_factory=list)

    def table(self, fallback: TextEmbeddingCache) -> PromptEmbeddings:
        """The embedding table to generate the soft prompts with (other prompts go to ``fallback``)."""
        return PromptEmbeddings({k: e for k, e in zip(self.keys, self.embeddings) if k not in self.prompts},
                                fallback)


# --- text-encoder plumbing ----------------------------------------------------------------------------------------
def prefixed_token_ids(tokenizer, prompts: Sequence[str], prefix_tokens: int, placeholder_id: int) -> torch.Tensor:
    """``[N, L]`` ids ``[BOS, ◻×k, prompt…, EOS, pad…]``: ``k`` placeholder slots (positions ``1…k``) for the soft
    tokens, the prompt's own tokens truncated so the sequence still ends in EOS within ``L``."""
    length = int(tokenizer.model_max_length)
    if prefix_tokens > length - 2:
        raise ValueError(f"prefix_tokens={prefix_tokens} leaves no room in a {length}-token text encoder")
    rows = []
    for prompt in prompts:
        content = tokenizer(prompt, add_special_tokens=False).input_ids[: length - 2 - prefix_tokens]
        ids = [tokenizer.bos_token_id] + [placeholder_id] * prefix_tokens + content + [tokenizer.eos_token_id]
        rows.append(ids + [tokenizer.pad_token_id] * (length - len(ids)))
    return torch.tensor(rows, dtype=torch.long)


def encode_with_prefix(text_encoder, ids: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
    """Text-encoder output ``[N, L, d]`` with the token embeddings of positions ``1…k`` replaced by ``prefix``
    ``[N, k, d]`` — differentiable in ``prefix``.

    A forward hook on the input-embedding layer swaps the rows in, so the encoder's own forward (position
    embeddings, causal mask, final norm) runs unchanged.
    """
    k = prefix.shape[1]

    def swap_in_prefix(module, inputs, output):
        return torch.cat([output[:, :1], prefix.to(output.dtype), output[:, 1 + k:]], dim=1)

    handle = text_encoder.get_input_embeddings().register_forward_hook(swap_in_prefix)
    try:
        return text_encoder(ids.to(prefix.device))[0]
    finally:
        handle.remove()


def nearest_words(prefix: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
    """Index of the nearest word (cosine similarity) for every prefix embedding: ``[N, k]``."""
    sim = torch.nn.functional.normalize(prefix, dim=-1) @ torch.nn.functional.normalize(word_embeddings, dim=-1).T
    return sim.argmax(-1)


@contextmanager
def _frozen(*modules: torch.nn.Module) -> Iterator[None]:
    """No parameter of ``modules`` collects gradients inside the block; the flags are restored after it."""
    flags = [(p, p.requires_grad) for m in modules for p in m.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _word_token_ids(tokenizer, words: Sequence[str]) -> list[int]:
    ids = []
    for w in words:
        tokens = tokenizer(w, add_special_tokens=False).input_ids
        if len(tokens) != 1:
            raise ValueError(f"candidate word {w!r} is {len(tokens)} tokens; projection needs single-token words")
        ids.append(tokens[0])
    return ids


# --- the attack ---------------------------------------------------------------------------------------------------
def soft_prompt_attack(pipe, edit: Edit | None, prompts: Sequence[str], seeds: Sequence[int],
                       config: SoftPromptConfig = SoftPromptConfig(), settings: SamplerSettings = SamplerSettings(),
                       target_latents: torch.Tensor | None = None,
                       candidate_words: Sequence[str] | None = None) -> SoftPromptResult:
    """Optimise a soft prefix per prompt against the erased model ``pipe.unet + edit``.

    Args:
        edit: the erasure, switched on for the optimisation only (``None``: attack the original model).
        seeds: one per prompt: its target image's noise (when ``target_latents`` is not given), its prefix
            initialisation and its ``(t, ε)`` draws.
        target_latents: ``[N, C, h, w]`` latents of the concept; default: the **original** model's DDIM samples of
            the same prompts and seeds under ``settings``.
        candidate_words: the vocabulary for the prefix initialisation and the projection; default every
            single-token word of the tokenizer.
    """
    prompts, seeds = validate_prompts_and_seeds(prompts, seeds)
    tokenizer, text_encoder, unet = pipe.tokenizer, pipe.text_encoder, pipe.unet
    plain = TextEmbeddingCache(tokenizer, text_encoder)
    if config.steps == 0:
        embeddings = plain(prompts)
        return SoftPromptResult(list(prompts), list(prompts), embeddings,
                                embeddings.new_zeros(len(prompts), 0, embeddings.shape[-1]),
                                None if config.projection == "none" else list(prompts))
    words = list(candidate_words) if candidate_words is not None else vocabulary_words(tokenizer)
    if not words:
        raise ValueError("candidate_words is empty: the prefix needs words to start from and project to")
    word_ids = torch.tensor(_word_token_ids(tokenizer, words))
    device = unet.device
    if target_latents is None:
        target_latents, _ = sample_latents(pipe, prompts, seeds, settings, embeddings=plain)
    if target_latents.shape[0] != len(prompts):
        raise ValueError(f"got {target_latents.shape[0]} target latents for {len(prompts)} prompts")
    x0 = target_latents.to(device, unet.dtype)

    generators = [torch.Generator().manual_seed(s) for s in seeds]
    word_embeddings = text_encoder.get_input_embeddings().weight.detach()[word_ids.to(device)].float()
    start_words = torch.stack([torch.randint(len(words), (config.prefix_tokens,), generator=g) for g in generators])
    prefix = word_embeddings[start_words.to(device)].clone().requires_grad_(True)   # [N, k, d]
    ids = prefixed_token_ids(tokenizer, prompts, config.prefix_tokens, int(word_ids[0]))
    optimiser = torch.optim.AdamW([prefix], lr=config.lr, weight_decay=config.weight_decay)
    n, low, high = config.noise_samples, *config.timesteps
    losses = []

    def conditioned_on(prefix_now: torch.Tensor) -> torch.Tensor:
        if config.projection == "straight_through":
            hard = word_embeddings[nearest_words(prefix_now, word_embeddings)]
            prefix_now = prefix_now + (hard - prefix_now).detach()
        return encode_with_prefix(text_encoder, ids, prefix_now)

    context = edit.applied(unet) if edit is not None else nullcontext()
    with context, _frozen(unet, text_encoder), torch.enable_grad():
        for _ in range(config.steps):
            t = torch.stack([torch.randint(low, high, (n,), generator=g) for g in generators]).to(device)
            eps = torch.stack([torch.randn((n, *x0.shape[1:]), generator=g) for g in generators]).to(x0)
            x_t = q_sample(pipe.scheduler, x0.repeat_interleave(n, 0), t.flatten(), eps.flatten(0, 1))
            cond = conditioned_on(prefix).to(unet.dtype).repeat_interleave(n, 0)
            eps_pred = unet(x_t, t.flatten(), encoder_hidden_states=cond).sample
            per_prompt = (eps_pred.float() - eps.flatten(0, 1).float()).pow(2).mean(dim=(1, 2, 3)).view(-1, n).mean(1)
            optimiser.zero_grad(set_to_none=True)
            per_prompt.sum().backward()   # prompts are independent: each prefix gets its own prompt's gradient
            optimiser.step()
            losses.append(float(per_prompt.detach().mean()))

    with torch.no_grad():
        prefix = prefix.detach()
        projected = None
        if config.projection != "none":
            chosen = nearest_words(prefix, word_embeddings).cpu()
            projected = [" ".join([words[int(i)] for i in row] + [p]) for row, p in zip(chosen, prompts)]
        embeddings = conditioned_on(prefix).float()
    keys = [soft_prompt_key(p, e) for p, e in zip(prompts, embeddings)]
    return SoftPromptResult(list(prompts), keys, embeddings, prefix, projected, losses)
