"""SepME — Separable Multi-Concept Erasure (Zhao et al.): G-CiRs (SepME Alg. 1, Eq. 2–4) and decoupled increments
(SepME Alg. 2, Eq. 8–11).

**G-CiRs** fine-tunes every cross-attention parameter so that the edited concept representation
``ε(c_i) − ε(∅)`` becomes uncorrelated with the original's, stopping once the momentum statistic ``L_mom ≤ τ``.
**SepME** trains one increment per concept on every ``to_k`` / ``to_v``, ``ΔW_i = w_i (β S_{p,i}ᵀ)`` (Eq. 10), with
``S_{p,i}`` a null-space basis of ``A_i = [c_∅; c_j, j ≠ i]``: ``θ + Σ_{i∈S} ΔW_i`` erases exactly the subset ``S``
and removing ``ΔW_i`` restores concept ``i``. ``mode="known"`` is SepME₁ (all concepts known; ``joint``: one loss
over all increments), ``mode="iterative"`` SepME₂ (concept t protects only those before it; the first is erased by
G-CiRs). A concept's text is its bare ``name``: it is both the training prompt and its rows of ``A``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import torch
from torch.func import functional_call
from tqdm.auto import tqdm

from unlearnkit.core.concepts import Concept
from unlearnkit.core.diffusion import predict_eps
from unlearnkit.core.edits import Edit, training_in_place
from unlearnkit.core.params import scope_names, select_parameters
from unlearnkit.core.validation import check_choice, check_flag, check_integer, check_number, check_seed
from unlearnkit.methods.contract import ONE, SEVERAL_NATIVE, Erasure, Method, listed
from unlearnkit.methods.parts.losses.gcirs import (MomentumStop, balanced_correlation, concept_representation,
                                                   correlation_loss, weight_penalty)
from unlearnkit.methods.parts.nullspace import (DEFAULT_RANK_RTOL, check_protected_texts, constraint_matrix,
                                                decoupled_increment, particular_solutions)
from unlearnkit.methods.parts.training_data import GeneratedLatents, generate_latents, noised, random_batch
from unlearnkit.sampling import SamplerSettings, check_sampler

__all__ = ["SepMEConfig", "MODES", "concept_text", "other_concept_texts", "training_data", "fit_gcirs",
           "increment_edit", "fit_decoupled", "fit_increments", "prepare", "fit", "METHODS"]

MODES = ("known", "iterative")


@dataclass(frozen=True)
class SepMEConfig:
    """SepME / G-CiRs hyperparameters; defaults are the paper's (§4.1): Adam, at most 1000 iterations, lr 1e-2
    (SepME, on to_k/to_v) and 1e-6 (G-CiRs, on all cross-attention), β 1e-4 (Eq. 10), λ 3e-5 (Eq. 11),
    τ 0 and α 0.9 (Eq. 4), ``‖·‖_p`` with p = 1, batch = number of erased concepts (one ``x_t`` per concept).

    Ours (the paper leaves them open): ``train_images`` images of each concept generated once by the original
    model with ``sampler`` (None = the world's sampler) as the ``x₀`` pool; ``rank_rtol`` the relative rank
    tolerance of the null-space solve; ``min_iterations`` before early stopping may fire (the release uses 10);
    ``joint`` (SepME₁: one loss over all increments, Alg. 2, vs. one fit per concept); ``mode`` ``"known"``
    (SepME₁) or ``"iterative"`` (SepME₂) for the ``sepme`` method's fit; ``protect_others``: every increment's
    ``A`` also holds the bare names of every other concept of its kind the world knows (Eq. 8's null space
    widened to them: what a user erasing one concept, with no other increment, wants kept; off: the paper's ``A``;
    SepME₂'s first concept, erased by G-CiRs, has no ``A``).
    """

    lr: float = 1e-2
    gcirs_lr: float = 1e-6
    iterations: int = 1000
    beta: float = 1e-4
    lam: float = 3e-5
    tau: float = 0.0
    alpha: float = 0.9
    p: float = 1.0
    batch_per_concept: int = 1
    gcirs_scope: str = "xattn"
    rank_rtol: float = DEFAULT_RANK_RTOL
    min_iterations: int = 0
    joint: bool = True
    mode: str = "known"
    protect_others: bool = False
    train_images: int = 50
    sampler: SamplerSettings | None = None
    seed: int = 0

    def __post_init__(self):
        for name in ("lr", "gcirs_lr", "beta", "p"):
            check_number(getattr(self, name), name, positive=True)
        check_number(self.lam, "lam", minimum=0)
        check_number(self.tau, "tau")
        check_number(self.alpha, "alpha", minimum=0, below=1)
        for name in ("iterations", "batch_per_concept", "train_images"):
            check_integer(getattr(self, name), name, minimum=1)
        check_integer(self.min_iterations, "min_iterations", minimum=0)
        check_number(self.rank_rtol, "rank_rtol", above=0, below=1)
        check_choice(self.gcirs_scope, "gcirs_scope", scope_names())
        check_flag(self.joint, "joint")
        check_flag(self.protect_others, "protect_others")
        check_choice(self.mode, "mode", MODES)
        if self.sampler is not None:
            check_sampler(self.sampler)
        check_seed(self.seed)

    @classmethod
    def for_mini_world(cls, **overrides) -> "SepMEConfig":
        """The mini world's preset: 40 iterations, batch 2 per concept, 8 training images of 10 DDIM steps, SepME
        β 0.1 and lr 5e-2, G-CiRs lr 1e-4, one fit per concept (``joint=False``), ``min_iterations`` 10; λ, τ, α
        as in the paper."""
        # Why these values (measured on three mini styles and three mini objects):
        # * the erasure has to emerge in tens of Adam steps; Adam moves each coefficient of w by about lr per step
        #   and ΔW ∝ β w, so the weight-space step scales with lr·β: β 0.1, lr 5e-2 (5e-3 per step vs. the paper's
        #   1e-6) makes every increment reach L_mom ≤ 0 within 11–15 steps, its concept no longer detected; with
        #   β 3e-2 the styles needed 22–37 steps and two of three objects were still detected after 40;
        # * joint=False: a joint fit (one stop on Σ η_i L_cor) left "vangogh" detected after 60 steps while the
        #   other two had gone negative — with Adam the η_i rescaling cannot speed up a slow concept, and the
        #   shared stop waits for the sum;
        # * G-CiRs lr 1e-4: 1e-6 moves the from-scratch mini UNet by nothing in 40 steps, 3e-4 and 1e-3 stop
        #   within 15 steps having erased neighbouring styles too.
        preset = dict(lr=5e-2, gcirs_lr=1e-4, iterations=40, beta=0.1, batch_per_concept=2, train_images=8,
                      min_iterations=10, joint=False,
                      sampler=SamplerSettings(num_inference_steps=10, guidance_scale=5.0))
        preset.update(overrides)
        return cls(**preset)

    def as_dict(self) -> dict:
        out = asdict(self)
        out["sampler"] = None if self.sampler is None else self.sampler.as_dict()
        return out


# --- data ---------------------------------------------------------------------------------------------------------
def concept_text(concept: Concept) -> str:
    """The text SepME erases and protects for ``concept``: its bare name (the paper's artist / class names)."""
    return concept.name


def other_concept_texts(world, concepts: Sequence[Concept]) -> list[str]:
    """The bare names of every concept the world knows of ``concepts``' kinds, except theirs (``protect_others``)."""
    erased = {concept_text(c) for c in concepts}
    names = [n for kind in dict.fromkeys(c.kind for c in concepts) for n in world.concepts(kind)]
    return [n for n in dict.fromkeys(names) if n not in erased]


def _as_concepts(world, concepts) -> list[Concept]:
    if isinstance(concepts, (str, Concept)):
        concepts = [concepts]
    out = [world.concept(c) if isinstance(c, str) else c for c in concepts]
    if not out:
        raise ValueError("no concepts given: SepME erases at least one concept")
    for c in out:
        if not isinstance(c, Concept):
            raise TypeError(f"concepts must be names or Concept objects, got {type(c).__name__}")
    names = [concept_text(c) for c in out]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate concepts {duplicates!r}: every erased concept gets one increment, list each once")
    if "" in names:
        raise ValueError("the empty prompt c_∅ cannot be erased: every increment must leave it unchanged")
    return out


def training_data(world, concepts: Sequence[Concept], config: SepMEConfig) -> dict[str, GeneratedLatents]:
    """``x₀`` pools: ``config.train_images`` images per concept from the original model, prompted by its name
    (SepME §4.2: the images that trained the style classifier, i.e. generated from the artist name)."""
    settings = config.sampler or world.sampler
    return {concept_text(c): generate_latents(world, [concept_text(c)], config.train_images, settings,
                                              seed=config.seed + 1000 * k)
            for k, c in enumerate(concepts)}


def _check_data(data: dict, concepts: Sequence[Concept], unet) -> None:
    missing = [concept_text(c) for c in concepts if concept_text(c) not in data]
    if missing:
        raise ValueError(f"training data lacks images for {missing!r}")
    for name in data:
        if not isinstance(data[name], GeneratedLatents):
            raise TypeError(f"training data for {name!r} must be GeneratedLatents, got {type(data[name]).__name__}")
        data[name].check_fits(unet, f"latents of {name!r}")


def _draw_batch(world, concepts, data, config, generator, device, dtype):
    """One ``x_t`` batch: ``batch_per_concept`` samples per concept, concatenated in concept order."""
    xs, ts = [], []
    for c in concepts:
        pool = data[concept_text(c)].latents
        idx = random_batch(generator, len(pool), config.batch_per_concept)
        x_t, t, _ = noised(world, pool[idx].to(device, dtype), generator)
        xs.append(x_t)
        ts.append(t)
    return torch.cat(xs), torch.cat(ts)


def _texts_embeddings(world, concepts, per, device, dtype):
    cond = world.embeddings([concept_text(c) for c in concepts for _ in range(per)]).to(device, dtype)
    empty = world.embeddings.empty.to(device, dtype)
    return cond, empty


# --- G-CiRs ---------------------------------------------------------------------------------------------------------
def _correlation_step(step, concepts, correlations, penalty, stopper, config, opt, log: list) -> bool:
    """Alg. 1/2 inner step shared by G-CiRs and SepME: balance the per-concept L_cor (η_i), update L_mom, log, and
    — unless L_mom ≤ τ (early stop, returned True) — take one Adam step on L + λ‖Δθ‖_p."""
    data_term = balanced_correlation(correlations)
    stop = stopper.update(float(data_term.detach()))
    log.append({"step": step, "L_mom": stopper.value, "data": float(data_term.detach()),
                "penalty": float(penalty.detach()), "stopped": stop,
                **{f"L_cor[{concept_text(c)}]": float(v) for c, v in zip(concepts, correlations.detach())}})
    if stop:
        return True
    loss = data_term + config.lam * penalty
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return False


def fit_gcirs(world, concepts, config: SepMEConfig = SepMEConfig(), data: dict | None = None,
              progress: bool = False) -> tuple[Edit, list[dict]]:
    """G-CiRs (SepME Alg. 1): one dense Edit on ``config.gcirs_scope`` erasing all ``concepts`` together.

    Returns the Edit and a per-step log (``L_cor`` per concept, ``L_mom``, penalty, whether it stopped early).
    The world's UNet is left unchanged.
    """
    concepts = _as_concepts(world, concepts)
    unet = world.pipe.unet
    names = list(select_parameters(unet, config.gcirs_scope))
    data = training_data(world, concepts, config) if data is None else data
    _check_data(data, concepts, unet)
    device, dtype = unet.device, unet.dtype
    per, n = config.batch_per_concept, len(concepts)
    cond, empty = _texts_embeddings(world, concepts, per, device, dtype)
    generator = torch.Generator().manual_seed(config.seed)
    stopper = MomentumStop(config.alpha, config.tau, config.min_iterations)
    log: list[dict] = []
    label = "+".join(concept_text(c) for c in concepts)
    with training_in_place(unet, names) as delta:
        opt = torch.optim.Adam(list(delta.params.values()), lr=config.gcirs_lr)
        for step in tqdm(range(config.iterations), desc=f"G-CiRs {label}", disable=not progress):
            x_t, t = _draw_batch(world, concepts, data, config, generator, device, dtype)
            with delta.frozen(), torch.no_grad():
                frozen = concept_representation(*predict_eps(unet, x_t, t, cond, empty))
            edited = concept_representation(*predict_eps(unet, x_t, t, cond, empty))
            correlations = torch.stack([correlation_loss(frozen[i * per:(i + 1) * per], edited[i * per:(i + 1) * per])
                                        for i in range(n)])
            penalty = weight_penalty([p - delta.original[k] for k, p in delta.params.items()], config.p)
            if _correlation_step(step, concepts, correlations, penalty, stopper, config, opt, log):
                break
        edit = delta.to_edit(name=f"gcirs:{label}",
                             metadata={"method": "gcirs", "concepts": [concept_text(c) for c in concepts],
                                       "steps": len(log), "stopped_early": bool(log and log[-1]["stopped"]),
                                       "config": config.as_dict()})
    return edit, log


# --- weight decoupling ------------------------------------------------------------------------------------------------
def increment_edit(unet, basis: torch.Tensor, weights: dict[str, torch.Tensor], beta: float,
                   name: str = "sepme", metadata: dict | None = None) -> Edit:
    """The Edit ``{to_k/to_v weight: w · (β S_pᵀ)}`` (Eq. 10) for combination weights ``weights[name] = w``."""
    params = select_parameters(unet, "xattn_kv")
    unknown = [k for k in weights if k not in params]
    if unknown:
        raise KeyError(f"not attn2 to_k/to_v weights: {unknown[:3]}")
    with torch.no_grad():
        deltas = {k: decoupled_increment(w.detach().float(), basis, beta).to(params[k].dtype).cpu()
                  for k, w in weights.items()}
    return Edit(deltas, name=name, metadata=metadata or {})


def _null_space_basis(world, erased: Concept, protected: Sequence[str], config: SepMEConfig) -> torch.Tensor:
    texts = ["", *check_protected_texts(concept_text(erased), protected)]
    return particular_solutions(constraint_matrix(world.embeddings, texts), config.rank_rtol)


def fit_decoupled(world, concepts, protected: dict[str, Sequence[str]], config: SepMEConfig = SepMEConfig(),
                  data: dict | None = None, progress: bool = False) -> tuple[dict[str, Edit], list[dict]]:
    """Decoupled increments (SepME Eq. 11 / Alg. 2 lines 13–29) for ``concepts``, optimised together.

    ``protected[name]``: the texts (besides ``c_∅``) whose token rows form ``A`` for that concept's increment.
    Returns one Edit per concept (keys ``attn2.to_k/to_v.weight``) and the per-step log.
    """
    concepts = _as_concepts(world, concepts)
    unet = world.pipe.unet
    kv_names = list(select_parameters(unet, "xattn_kv"))
    if not kv_names:
        raise ValueError("the UNet has no cross-attention to_k/to_v weights to decouple")
    missing = [concept_text(c) for c in concepts if concept_text(c) not in protected]
    if missing:
        raise ValueError(f"no protected texts given for {missing!r}")
    bases = {concept_text(c): _null_space_basis(world, c, protected[concept_text(c)], config) for c in concepts}
    data = training_data(world, concepts, config) if data is None else data
    _check_data(data, concepts, unet)
    device, dtype = unet.device, unet.dtype
    params = select_parameters(unet, "xattn_kv")
    bases_dev = {k: (config.beta * b.T).to(device, dtype) for k, b in bases.items()}   # β S_pᵀ  [k, d_in]
    weights = {concept_text(c): {k: torch.zeros(params[k].shape[0], bases[concept_text(c)].shape[1], device=device,
                                                dtype=dtype, requires_grad=True) for k in kv_names}
               for c in concepts}
    per, n = config.batch_per_concept, len(concepts)
    cond, empty = _texts_embeddings(world, concepts, per, device, dtype)
    generator = torch.Generator().manual_seed(config.seed)
    stopper = MomentumStop(config.alpha, config.tau, config.min_iterations)
    opt = torch.optim.Adam([w for ws in weights.values() for w in ws.values()], lr=config.lr)
    log: list[dict] = []
    requires_grad = {k: p.requires_grad for k, p in unet.named_parameters()}
    unet.requires_grad_(False)
    try:
        for step in tqdm(range(config.iterations), desc="SepME " + "+".join(weights), disable=not progress):
            x_t, t = _draw_batch(world, concepts, data, config, generator, device, dtype)
            with torch.no_grad():
                eps_c, eps_empty = predict_eps(unet, x_t, t, cond, empty)
                frozen = concept_representation(eps_c, eps_empty)
            correlations = []
            for i, c in enumerate(concepts):
                rows = slice(i * per, (i + 1) * per)
                overrides = {k: params[k] + w @ bases_dev[concept_text(c)] for k, w in weights[concept_text(c)].items()}
                eps_edit = functional_call(unet, overrides, (x_t[rows], t[rows]),
                                           {"encoder_hidden_states": cond[rows]}).sample
                # ΔW_i c_∅ = 0, so the edited ε'(∅) is the frozen ε(∅) (Eq. 6): no second UNet pass.
                correlations.append(correlation_loss(frozen[rows], concept_representation(eps_edit, eps_empty[rows])))
            correlations = torch.stack(correlations)
            penalty = weight_penalty([w for ws in weights.values() for w in ws.values()], config.p)
            if _correlation_step(step, concepts, correlations, penalty, stopper, config, opt, log):
                break
    finally:
        for k, p in unet.named_parameters():
            p.requires_grad_(requires_grad[k])
    edits = {}
    for c in concepts:
        name = concept_text(c)
        edits[name] = increment_edit(
            unet, bases[name], weights[name], config.beta, name=f"sepme:{name}",
            metadata={"method": "sepme", "concept": name, "protected": ["", *protected[name]],
                      "null_space_dim": int(bases[name].shape[1]), "steps": len(log),
                      "stopped_early": bool(log and log[-1]["stopped"]), "config": config.as_dict()})
    return edits, log


def fit_increments(world, concepts, config: SepMEConfig = SepMEConfig(), mode: str | None = None,
                   data: dict | None = None, progress: bool = False,
                   return_logs: bool = False):
    """One Edit per concept such that ``θ + Σ_{i∈S} Δθ_i`` erases exactly ``S`` (SepME §3.2, §4.2.2).

    ``mode`` (default ``config.mode``): ``"known"`` is SepME₁ (all concepts known; ``config.joint`` picks one joint fit or one fit per concept),
    ``mode="iterative"`` is SepME₂ (concept t protects only ``c_∅`` and the concepts before it; the first one is
    erased by G-CiRs on ``config.gcirs_scope``). Returns ``{name: Edit}`` in concept order (and the logs
    ``{name: log}`` with ``return_logs=True``).
    """
    mode = config.mode if mode is None else mode
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    concepts = _as_concepts(world, concepts)
    names = [concept_text(c) for c in concepts]
    data = training_data(world, concepts, config) if data is None else data
    _check_data(data, concepts, world.pipe.unet)
    edits: dict[str, Edit] = {}
    logs: dict[str, list[dict]] = {}
    extra = other_concept_texts(world, concepts) if config.protect_others else []
    if mode == "known":
        protected = {n: [m for m in names if m != n] + extra for n in names}
        if config.joint:
            edits, log = fit_decoupled(world, concepts, protected, config, data, progress)
            logs = {n: log for n in names}
        else:
            for c in concepts:
                one, log = fit_decoupled(world, [c], protected, config, data, progress)
                edits.update(one)
                logs[concept_text(c)] = log
    else:
        first, rest = concepts[0], concepts[1:]
        edits[names[0]], logs[names[0]] = fit_gcirs(world, [first], config, data, progress)
        for t, c in enumerate(rest, start=1):
            one, log = fit_decoupled(world, [c], {concept_text(c): names[:t] + extra}, config, data, progress)
            edits.update(one)
            logs[concept_text(c)] = log
    return (edits, logs) if return_logs else edits


def prepare(world, concepts, config: SepMEConfig = SepMEConfig()) -> dict:
    """``{"data": …}`` for :func:`fit` and :func:`fit_gcirs_erasure`: the ``x₀`` pools (:func:`training_data`)."""
    return {"data": training_data(world, _as_concepts(world, listed(concepts, "SepME")), config)}


def fit(world, concepts, config: SepMEConfig = SepMEConfig(), *, progress: bool = False,
        data: dict | None = None) -> Erasure:
    """SepME in ``config.mode``: one Edit per concept (in concept order), each removable on its own.

    ``data``: the ``x₀`` pools (:func:`prepare`). ``log``: the concept's steps (several: each row names its
    ``concept``; a joint SepME₁ fit logs its shared steps once).
    """
    concepts = _as_concepts(world, listed(concepts, "SepME"))
    edits, logs = fit_increments(world, concepts, config, data=data, progress=progress, return_logs=True)
    names = list(edits)
    if len(names) == 1:
        log = list(logs[names[0]])
    elif config.mode == "known" and config.joint:
        log = list(logs[names[0]])
    else:
        log = [{"concept": name, **row} for name in names for row in logs[name]]
    return Erasure([edits[name] for name in names], log)


def fit_gcirs_erasure(world, concepts, config: SepMEConfig = SepMEConfig(), *, progress: bool = False,
                      data: dict | None = None) -> Erasure:
    """G-CiRs (Alg. 1) on all ``concepts`` together: one dense Edit on ``config.gcirs_scope``.

    ``data``: the ``x₀`` pools (:func:`prepare`).
    """
    edit, log = fit_gcirs(world, listed(concepts, "G-CiRs"), config, data, progress)
    return Erasure([edit], log)


METHODS = (
    Method("gcirs", "G-CiRs", "G-CiRs: decorrelate the concept representation, momentum stop (SepME Eq. 2-4)",
           SepMEConfig, frozenset({ONE, SEVERAL_NATIVE}), fit_gcirs_erasure, prepare=prepare),
    Method("sepme", "SepME",
           "SepME: one to_k/to_v increment per concept in the null space of the others (SepME Alg. 2)", SepMEConfig, frozenset({ONE, SEVERAL_NATIVE}), fit, prepare=prepare),
)
