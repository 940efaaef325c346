"""FMN — Forget-Me-Not attention re-steering (Zhang et al., CVPRW 2024).

Algorithm (FMN §3, the release's ``train_attn.py``):
1. images of the concept (the release uses 10 real photos per concept; here generated once by the pretrained
   model, :func:`unlearnkit.methods.ablating.generate_latents`) with prompts that name the concept;
2. per update, ``t ~ U{0, …, T−1}``, ``x_t = q_sample(x₀, t, ε)``; one UNet call at ``(x_t, t, c)`` with every
   cross-attention (``attn2``) processor replaced by :class:`AttentionProbabilityRecorder`;
3. ``L = ‖A[concept tokens]‖_F`` over all cross-attention maps (:func:`unlearnkit.methods.parts.losses.fmn.attention_resteering_loss`)
   — no target image and no frozen model: the image simply stops attending to the concept;
4. backward, clip the gradient norm at 1, AdamW step.

FMN's optional first stage (textual inversion of the concept into new tokens, ``use_ti``) is not run: the concept's
own words are the attended tokens. The release's config targets SD 2.1-base; the SD v1.4 rows of ANT Table 1 and
SM Table 1 use the same recipe.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Iterator, Sequence

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor
from tqdm.auto import tqdm

from unlearnkit.core.concepts import Concept
from unlearnkit.core.edits import Edit
from unlearnkit.methods.parts.losses.fmn import attention_resteering_loss, concept_token_mask
from unlearnkit.core.params import cross_attention_modules, scope_names, select_parameters
from unlearnkit.sampling import SamplerSettings
from unlearnkit.core.edits import training_in_place
from unlearnkit.methods.ablating import GeneratedLatents, generate_latents, noised, random_batch

__all__ = ["FMNConfig", "AttentionProbabilityRecorder", "recording_cross_attention", "concept_token_masks", "fit"]


@dataclass(frozen=True)
class FMNConfig:
    """FMN hyperparameters from the released ``configs/attn.yaml``: lr 2e-6, 35 steps, batch 1, AdamW (weight decay
    1e-2), gradient-norm clip 1, ``only_optimize_ca: false`` (the whole UNet), ``use_pooler: true``; 10 images.

    ``sampler`` generates the concept images (50 steps, CFG 7.5).
    """

    lr: float = 2e-6
    iterations: int = 35
    batch_size: int = 1
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    use_pooler: bool = True
    scope: str = "unet"
    concept_images: int = 10
    sampler: SamplerSettings = field(default_factory=SamplerSettings)
    seed: int = 0

    def __post_init__(self):
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        for name in ("iterations", "batch_size", "concept_images"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value > 0):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0, got {self.max_grad_norm!r}")
        if self.scope not in scope_names():
            raise ValueError(f"unknown parameter scope {self.scope!r}; expected one of {scope_names()}")

    def as_dict(self) -> dict:
        return asdict(self)


class AttentionProbabilityRecorder(AttnProcessor):
    """diffusers' plain :class:`AttnProcessor` computation that also appends each call's attention probabilities
    ``softmax(QKᵀ/√d)`` ``[B·heads, Q, L]`` to ``store`` (with their autograd graph)."""

    def __init__(self, store: list[torch.Tensor]):
        super().__init__()
        self.store = store

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, *args, **kwargs):
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        spatial = hidden_states.ndim == 4
        if spatial:
            batch, channels, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channels, height * width).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        batch_size, context_length, _ = context.shape
        attention_mask = attn.prepare_attention_mask(attention_mask, context_length, batch_size)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        key = attn.head_to_batch_dim(attn.to_k(context))
        value = attn.head_to_batch_dim(attn.to_v(context))
        probs = attn.get_attention_scores(query, key, attention_mask)
        self.store.append(probs)
        out = attn.batch_to_head_dim(torch.bmm(probs, value))
        out = attn.to_out[1](attn.to_out[0](out))
        if spatial:
            out = out.transpose(-1, -2).reshape(batch, channels, height, width)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


@contextmanager
def recording_cross_attention(unet: torch.nn.Module) -> Iterator[list[torch.Tensor]]:
    """Within the block every ``attn2`` module records its attention probabilities into the yielded list (one
    entry per call, in call order); the original processors are put back afterwards."""
    modules = cross_attention_modules(unet)
    if not modules:
        raise ValueError("the UNet has no cross-attention (attn2) modules to record")
    originals = {name: module.processor for name, module in modules.items()}
    store: list[torch.Tensor] = []
    recorder = AttentionProbabilityRecorder(store)
    for module in modules.values():
        module.set_processor(recorder)
    try:
        yield store
    finally:
        for name, module in modules.items():
            module.set_processor(originals[name])


def _texts(concept_text: str | Sequence[str]) -> list[str]:
    texts = [concept_text] if isinstance(concept_text, str) else list(concept_text)
    if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
        raise ValueError(f"concept_text must be a non-empty string or a list of them, got {concept_text!r}")
    return texts


def concept_token_masks(tokenizer, prompts, concept_text: str | Sequence[str], use_pooler: bool = True) -> torch.Tensor:
    """Bool ``[N, L]`` concept positions of each prompt. ``concept_text`` is one text or several (several concepts
    erased together: each prompt's positions are those of the first text it contains); every prompt must contain
    one of them."""
    prompts, texts = list(prompts), _texts(concept_text)
    length = tokenizer.model_max_length
    encoded = tokenizer(prompts, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
    lengths = encoded.attention_mask.sum(-1).tolist()
    if len(texts) == 1:
        concept_ids = tokenizer(texts[0], add_special_tokens=False).input_ids
        return concept_token_mask(encoded.input_ids, concept_ids, lengths, use_pooler)
    text_ids = [tokenizer(text, add_special_tokens=False).input_ids for text in texts]
    rows, missing = [], []
    for b in range(len(prompts)):
        for concept_ids in text_ids:
            try:
                rows.append(concept_token_mask(encoded.input_ids[b:b + 1], concept_ids, lengths[b:b + 1], use_pooler)[0])
                break
            except ValueError:
                continue
        else:
            missing.append(prompts[b])
    if missing:
        raise ValueError(f"prompts {missing!r} contain none of the concept texts {texts!r}")
    return torch.stack(rows)


def prompts_naming(tokenizer, prompts, concept_text: str | Sequence[str]) -> list[str]:
    """The prompts whose tokens contain ``concept_text``'s tokens (or one of several texts')."""
    kept = []
    for prompt in prompts:
        try:
            concept_token_masks(tokenizer, [prompt], concept_text, use_pooler=False)
        except ValueError:
            continue
        kept.append(prompt)
    return kept


def fit(world, concept: Concept, config: FMNConfig = FMNConfig(), concept_data: GeneratedLatents | None = None,
        concept_text: str | Sequence[str] | None = None, progress: bool = True) -> tuple[Edit, list[dict]]:
    """Erase ``concept`` by attention re-steering; return the Edit and a per-iteration log.

    ``concept_text`` (default the concept's name) gives the attended tokens; only the concept's prompts that contain
    it are used. A list of texts erases several concepts in one run (:func:`unlearnkit.core.concepts.joint`: each prompt
    re-steers the tokens of the text it names). ``concept_data`` reuses images generated earlier (their prompts must contain it too). The world's
    UNet is left unchanged.
    """
    concept_text = concept.name if concept_text is None else concept_text
    _texts(concept_text)
    tokenizer = world.pipe.tokenizer
    unet = world.pipe.unet
    if concept_data is not None:
        if not isinstance(concept_data, GeneratedLatents):
            raise TypeError(f"concept_data must be GeneratedLatents, got {type(concept_data).__name__}")
        concept_data.check_fits(unet, "concept latents")
        concept_token_masks(tokenizer, concept_data.prompts, concept_text)  # every prompt must name the concept
    else:
        prompts = prompts_naming(tokenizer, concept.prompts, concept_text)
        if not prompts:
            raise ValueError(f"none of concept {concept.name!r}'s prompts contains {concept_text!r}; FMN needs "
                             f"prompts that name the concept")
    names = list(select_parameters(unet, config.scope))
    if concept_data is None:
        concept_data = generate_latents(world, prompts, config.concept_images, config.sampler, config.seed)
    token_masks = concept_token_masks(tokenizer, concept_data.prompts, concept_text, config.use_pooler)
    generator = torch.Generator().manual_seed(config.seed)
    x0_all = concept_data.latents.to(unet.device, unet.dtype)
    log = []
    with training_in_place(unet, names) as delta:
        params = list(delta.params.values())
        opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        for _ in tqdm(range(config.iterations), desc=f"FMN {concept.name}", disable=not progress):
            idx = random_batch(generator, len(concept_data), config.batch_size)
            x_t, t, _ = noised(world, x0_all[idx.to(x0_all.device)], generator)
            cond = world.embeddings([concept_data.prompts[i] for i in idx.tolist()]).to(unet.device, unet.dtype)
            with recording_cross_attention(unet) as attention_probs:
                unet(x_t, t, encoder_hidden_states=cond)
            loss = attention_resteering_loss(attention_probs, token_masks[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            opt.step()
            log.append({"loss": float(loss.detach()), "t_mean": float(t.float().mean())})
        edit = delta.to_edit(name=f"fmn:{concept.name}",
                             metadata={"method": "fmn", "concept": concept.name, "concept_text": concept_text,
                                       "config": config.as_dict()})
    return edit, log
