"""ESD — Erasing Concepts from Diffusion Models (Gandikota et al., ICCV 2023): ESD-x and ESD-u.

Algorithm per update (ESD §4):
1. draw a prompt of the concept, a fresh seed and a paper step ``s ~ U{1, …, N}`` (``N`` = 50 DDIM steps);
2. partially sample the model **being edited** with CFG 3 from that seed's noise until step ``s``
   (``sample_latents(..., snapshot_steps=(s,), stop_at_last_snapshot=True)``) — ``x_t`` and the DDIM timestep
   ``t`` it enters with (released ESD also samples the trained model; the "remaining steps" counting of the old
   CompVis sampler is not reproduced);
3. frozen predictions ``ε*(x_t, c)``, ``ε*(x_t, ∅)`` in one batched no-grad call (the edit switched off);
4. ``L = ‖ε_θ(x_t, c) − sg[ε*(∅) − η(ε*(c) − ε*(∅))]‖²`` (:func:`unlearnkit.methods.parts.losses.esd.esd_loss`); Adam step.

ESD-x trains every cross-attention parameter (scope ``xattn``), ESD-u everything else (scope ``non_xattn``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from unlearnkit.core.concepts import Concept
from unlearnkit.core.diffusion import predict_eps
from unlearnkit.core.edits import Edit
from unlearnkit.methods.parts.losses.esd import esd_loss
from unlearnkit.core.params import scope_names, select_parameters
from unlearnkit.sampling import SamplerSettings, cfg_guidance, sample_latents
from unlearnkit.core.edits import training_in_place

__all__ = ["ESDConfig", "ESD_X", "ESD_U", "fit"]


@dataclass(frozen=True)
class ESDConfig:
    """ESD hyperparameters; defaults are the SD v1.4 settings of the ESD paper and its original CompVis script
    ``train-esd.py``: lr 1e-5, 1000 iterations, η (``negative_guidance``) 1,
    ``start_guidance`` 3 (CFG of the partial sampling), 50 DDIM steps, batch 1, Adam.

    ``scope``: ``"xattn"`` for ESD-x, ``"non_xattn"`` for ESD-u (or any :data:`unlearnkit.core.params.SCOPES` name).
    """

    lr: float = 1e-5
    iterations: int = 1000
    negative_guidance: float = 1.0
    scope: str = "xattn"
    start_guidance: float = 3.0
    num_inference_steps: int = 50
    batch_size: int = 1
    seed: int = 0

    def __post_init__(self):
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        for name in ("iterations", "num_inference_steps", "batch_size"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value > 0):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not self.negative_guidance > 0:
            raise ValueError(f"negative_guidance (η) must be > 0, got {self.negative_guidance!r}")
        if self.scope not in scope_names():
            raise ValueError(f"unknown parameter scope {self.scope!r}; expected one of {scope_names()}")

    def as_dict(self) -> dict:
        return asdict(self)


ESD_X = ESDConfig(scope="xattn")
ESD_U = ESDConfig(scope="non_xattn")


def variant(config: ESDConfig) -> str:
    return {"xattn": "esd-x", "non_xattn": "esd-u"}.get(config.scope, f"esd[{config.scope}]")


def fit(world, concept: Concept, config: ESDConfig = ESD_X, prompts=None,
        progress: bool = True) -> tuple[Edit, list[dict]]:
    """Erase ``concept`` with ESD; return the Edit and a per-iteration log. The world's UNet is left unchanged.

    ``prompts``: the training prompts (default the concept's prompts; the ESD paper trains on the concept's name
    alone, e.g. ``prompts=["nudity"]``).
    """
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
    return edit, log

