"""ESD — Erasing Concepts from Diffusion Models (Gandikota et al., ICCV 2023): negative guidance, ESD §4.

Per update: partially sample the model being edited to a random paper step ``s``, then
``L = ‖ε_θ(x_t, c) − sg[ε*(∅) − η(ε*(c) − ε*(∅))]‖²`` with ``ε*`` the model with the edit switched off.
ESD-x trains the cross-attention (scope ``xattn``), ESD-u everything else (``non_xattn``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from unlearnkit.core.diffusion import predict_eps
from unlearnkit.core.edits import training_in_place
from unlearnkit.core.params import scope_names, select_parameters
from unlearnkit.core.validation import check_choice, check_integer, check_number, check_seed
from unlearnkit.methods.contract import ONE, SEVERAL_JOINT, Erasure, Method, joint_concept
from unlearnkit.methods.parts.losses.esd import esd_loss
from unlearnkit.sampling import SamplerSettings, cfg_guidance, sample_latents

__all__ = ["ESDConfig", "ESD_X", "ESD_U", "fit", "METHODS"]


@dataclass(frozen=True)
class ESDConfig:
    """ESD's SD v1.4 settings: lr 1e-5, 1000 iterations, η (``negative_guidance``) 1, CFG 3 for the partial
    sampling (``start_guidance``), 50 DDIM steps, batch 1, Adam; ``scope`` any :func:`unlearnkit.core.params.scope_names`
    name (``xattn`` for ESD-x, ``non_xattn`` for ESD-u)."""

    lr: float = 1e-5
    iterations: int = 1000
    negative_guidance: float = 1.0
    scope: str = "xattn"
    start_guidance: float = 3.0
    num_inference_steps: int = 50
    batch_size: int = 1
    seed: int = 0

    def __post_init__(self):
        check_number(self.lr, "lr", positive=True)
        for name in ("iterations", "num_inference_steps", "batch_size"):
            check_integer(getattr(self, name), name, minimum=1)
        check_number(self.negative_guidance, "negative_guidance", positive=True)
        check_choice(self.scope, "scope", scope_names())
        check_number(self.start_guidance, "start_guidance", minimum=0)
        check_seed(self.seed)

    def as_dict(self) -> dict:
        return asdict(self)


ESD_X = ESDConfig(scope="xattn")
ESD_U = ESDConfig(scope="non_xattn")


def variant(config: ESDConfig) -> str:
    return {"xattn": "esd-x", "non_xattn": "esd-u"}.get(config.scope, f"esd[{config.scope}]")


def fit(world, concepts, config: ESDConfig = ESD_X, *, progress: bool = False, prompts=None) -> Erasure:
    """Erase the concept with ESD (several: once on their joint concept); the world's UNet is left unchanged.

    ``prompts``: the training prompts (default the concept's; the ESD paper trains on the name alone).
    """
    concept = joint_concept(concepts, "ESD")
    prompts = list(prompts if prompts is not None else concept.prompts)
    if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise ValueError(f"ESD needs non-empty training prompts, got {prompts!r}")
    unet = world.pipe.unet
    names = list(select_parameters(unet, config.scope))
    uncond = world.embeddings([""]).to(unet.device, unet.dtype)
    sampler = SamplerSettings(config.num_inference_steps, config.start_guidance)
    generator = torch.Generator().manual_seed(config.seed)
    b = config.batch_size
    log = []
    with training_in_place(unet, names) as delta:
        opt = torch.optim.Adam(list(delta.params.values()), lr=config.lr)
        for _ in tqdm(range(config.iterations), desc=f"{variant(config)} {concept.name}", disable=not progress):
            prompt = prompts[int(torch.randint(len(prompts), (1,), generator=generator))]
            step = int(torch.randint(1, config.num_inference_steps + 1, (1,), generator=generator))
            seed = int(torch.randint(2 ** 31 - 1, (1,), generator=generator))
            batch_prompts = [prompt] * b
            _, snaps = sample_latents(world.pipe, batch_prompts, [seed + i for i in range(b)], sampler,
                                      guidance=cfg_guidance(config.start_guidance), embeddings=world.embeddings,
                                      snapshot_steps=(step,), stop_at_last_snapshot=True)
            x_t, t = snaps[step]
            cond = world.embeddings(batch_prompts).to(unet.device, unet.dtype)
            with delta.frozen(), torch.no_grad():
                frozen_cond, frozen_uncond = predict_eps(unet, x_t, t, cond, uncond)
            eps_cond = predict_eps(unet, x_t, t, cond)
            loss = esd_loss(eps_cond, frozen_cond, frozen_uncond, config.negative_guidance)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            log.append({"loss": float(loss.detach()), "paper_step": step, "t": t})
        edit = delta.to_edit(name=f"{variant(config)}:{concept.name}",
                             metadata={"method": variant(config), "concept": concept.name,
                                       "config": config.as_dict()})
    return Erasure([edit], log)


METHODS = (
    Method("esd-x", "ESD-x", "ESD-x: negative guidance on cross-attention (ESD)", ESDConfig,
           frozenset({ONE, SEVERAL_JOINT}), fit, defaults={"scope": "xattn"}),
    Method("esd-u", "ESD-u", "ESD-u: negative guidance on the non-cross-attention layers (ESD)", ESDConfig,
           frozenset({ONE, SEVERAL_JOINT}), fit, defaults={"scope": "non_xattn"}),
)

