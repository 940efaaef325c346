"""MACE-style mass erasure: one LoRA per concept, fused in closed form by ANT Eq. (7) (ANT §3.4, MACE stages 2–3).

Each concept's rank-``rank`` LoRA on every ``attn2.to_k`` / ``to_v`` is trained with ANT's trajectory-aware loss
Eq. (3) (``objective="ant"``) or MACE's attention loss (``objective="mace"``: ‖A[concept + end-of-text tokens]‖_F
at importance-sampled ``t``), the frozen model being the UNet with the adapter switched off. The fusion solves

    W* (Σ_i G_i + β G_p) = W (Σ_i G_i + β G_p) + s Σ_i ΔW_i G_i,    G = Σ_j e_j e_jᵀ over token embeddings,

one shared system LU-factored once and one solve per layer. Frozen trajectories come from one
:class:`TrajectoryBank` per concept (``trajectory_seeds`` runs; None: a fresh trajectory per update).
:func:`train_concept_loras` takes ``shard=(index, num_shards)`` and writes one diffusers LoRA file per concept,
so separate processes can split a concept list and a later call fuses whatever is on disk.
"""
from __future__ import annotations

import json
import re
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import torch
from tqdm.auto import tqdm

from unlearnkit.core.concepts import Concept
from unlearnkit.core.diffusion import predict_eps, q_sample, validate_paper_step
from unlearnkit.core.edits import Edit, restore_requires_grad
from unlearnkit.core.errors import BadTypeError, UnlearnkitError
from unlearnkit.core.params import cross_attention_modules
from unlearnkit.core.tokens import concept_start, concept_token_masks
from unlearnkit.core.validation import check_choice, check_flag, check_integer, check_number, check_seed
from unlearnkit.methods.ant import ANTConfig, ANTStep
from unlearnkit.methods.contract import ONE, SEVERAL_NATIVE, Erasure, Method, listed
from unlearnkit.methods.parts.attention import recording_cross_attention
from unlearnkit.methods.parts.closed_form import ClosedFormSolver
from unlearnkit.methods.parts.losses.trajectory import ABLATION_CONFIGS, STAGE_SPLITS, TrajectoryLossWeights
from unlearnkit.methods.parts.trajectory_bank import TrajectoryBank, sample_trajectory_bank

__all__ = [
    "OBJECTIVES", "TOKEN_MODES", "MACEConfig", "FusionConfig", "ConceptLoRA", "TrajectoryBank",
    "lora_target_modules", "lora_adapter", "build_trajectory_bank", "train_concept_lora", "train_concept_loras",
    "load_concept_loras", "concept_slug", "token_embeddings", "gram_matrix", "prior_gram", "save_prior_cache",
    "load_prior_cache", "fuse_loras", "prepare", "fit", "export_lora_file", "LORA_WEIGHT_NAME", "METHODS",
]

OBJECTIVES = ("ant", "mace")
TOKEN_MODES = ("all", "content", "concept", "last_word")
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
SIDECAR_NAME = "unlearnkit_lora.json"
ADAPTER_NAME = "unlearnkit_concept"


# --- configuration ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FusionConfig:
    """ANT Eq. (7). ``beta``: weight of the prior-preservation sum; ``lora_scale``: ``s`` in ``(W + s ΔW_i)``
    (MACE 1.0, the ANT release 4.3); ``lam``: an optional ``λ‖W* − W‖²`` (0 in Eq. 7; MACE's configs use 0 except
    objects, 1e3) that keeps the system invertible when the embeddings do not span the text space; ``tokens``:
    which positions of a concept's prompts enter ``G_i`` (:func:`token_embeddings`) — ``"all"`` (MACE/ANT: all
    77), ``"content"`` (start token to first end-of-text), ``"concept"`` (the name and every position after it) or
    ``"last_word"`` (the last word of the name and every position after it; ours, for names whose first words are
    shared with preserved concepts). ``preserve_others``: in :func:`fit`'s default prior, the weight (relative to
    the generic captions) of two prompts of every other concept of the erased concepts' kinds — Eq. (7)'s preserved
    concepts; 0 (MACE's release): captions only."""

    beta: float = 1.0
    lora_scale: float = 1.0
    lam: float = 0.0
    tokens: str = "all"
    preserve_others: float = 0.0

    def __post_init__(self):
        check_number(self.beta, "beta", minimum=0)
        check_number(self.lora_scale, "lora_scale", positive=True)
        check_number(self.lam, "lam", minimum=0)
        check_choice(self.tokens, "tokens", TOKEN_MODES)
        check_number(self.preserve_others, "preserve_others", minimum=0)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class MACEConfig:
    """Per-concept LoRA training and the fusion. Defaults: ANT Table 6's celebrity row (lr 5e-4, λ = (0.4, 0.5,
    0.2), t′ = 40) with ANT §4.1's 50 updates per LoRA, and MACE's rank-1 LoRA on ``attn2.to_k`` / ``to_v``.

    ``objective="mace"`` uses MACE's stage-2 attention loss instead; its paper values are lr 1e-4, 50 steps and
    8 training images per concept (``trajectory_seeds``). ``weights``: loss weights or an ANT Table 4 config
    letter; ``fusion``: Eq. (7)'s settings (:func:`fit`; :func:`train_concept_loras` ignores them).
    """

    objective: str = "ant"
    rank: int = 1
    lora_alpha: float | None = None     # None = rank (scale 1, MACE); the ANT release: rank 64, alpha 1
    lr: float = 5e-4
    iterations: int = 50
    weights: TrajectoryLossWeights = field(default_factory=lambda: ABLATION_CONFIGS["full"])
    t_prime: int = 40
    stage_split: str = "paper"
    num_inference_steps: int = 50
    trajectory_guidance: float = 7.5     # CFG of the frozen trajectories (ANT Multiple, MACE's images: 7.5)
    trajectory_seeds: int | None = 8     # frozen runs per concept in the bank; None = a fresh one per update (ANT)
    max_prompts: int | None = None       # concept prompts used (None: all; ANT Multiple trains on the bare name)
    importance_sampling: bool = True     # MACE objective: t ~ σ(0.05(t−200)) − σ(0.05(t−400)); False = uniform
    weight_decay: float = 0.0            # MACE: AdamW 0.01
    grad_clip: float | None = None       # MACE: 1.0
    seed: int = 0
    fusion: FusionConfig = field(default_factory=FusionConfig)

    def __post_init__(self):
        check_choice(self.objective, "objective", OBJECTIVES)
        check_integer(self.rank, "rank", minimum=1)
        check_number(self.lora_alpha, "lora_alpha", positive=True, allow_none=True)
        check_number(self.lr, "lr", positive=True)
        check_integer(self.iterations, "iterations", minimum=1)
        if isinstance(self.weights, str):
            check_choice(self.weights, "weights", sorted(ABLATION_CONFIGS))
            object.__setattr__(self, "weights", ABLATION_CONFIGS[self.weights])
        if not isinstance(self.weights, TrajectoryLossWeights):
            raise BadTypeError(f"weights={self.weights!r}: expected TrajectoryLossWeights or one of "
                               f"{sorted(ABLATION_CONFIGS)}")
        check_integer(self.num_inference_steps, "num_inference_steps", minimum=2)
        validate_paper_step(self.t_prime, self.num_inference_steps, "t_prime")
        if not 1 <= self.t_prime < self.num_inference_steps:
            raise UnlearnkitError(f"t_prime={self.t_prime!r} must leave both stages non-empty: "
                                  f"expected 1 <= t_prime < {self.num_inference_steps}")
        check_choice(self.stage_split, "stage_split", STAGE_SPLITS)
        check_number(self.trajectory_guidance, "trajectory_guidance")
        check_integer(self.trajectory_seeds, "trajectory_seeds", minimum=1, allow_none=True)
        if self.objective == "mace" and self.trajectory_seeds is None:
            raise UnlearnkitError("objective='mace' trains on the frozen model's images: give trajectory_seeds > 0")
        check_integer(self.max_prompts, "max_prompts", minimum=1, allow_none=True)
        check_flag(self.importance_sampling, "importance_sampling")
        check_number(self.weight_decay, "weight_decay", minimum=0)
        check_number(self.grad_clip, "grad_clip", positive=True, allow_none=True)
        check_seed(self.seed)
        if not isinstance(self.fusion, FusionConfig):
            raise BadTypeError(f"fusion={self.fusion!r}: expected a FusionConfig")

    @classmethod
    def from_hyperparameters(cls, fusion: dict | None = None, **hyperparameters) -> "MACEConfig":
        """From flat hyperparameters, ``fusion`` as a dict of :class:`FusionConfig` fields."""
        return cls(fusion=FusionConfig(**(fusion or {})), **hyperparameters)

    @property
    def scaling(self) -> float:
        """peft's LoRA scaling ``alpha / r``."""
        return (self.lora_alpha if self.lora_alpha is not None else self.rank) / self.rank

    def as_dict(self) -> dict:
        return asdict(self)


# --- one concept's LoRA ----------------------------------------------------------------------------------------------
@dataclass
class ConceptLoRA:
    """LoRA factors of one concept: ``ΔW_m = scaling · B_m A_m`` for every target module ``m``
    (``A`` ``[r, d_in]``, ``B`` ``[d_out, r]``), keyed by diffusers module name (``…attn2.to_k``)."""

    concept: str
    A: dict[str, torch.Tensor]
    B: dict[str, torch.Tensor]
    scaling: float = 1.0
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        if set(self.A) != set(self.B):
            raise ValueError(f"LoRA {self.concept!r}: A and B name different modules")
        for m in self.A:
            a, b = self.A[m], self.B[m]
            if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
                raise ValueError(f"LoRA {self.concept!r}, {m}: A {tuple(a.shape)} and B {tuple(b.shape)} do not "
                                 f"form a rank-r product B·A")

    @property
    def rank(self) -> int:
        return next(iter(self.A.values())).shape[0]

    @property
    def modules(self) -> list[str]:
        return list(self.A)

    def delta(self, module: str) -> torch.Tensor:
        """``ΔW = scaling · B A`` for ``module`` (float32)."""
        return self.scaling * (self.B[module].float() @ self.A[module].float())

    def to_edit(self, scale: float = 1.0) -> Edit:
        """The LoRA merged into dense deltas on ``<module>.weight``."""
        return Edit({f"{m}.weight": scale * self.delta(m) for m in self.A}, name=f"lora:{self.concept}",
                    metadata={"concept": self.concept, "scale": scale, **self.metadata})

    def state_dict(self) -> dict[str, torch.Tensor]:
        """diffusers/peft LoRA keys (``unet.<module>.lora_A.weight``), with ``scaling`` folded into ``B`` so the
        file loads with ``lora_alpha = r``."""
        out = {}
        for m in self.A:
            out[f"unet.{m}.lora_A.weight"] = self.A[m].float().contiguous()
            out[f"unet.{m}.lora_B.weight"] = (self.scaling * self.B[m].float()).contiguous()
        return out

    def save(self, folder: str | Path) -> Path:
        """Write ``folder/pytorch_lora_weights.safetensors`` in diffusers' LoRA format (written by
        ``StableDiffusionPipeline.save_lora_weights``; ``pipe.load_lora_weights(folder)`` applies it through peft)
        and ``folder/unlearnkit_lora.json`` with the concept and training config."""
        from diffusers import StableDiffusionPipeline

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k[len("unet."):]: v for k, v in self.state_dict().items()}
        lora_meta = {"r": self.rank, "lora_alpha": self.rank, "target_modules": sorted(self.A)}
        (folder / SIDECAR_NAME).write_text(json.dumps({"concept": self.concept, "metadata": self.metadata},
                                                      indent=2, default=str))
        tmp_name = LORA_WEIGHT_NAME + ".tmp"
        StableDiffusionPipeline.save_lora_weights(str(folder), unet_lora_layers=state, weight_name=tmp_name,
                                                  safe_serialization=True, unet_lora_adapter_metadata=lora_meta)
        (folder / tmp_name).replace(folder / LORA_WEIGHT_NAME)   # atomic: a concurrent reader sees no half file
        return folder / LORA_WEIGHT_NAME

    @classmethod
    def load(cls, folder: str | Path) -> "ConceptLoRA":
        from safetensors import safe_open

        path = Path(folder)
        path = path / LORA_WEIGHT_NAME if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(f"no LoRA file at {path}")
        A, B = {}, {}
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                m = re.fullmatch(r"(?:unet\.)?(.+)\.lora_([AB])\.weight", key)
                if m is None:
                    raise ValueError(f"{path}: unexpected key {key!r} in a LoRA file")
                (A if m.group(2) == "A" else B)[m.group(1)] = f.get_tensor(key)
        sidecar = path.parent / SIDECAR_NAME
        info = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
        return cls(info.get("concept", path.parent.name), A, B, 1.0, info.get("metadata", {}))


def lora_target_modules(unet) -> list[str]:
    """Module names of every cross-attention ``to_k`` and ``to_v`` (MACE's and ANT-fusion's targets)."""
    names = []
    for name in cross_attention_modules(unet):
        names += [f"{name}.to_k", f"{name}.to_v"]
    if not names:
        raise ValueError("the UNet has no cross-attention (attn2) modules to put a LoRA on")
    return names


def _has_peft_layers(module: torch.nn.Module) -> bool:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return any(isinstance(m, BaseTunerLayer) for m in module.modules())


class _AdapterSwitch:
    """``frozen()`` = the same UNet with the adapter switched off (what :class:`ANTStep` calls the frozen model)."""

    def __init__(self, unet):
        self.unet = unet

    @contextmanager
    def frozen(self) -> Iterator[None]:
        self.unet.disable_adapters()
        try:
            yield
        finally:
            self.unet.enable_adapters()


@contextmanager
def lora_adapter(unet, rank: int, lora_alpha: float | None = None, seed: int = 0) -> Iterator[dict]:
    """Inject a fresh peft LoRA on every ``attn2.to_k`` / ``to_v`` of ``unet`` (B = 0, so the model starts
    unchanged), yield ``{module name: peft LoRA layer}``, and afterwards unload it and restore every
    ``requires_grad`` flag — the base weights are the same tensors throughout, so they stay bit-identical."""
    from peft import LoraConfig

    if _has_peft_layers(unet):
        raise RuntimeError("the UNet already carries peft adapters; unload them before training a concept LoRA")
    targets = lora_target_modules(unet)
    requires_grad = {n: p.requires_grad for n, p in unet.named_parameters()}
    config = LoraConfig(r=rank, lora_alpha=lora_alpha if lora_alpha is not None else rank,
                        target_modules=targets, init_lora_weights=True, lora_dropout=0.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # peft's Kaiming init of A draws from the global generator
        unet.add_adapter(config, adapter_name=ADAPTER_NAME)
    try:
        layers = {name: unet.get_submodule(name) for name in targets}
        yield layers
    finally:
        unet.unload_lora()
        restore_requires_grad(unet, requires_grad)


def _read_lora(layers: dict, concept: str, scaling: float, metadata: dict) -> ConceptLoRA:
    A = {m: layer.lora_A[ADAPTER_NAME].weight.detach().cpu().clone() for m, layer in layers.items()}
    B = {m: layer.lora_B[ADAPTER_NAME].weight.detach().cpu().clone() for m, layer in layers.items()}
    return ConceptLoRA(concept, A, B, scaling, metadata)


# --- frozen trajectories ------------------------------------------------------------------------------------------
def _concept_prompts(concept: Concept, max_prompts: int | None) -> list[str]:
    return list(concept.prompts)[:max_prompts]


def build_trajectory_bank(world, concepts: Sequence[Concept], config: MACEConfig = MACEConfig(),
                          batch_size: int = 64) -> dict[str, TrajectoryBank]:
    """One batched frozen DDIM pass for all ``concepts`` × ``trajectory_seeds`` runs (run ``j`` uses prompt
    ``j mod #prompts`` and seed ``config.seed + j``), keeping every step. Call it on the original model (no
    adapter): this *is* the frozen model's trajectory field that Eq. (3) reads."""
    if config.trajectory_seeds is None:
        raise ValueError("trajectory_seeds is None: a bank needs a fixed number of runs per concept")
    runs = {}
    for c in concepts:
        prompts = _concept_prompts(c, config.max_prompts)
        runs[c.name] = [(prompts[j % len(prompts)], config.seed + j) for j in range(config.trajectory_seeds)]
    return sample_trajectory_bank(world, runs, config.num_inference_steps, config.trajectory_guidance, batch_size)


# --- the two objectives --------------------------------------------------------------------------------------------
def mace_timestep_density(num_train_timesteps: int = 1000) -> torch.Tensor:
    """MACE's concept-focal importance sampling: ``p(t) ∝ σ(0.05(t − 200)) − σ(0.05(t − 400))`` (mass ≈ [200, 400])."""
    t = torch.arange(num_train_timesteps, dtype=torch.float64)
    scale = num_train_timesteps / 1000
    p = torch.sigmoid(0.05 * (t / scale - 200)) - torch.sigmoid(0.05 * (t / scale - 400))
    return p / p.sum()


def _mace_attention_loss(world, bank: TrajectoryBank, concept: Concept, config: MACEConfig,
                         generator, density) -> dict[str, torch.Tensor]:
    """MACE stage 2: Σ_layers ‖A_l[concept + EOS tokens]‖_F at ``x_t = q_sample(x₀, t)``, ``x₀`` the frozen
    model's image of the concept (a bank run's final latent). No Grounded-SAM mask (the mini world has none)."""
    unet = world.pipe.unet
    run = int(torch.randint(len(bank.prompts), (1,), generator=generator))
    n_train = int(world.pipe.scheduler.config.num_train_timesteps)
    if config.importance_sampling:
        t = torch.multinomial(density, 1, generator=generator)
    else:
        t = torch.randint(n_train, (1,), generator=generator)
    x0 = bank.x0[run:run + 1].to(unet.device)
    noise = torch.randn(x0.shape, generator=generator).to(x0)
    x_t = q_sample(world.pipe.scheduler, x0, t.to(unet.device), noise)
    prompt = bank.prompts[run]
    # the concept's tokens and every end-of-text/padding position (MACE's use_pooler)
    mask = concept_token_masks(world.pipe.tokenizer, [prompt], concept.name, require=False)[0]
    with recording_cross_attention(unet) as probabilities:      # [B·heads, HW, L] per attn2 call
        predict_eps(unet, x_t, t.to(unet.device), world.embeddings([prompt]).to(unet.device))
    loss = torch.stack([torch.linalg.vector_norm(a[..., mask.to(a.device)]) for a in probabilities]).sum()
    return {"attention": loss, "loss": loss, "t": t.float()[0]}


# --- training ------------------------------------------------------------------------------------------------------
def train_concept_lora(world, concept: Concept, config: MACEConfig = MACEConfig(), bank: TrajectoryBank | None = None,
                       progress: bool = False) -> tuple[ConceptLoRA, list[dict]]:
    """Train one concept's LoRA (``config.objective``); return it and a per-update log. The world's UNet leaves
    bit-identical: the adapter is injected, trained, read out and unloaded."""
    unet = world.pipe.unet
    if config.trajectory_seeds is not None and bank is None:
        bank = build_trajectory_bank(world, [concept], config)[concept.name]
    generator = torch.Generator().manual_seed(config.seed)
    density = mace_timestep_density(int(world.pipe.scheduler.config.num_train_timesteps))
    log: list[dict] = []
    started = time.time()
    with lora_adapter(unet, config.rank, config.lora_alpha, config.seed) as layers:
        params = [p for layer in layers.values() for p in (*layer.lora_A[ADAPTER_NAME].parameters(),
                                                           *layer.lora_B[ADAPTER_NAME].parameters())]
        opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        if config.objective == "ant":
            ant_config = ANTConfig(lr=config.lr, iterations=config.iterations, weights=config.weights,
                                   t_prime=config.t_prime, stage_split=config.stage_split, scope="xattn_kv",
                                   num_inference_steps=config.num_inference_steps,
                                   trajectory_guidance=config.trajectory_guidance, seed=config.seed)
            step = ANTStep(world, _AdapterSwitch(unet), ant_config, bank)
            prompts = _concept_prompts(concept, config.max_prompts)
        for _ in tqdm(range(config.iterations), desc=f"LoRA {concept.name}", disable=not progress):
            if config.objective == "mace":
                terms = _mace_attention_loss(world, bank, concept, config, generator, density)
            elif bank is None:  # ANT's release: one frozen partial trajectory per update
                prompt = prompts[int(torch.randint(len(prompts), (1,), generator=generator))]
                seed = int(torch.randint(2 ** 31 - 1, (1,), generator=generator))
                terms = step.loss(prompt, seed, generator)
            else:
                terms = step.loss_on_one_run(generator)
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            if config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            opt.step()
            log.append({k: float(v.detach()) for k, v in terms.items()})
        meta = {"method": f"mace-lora:{config.objective}", "config": config.as_dict(),
                "train_seconds": round(time.time() - started, 3)}
        lora = _read_lora(layers, concept.name, config.scaling, meta)
    return lora, log


def concept_slug(name: str) -> str:
    """A file-system-safe folder name for a concept ("anna adams" → "anna_adams")."""
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    if not slug:
        raise ValueError(f"concept name {name!r} has no letters or digits to name a folder after")
    return slug


def _shard(shard) -> tuple[int, int]:
    if shard is None:
        from unlearnkit.sampling.cache import default_shard

        return default_shard()
    if (not isinstance(shard, (tuple, list)) or len(shard) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in shard)):
        raise ValueError(f"shard must be a pair of integers (index, num_shards), got {shard!r}")
    index, count = shard
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard={shard!r} is invalid: need num_shards >= 1 and 0 <= index < num_shards")
    return index, count


def train_concept_loras(world, concepts: Sequence[Concept], config: MACEConfig = MACEConfig(),
                        out_dir: str | Path | None = None, shard: tuple[int, int] | None = None,
                        banks: dict[str, TrajectoryBank] | None = None, progress: bool = False,
                        logs: dict[str, list[dict]] | None = None) -> dict[str, ConceptLoRA]:
    """Train the LoRAs of this process's share of ``concepts``: those at positions ``i`` with
    ``i % num_shards == index`` (``shard=None``: accelerate's process index and count, else ``(0, 1)``).

    With ``out_dir`` each LoRA is written to ``out_dir/<slug>/pytorch_lora_weights.safetensors`` and concepts
    whose file already exists are loaded instead of retrained (resumable; processes never write the same file).
    ``banks``: frozen trajectories by concept name (:func:`build_trajectory_bank`); ``logs``: a dict that receives
    each trained concept's per-update log. Returns this shard's LoRAs by concept name.
    """
    index, count = _shard(shard)
    concepts = list(concepts)
    names = [c.name for c in concepts]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate concepts in the list: {sorted({n for n in names if names.count(n) > 1})}")
    mine = [c for i, c in enumerate(concepts) if i % count == index]
    out: dict[str, ConceptLoRA] = {}
    todo = []
    for c in mine:
        path = Path(out_dir) / concept_slug(c.name) / LORA_WEIGHT_NAME if out_dir is not None else None
        if path is not None and path.is_file():
            out[c.name] = ConceptLoRA.load(path)
        else:
            todo.append(c)
    if todo and config.trajectory_seeds is not None:
        missing = [c for c in todo if banks is None or c.name not in banks]
        if missing:
            banks = {**(banks or {}), **build_trajectory_bank(world, missing, config)}
    for c in todo:
        lora, log = train_concept_lora(world, c, config, banks[c.name] if banks else None, progress)
        lora.metadata["final_loss"] = log[-1]["loss"]
        if logs is not None:
            logs[c.name] = log
        if out_dir is not None:
            lora.save(Path(out_dir) / concept_slug(c.name))
        out[c.name] = lora
    return {c.name: out[c.name] for c in mine}


def load_concept_loras(out_dir: str | Path, concepts: Sequence[Concept | str]) -> dict[str, ConceptLoRA]:
    """The LoRAs of ``concepts`` from ``out_dir`` (as written by :func:`train_concept_loras` on any shard)."""
    names = [c.name if isinstance(c, Concept) else c for c in concepts]
    missing = [n for n in names if not (Path(out_dir) / concept_slug(n) / LORA_WEIGHT_NAME).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} LoRAs are not in {out_dir} yet (e.g. {missing[:3]}); "
                                f"run train_concept_loras on every shard first")
    return {n: ConceptLoRA.load(Path(out_dir) / concept_slug(n)) for n in names}


# --- fusion (ANT Eq. 7) ----------------------------------------------------------------------------------------------
def token_embeddings(world, texts: Sequence[str], tokens: str = "all", concept: str | None = None) -> torch.Tensor:
    """Text-encoder outputs of ``texts`` as context rows ``[n, d]``: every position (``"all"``, MACE/ANT), the
    start token up to and including the first end-of-text (``"content"``), the concept's own tokens and every
    position after them (``"concept"``: the name, end-of-text and padding — the positions MACE's attention loss
    reads), or the last word of the name and every position after it (``"last_word"``, ours; for a one-word name
    it equals ``"concept"``). Prompts that do not contain the name keep their first end-of-text and the padding
    (truncated prompts: the last position)."""
    # In a causal text encoder the template tokens before the name are the same for every concept, so "concept"
    # leaves them to the prior term; by the same causality a first name ("anna" in "a portrait of anna adams") is
    # embedded as in a preserved "anna baker", and "last_word" drops it so the fusion is not asked both to move and
    # to keep one vector.
    if tokens not in TOKEN_MODES:
        raise ValueError(f"tokens must be one of {TOKEN_MODES}, got {tokens!r}")
    if tokens in ("concept", "last_word") and not concept:
        raise ValueError(f"tokens={tokens!r} needs the concept name")
    texts = list(texts)
    if not texts:
        raise ValueError("texts is empty: give at least one prompt")
    emb = world.embeddings(texts)                                      # [n, L, d]
    if tokens == "all":
        return emb.reshape(-1, emb.shape[-1])
    tok = world.pipe.tokenizer
    if tokens in ("concept", "last_word"):
        rows = []
        for k, text in enumerate(texts):
            first = concept_start(tok, text, concept, last_word=tokens == "last_word")
            if first is None:   # the name is not in this prompt: its end-of-text and padding
                first = min(len(tok(text, truncation=True, max_length=emb.shape[1]).input_ids) - 1, emb.shape[1] - 1)
            rows.append(emb[k, first:])
        return torch.cat(rows)
    ids = tok(texts, padding="max_length", max_length=emb.shape[1], truncation=True).input_ids
    rows = []
    for k, seq in enumerate(ids):
        end = seq.index(tok.eos_token_id, 1) + 1 if tok.eos_token_id in seq[1:] else len(seq)
        rows.append(emb[k, :end])
    return torch.cat(rows)


def gram_matrix(contexts: torch.Tensor) -> torch.Tensor:
    """``Σ_j e_j e_jᵀ`` in float64 (``[d, d]``) from context rows ``[n, d]``."""
    e = contexts.detach().to(torch.float64)
    return e.T @ e


def prior_gram(world, texts: Sequence[str], tokens: str = "all", batch_size: int = 256) -> torch.Tensor:
    """The prior-preservation Gram ``Σ_j e_jᵖ e_jᵖᵀ`` of ``texts`` (generic captions, preserved concepts) — MACE's
    COCO cache. Layer independent: the targets ``W e`` use each layer's own original ``W``."""
    texts = list(texts)
    tokens = "all" if tokens in ("concept", "last_word") else tokens   # the prior keeps every position of its texts
    gram = None
    for start in range(0, len(texts), batch_size):
        g = gram_matrix(token_embeddings(world, texts[start:start + batch_size], tokens))
        gram = g if gram is None else gram + g
    if gram is None:
        raise ValueError("no prior texts given")
    return gram


def save_prior_cache(path: str | Path, gram: torch.Tensor, count: int, source: str = "") -> Path:
    """Write a prior Gram as safetensors (key ``gram``, float64) with the number of texts and their source."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"gram": gram.detach().to(torch.float64).contiguous().cpu()}, str(path),
              metadata={"count": str(int(count)), "source": source})
    return path


def load_prior_cache(path: str | Path) -> torch.Tensor:
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prior cache {path} does not exist; build it with prior_gram() + save_prior_cache()")
    return load_file(str(path))["gram"]


def fuse_loras(unet, loras: Sequence[ConceptLoRA], concept_grams: dict[str, torch.Tensor], preserve_gram: torch.Tensor | None,
               config: FusionConfig = FusionConfig(), name: str | None = None) -> tuple[Edit, dict]:
    """ANT Eq. (7) for every LoRA target of ``unet``: one shared system ``Σ_i G_i + β G_p (+ λI)`` (LU-factored
    once), one solve per ``to_k`` / ``to_v`` weight. ``concept_grams[c]`` is ``G_c`` of concept ``c``'s prompts
    (:func:`gram_matrix` of :func:`token_embeddings`). Returns the dense Edit and timing info."""
    started = time.time()
    loras = list(loras)
    if not loras:
        raise ValueError("no LoRAs to fuse")
    missing = [l.concept for l in loras if l.concept not in concept_grams]
    if missing:
        raise KeyError(f"no embedding Gram for concepts {missing[:3]}: give concept_grams for every LoRA")
    modules = loras[0].modules
    for l in loras[1:]:
        if set(l.modules) != set(modules):
            raise ValueError(f"LoRA {l.concept!r} targets other modules than {loras[0].concept!r}")
    dim = concept_grams[loras[0].concept].shape[0]
    solver = ClosedFormSolver(config.lam, dim=dim)
    for l in loras:   # the W e part of the target (W + sΔW_i) e: a "mapped" Gram
        g = concept_grams[l.concept]
        solver.add_gram(g, mapped=g)
    if preserve_gram is not None and config.beta > 0:
        solver.add_gram(preserve_gram, mapped=preserve_gram, weight=config.beta)
    params = dict(unet.named_parameters())
    missing = [m for m in modules if f"{m}.weight" not in params]
    if missing:
        raise KeyError(f"the UNet has no weight for LoRA targets {missing[:3]}")
    # s Σ_i ΔW_i G_i = s Σ_i B_i (A_i G_i), streamed over concepts: one product with all layers' A_i stacked,
    # then one rank-r update per layer (memory: the per-layer sums only, never q Grams at once)
    mat1 = {m: torch.zeros(params[f"{m}.weight"].shape, dtype=torch.float64, device=solver.device) for m in modules}
    for l in loras:
        g = concept_grams[l.concept].to(solver.device, torch.float64)
        a_g = torch.cat([l.A[m].to(solver.device, torch.float64) for m in modules]) @ g     # [layers·r, d]
        r = l.rank
        for k, m in enumerate(modules):
            mat1[m].addmm_(l.B[m].to(solver.device, torch.float64), a_g[k * r:(k + 1) * r],
                           alpha=config.lora_scale * l.scaling)
    deltas = {}
    for m in modules:
        weight = params[f"{m}.weight"]
        fused = solver.solve(weight.detach(), mat1=mat1.pop(m))
        deltas[f"{m}.weight"] = (fused - weight.detach()).cpu()
    info = {"fusion_seconds": time.time() - started, "num_loras": len(loras), "num_layers": len(modules)}
    edit = Edit(deltas, name=name or f"mace-fusion:{len(loras)}",
                metadata={"method": "mace-fusion", "concepts": [l.concept for l in loras],
                          "fusion": config.as_dict(), **{k: v for k, v in info.items() if k != "fusion_seconds"}})
    return edit, info


def concept_grams(world, concepts: Sequence[Concept], tokens: str = "all",
                  max_prompts: int | None = None) -> dict[str, torch.Tensor]:
    """``G_c = Σ_j e_jᶠ e_jᶠᵀ`` over the token embeddings of each concept's prompts (MACE/ANT: 30 augmented
    prompts × 77 tokens; the mini world: the concept's templates)."""
    return {c.name: gram_matrix(token_embeddings(world, _concept_prompts(c, max_prompts), tokens, c.name))
            for c in concepts}


def default_prior_texts(world, n: int = 200) -> list[str]:
    """Generic captions of the world (COCO or its mini analogue) as the prior-preservation set."""
    return list(dict.fromkeys(world.coco_prompts(n).prompt))


def preserved_concept_texts(world, concepts: Sequence[Concept], per_concept: int = 2) -> list[str]:
    """The first ``per_concept`` prompts of every concept the world names of the erased ``concepts``' kinds, except
    the erased ones (the preserved concepts of ANT Eq. 7 when the caller names none)."""
    erased = {c.name for c in concepts}
    texts = []
    for kind in dict.fromkeys(c.kind for c in concepts):
        for name in world.concepts(kind):
            if name not in erased:
                texts += list(world.concept(name).prompts[:per_concept])
    return list(dict.fromkeys(texts))


def prepare(world, concepts, config: MACEConfig = MACEConfig()) -> dict:
    """``{"banks": …}`` for :func:`fit` (none without ``trajectory_seeds``), from the world's original model."""
    concepts = listed(concepts, "MACE")
    return {} if config.trajectory_seeds is None else {"banks": build_trajectory_bank(world, concepts, config)}


def fit(world, concepts, config: MACEConfig = MACEConfig(), *, progress: bool = False,
        preserve_texts: Sequence[str] | None = None, lora_dir: str | Path | None = None,
        banks: dict[str, TrajectoryBank] | None = None) -> Erasure:
    """Train one LoRA per concept and fuse them all (``config.fusion``, ANT Eq. 7) into one Edit.

    ``preserve_texts``: the prior set (default: the world's generic captions, plus ``fusion.preserve_others`` ×
    :func:`preserved_concept_texts`); ``lora_dir``: where the LoRAs are
    written and resumed from; ``banks``: frozen trajectories (:func:`prepare`). ``log``: every update of every LoRA
    (``concept`` names the LoRA); ``info``: fusion timing and each LoRA's training seconds.
    """
    concepts = listed(concepts, "MACE")
    fusion = config.fusion
    logs: dict[str, list[dict]] = {}
    loras = train_concept_loras(world, concepts, config, lora_dir, shard=(0, 1), banks=banks, progress=progress,
                                logs=logs)
    texts = list(preserve_texts) if preserve_texts is not None else default_prior_texts(world)
    grams = concept_grams(world, concepts, fusion.tokens, config.max_prompts)
    prior = prior_gram(world, texts, fusion.tokens) if texts else None
    others = preserved_concept_texts(world, concepts) if preserve_texts is None and fusion.preserve_others else []
    if others:
        other_gram = fusion.preserve_others * prior_gram(world, others, fusion.tokens)
        prior = other_gram if prior is None else prior + other_gram
    edit, info = fuse_loras(world.pipe.unet, list(loras.values()), grams, prior, fusion,
                            name=f"mace-{config.objective}:" + "+".join(c.name for c in concepts))
    edit.metadata["config"] = config.as_dict()
    log = [{"concept": name, **row} for name, rows in logs.items() for row in rows]
    return Erasure([edit], log, {**info, "train_seconds": {n: l.metadata.get("train_seconds")
                                                         for n, l in loras.items()}})


METHODS = (
    Method("mace", "MACE", "MACE / ANT-fusion: one LoRA per concept, closed-form fusion (ANT Eq. 7)", MACEConfig,
           frozenset({ONE, SEVERAL_NATIVE}), fit, build_config=MACEConfig.from_hyperparameters, prepare=prepare),
)


# --- export --------------------------------------------------------------------------------------------------------
def export_lora_file(lora: ConceptLoRA, folder: str | Path) -> Path:
    """A concept's LoRA as a diffusers LoRA folder: ``pipe.load_lora_weights(folder)`` (peft backend) applies it,
    ``pipe.fuse_lora()`` merges it. (A fused multi-concept :class:`Edit` exports with
    :func:`unlearnkit.export.export_edit`: ``"diffusers"`` = ``pipe.save_pretrained`` folder, ``"lora"`` = an exact
    SVD factorisation in the same LoRA format.)"""
    return lora.save(folder)
