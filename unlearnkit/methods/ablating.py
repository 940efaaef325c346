"""AC — Ablating Concepts (Kumari et al., ICCV 2023), model-based variant: map the concept onto its anchor (AC §3).

Per update: ``x_t`` forward-noised from anchor images the frozen model drew once, and
``L = ‖ε_θ(x_t, c, t) − sg[ε*(x_t, c*, t)]‖²`` with ``c`` the concept caption paired with the anchor caption ``c*``.
A Concept whose ``prompts`` and ``anchor_prompts`` have the same length is read as such pairs; otherwise the concept
caption is drawn at random.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm

from unlearnkit.core.concepts import Concept
from unlearnkit.core.diffusion import predict_eps
from unlearnkit.core.edits import training_in_place
from unlearnkit.core.params import scope_names, select_parameters
from unlearnkit.core.validation import check_choice, check_flag, check_integer, check_number, check_seed
from unlearnkit.methods.contract import ONE, SEVERAL_JOINT, Erasure, Method, joint_concept
from unlearnkit.methods.parts.losses.ablation import anchor_mapping_loss
from unlearnkit.methods.parts.training_data import GeneratedLatents, generate_latents, noised, random_batch
from unlearnkit.sampling import SamplerSettings, check_sampler

__all__ = ["ACConfig", "anchor_prompts_of", "concept_prompt_for", "prepare", "fit", "METHODS"]


@dataclass(frozen=True)
class ACConfig:
    """AC's released SD v1.4 recipe: base lr 2e-6 scaled by the batch (``scale_lr``: 1.6e-5 at batch 8), 100 steps,
    AdamW, cross-attention K/V (``xattn_kv``), 200 anchor images drawn with ``sampler``."""

    lr: float = 2e-6
    iterations: int = 100
    batch_size: int = 8
    scale_lr: bool = True
    weight_decay: float = 1e-2
    scope: str = "xattn_kv"
    anchor_images: int = 200
    sampler: SamplerSettings = field(default_factory=SamplerSettings)
    seed: int = 0

    def __post_init__(self):
        check_number(self.lr, "lr", positive=True)
        for name in ("iterations", "batch_size", "anchor_images"):
            check_integer(getattr(self, name), name, minimum=1)
        check_flag(self.scale_lr, "scale_lr")
        check_number(self.weight_decay, "weight_decay", minimum=0)
        check_choice(self.scope, "scope", scope_names())
        check_sampler(self.sampler)
        check_seed(self.seed)

    @property
    def effective_lr(self) -> float:
        return self.lr * self.batch_size if self.scale_lr else self.lr

    def as_dict(self) -> dict:
        return asdict(self)


def anchor_prompts_of(concept: Concept) -> tuple[str, ...]:
    """The concept's anchor prompts, or its anchor alone; AC needs a non-empty anchor concept."""
    prompts = tuple(concept.anchor_prompts) or ((concept.anchor,) if concept.anchor.strip() else ())
    if not prompts:
        raise ValueError(f"concept {concept.name!r} has no anchor: AC maps a concept onto an anchor concept, "
                         f"give Concept(anchor=…) or anchor_prompts")
    return prompts


def concept_prompt_for(concept: Concept, anchor_prompts: tuple[str, ...], anchor_prompt: str,
                       generator: torch.Generator) -> str:
    """The concept caption paired with ``anchor_prompt`` (same index when the prompt lists pair up; a random one of
    them when the anchor prompt is paired with several captions, as in a :func:`~unlearnkit.core.concepts.joint` concept
    whose concepts share an anchor), else a random caption."""
    prompts = concept.prompts
    if len(prompts) == len(anchor_prompts) and anchor_prompt in anchor_prompts:
        paired = [p for p, a in zip(prompts, anchor_prompts) if a == anchor_prompt]
        if len(set(paired)) == 1:
            return paired[0]
        prompts = tuple(paired)
    return prompts[int(torch.randint(len(prompts), (1,), generator=generator))]


def prepare(world, concepts, config: ACConfig = ACConfig()) -> dict:
    """``{"anchor_data": …}`` for :func:`fit`: ``config.anchor_images`` images of the anchor prompts from the world's
    current model."""
    concept = joint_concept(concepts, "AC")
    return {"anchor_data": generate_latents(world, anchor_prompts_of(concept), config.anchor_images, config.sampler,
                                            config.seed)}


def fit(world, concepts, config: ACConfig = ACConfig(), *, progress: bool = False,
        anchor_data: GeneratedLatents | None = None) -> Erasure:
    """Ablate the concept onto its anchor (several: once on their joint concept); the world's UNet is left unchanged.

    ``anchor_data``: anchor images to reuse (from :func:`prepare`); drawn with ``config.sampler`` when omitted.
    """
    concept = joint_concept(concepts, "AC")
    anchor_prompts = anchor_prompts_of(concept)
    unet = world.pipe.unet
    names = list(select_parameters(unet, config.scope))
    if anchor_data is not None:
        if not isinstance(anchor_data, GeneratedLatents):
            raise TypeError(f"anchor_data must be GeneratedLatents, got {type(anchor_data).__name__}")
        anchor_data.check_fits(unet, "anchor latents")
    else:
        anchor_data = generate_latents(world, anchor_prompts, config.anchor_images, config.sampler, config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    x0_all = anchor_data.latents.to(unet.device, unet.dtype)
    log = []
    with training_in_place(unet, names) as delta:
        opt = torch.optim.AdamW(list(delta.params.values()), lr=config.effective_lr, weight_decay=config.weight_decay)
        for _ in tqdm(range(config.iterations), desc=f"AC {concept.name}", disable=not progress):
            idx = random_batch(generator, len(anchor_data), config.batch_size)
            anchor_batch = [anchor_data.prompts[i] for i in idx.tolist()]
            concept_batch = [concept_prompt_for(concept, anchor_prompts, p, generator) for p in anchor_batch]
            x_t, t, _ = noised(world, x0_all[idx.to(x0_all.device)], generator)
            with delta.frozen(), torch.no_grad():
                eps_anchor = predict_eps(unet, x_t, t, world.embeddings(anchor_batch).to(unet.device, unet.dtype))
            eps_concept = predict_eps(unet, x_t, t, world.embeddings(concept_batch).to(unet.device, unet.dtype))
            loss = anchor_mapping_loss(eps_concept, eps_anchor)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            log.append({"loss": float(loss.detach()), "t_mean": float(t.float().mean())})
        edit = delta.to_edit(name=f"ac:{concept.name}",
                             metadata={"method": "ac", "concept": concept.name, "config": config.as_dict(),
                                       "anchor_prompts": list(anchor_prompts)})
    return Erasure([edit], log)


METHODS = (
    Method("ac", "AC", "AC: map the concept onto its anchor's predictions (Ablating Concepts)", ACConfig,
           frozenset({ONE, SEVERAL_JOINT}), fit, sampler_input=True, prepare=prepare),
)
