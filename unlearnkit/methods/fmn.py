"""FMN — Forget-Me-Not (Zhang et al., CVPRW 2024): attention re-steering, ``L = ‖A[concept tokens]‖_F`` (FMN §3).

Per update: ``x_t`` forward-noised from concept images the frozen model drew once, one UNet call with every
cross-attention processor recording its probabilities, the loss on the concept's token positions (and, with
``use_pooler``, the end-of-text and padding positions); gradient-norm clip, AdamW. The textual-inversion stage
(``use_ti``) is not run: the concept's own words are the attended tokens.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch
from tqdm.auto import tqdm

from unlearnkit.core.edits import training_in_place
from unlearnkit.core.params import scope_names, select_parameters
from unlearnkit.core.validation import check_choice, check_flag, check_integer, check_number, check_seed
from unlearnkit.core.tokens import concept_token_masks, prompts_naming
from unlearnkit.methods.contract import ONE, SEVERAL_JOINT, Erasure, Method, joint_concept
from unlearnkit.methods.parts.attention import recording_cross_attention
from unlearnkit.methods.parts.losses.fmn import attention_resteering_loss
from unlearnkit.methods.parts.training_data import GeneratedLatents, generate_latents, noised, random_batch
from unlearnkit.sampling import SamplerSettings, check_sampler

__all__ = ["FMNConfig", "prepare", "fit", "METHODS"]


@dataclass(frozen=True)
class FMNConfig:
    """FMN's released settings: lr 2e-6, 35 steps, batch 1, AdamW (weight decay 1e-2), gradient-norm clip 1, the
    whole UNet, ``use_pooler``; 10 concept images drawn with ``sampler``."""

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
        check_number(self.lr, "lr", positive=True)
        for name in ("iterations", "batch_size", "concept_images"):
            check_integer(getattr(self, name), name, minimum=1)
        check_number(self.weight_decay, "weight_decay", minimum=0)
        check_number(self.max_grad_norm, "max_grad_norm", positive=True)
        check_flag(self.use_pooler, "use_pooler")
        check_choice(self.scope, "scope", scope_names())
        check_sampler(self.sampler)
        check_seed(self.seed)

    def as_dict(self) -> dict:
        return asdict(self)


def _texts_of(concepts, concept_text):
    """``concept_text`` or the concepts' names (several: each prompt re-steers the tokens of the name it contains)."""
    if concept_text is not None:
        return concept_text
    return concepts[0].name if len(concepts) == 1 else [c.name for c in concepts]


def _concept_prompts(tokenizer, concept, concept_text) -> list[str]:
    prompts = prompts_naming(tokenizer, concept.prompts, concept_text)
    if not prompts:
        raise ValueError(f"none of concept {concept.name!r}'s prompts contains {concept_text!r}; FMN needs "
                         f"prompts that name the concept")
    return prompts


def prepare(world, concepts, config: FMNConfig = FMNConfig(), concept_text=None) -> dict:
    """``{"concept_data": …}`` for :func:`fit`: images of the prompts that name the concept, from the world's current
    model."""
    concept = joint_concept(concepts, "FMN")
    prompts = _concept_prompts(world.pipe.tokenizer, concept, _texts_of(list(concepts), concept_text))
    return {"concept_data": generate_latents(world, prompts, config.concept_images, config.sampler, config.seed)}


def fit(world, concepts, config: FMNConfig = FMNConfig(), *, progress: bool = False,
        concept_data: GeneratedLatents | None = None, concept_text: str | Sequence[str] | None = None) -> Erasure:
    """Erase the concept by attention re-steering (several: once on their joint concept, each prompt re-steering
    the name it contains); the world's UNet is left unchanged.

    ``concept_text`` (default the concept's name, or the names) gives the attended tokens; only the prompts that
    contain it are used. ``concept_data``: images generated earlier (:func:`prepare`; their prompts must contain it).
    """
    concept = joint_concept(concepts, "FMN")
    concept_text = _texts_of(list(concepts), concept_text)
    tokenizer = world.pipe.tokenizer
    unet = world.pipe.unet
    if concept_data is not None:
        if not isinstance(concept_data, GeneratedLatents):
            raise TypeError(f"concept_data must be GeneratedLatents, got {type(concept_data).__name__}")
        concept_data.check_fits(unet, "concept latents")
        concept_token_masks(tokenizer, concept_data.prompts, concept_text)  # every prompt must name the concept
    else:
        prompts = _concept_prompts(tokenizer, concept, concept_text)
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
    return Erasure([edit], log)


METHODS = (
    Method("fmn", "FMN", "FMN: suppress the concept tokens' attention maps (Forget-Me-Not)", FMNConfig,
           frozenset({ONE, SEVERAL_JOINT}), fit, sampler_input=True, prepare=prepare),
)
