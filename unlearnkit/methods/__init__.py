"""Erasers: every method of every table, as ``name -> erase(world, concept, **hyperparameters) -> (Edit, info)``.

Notebooks list methods by these names in their parameters cell; a method's hyperparameters come from the
notebook's preset and default to the paper's values in its Config dataclass.
"""
from __future__ import annotations

from typing import Callable


def _ant_configs(saliency: dict | None = None, **hyperparameters):
    """ANTConfig and SaliencyConfig from flat hyperparameters (loss weights by their Eq. (3) names)."""
    from unlearnkit.methods import ant
    from unlearnkit.methods.parts.losses.trajectory import TrajectoryLossWeights
    from unlearnkit.methods.parts.saliency import SaliencyThreshold

    weight_names = {"preserve", "lambda1", "lambda2", "lambda3", "eta", "erase_span"}
    weights = TrajectoryLossWeights(**{k: v for k, v in hyperparameters.items() if k in weight_names})
    config = ant.ANTConfig(weights=weights, **{k: v for k, v in hyperparameters.items() if k not in weight_names})
    saliency_config = None
    if saliency is not None:
        saliency = dict(saliency)
        if "seeds" in saliency:
            saliency["seeds"] = tuple(saliency["seeds"])
        if {"gamma", "keep_fraction", "select"} & set(saliency):   # otherwise SaliencyConfig's default threshold
            saliency["threshold"] = SaliencyThreshold(gamma=saliency.pop("gamma", None),
                                                      keep_fraction=saliency.pop("keep_fraction", None),
                                                      select=saliency.pop("select", "top"))
        saliency_config = ant.SaliencyConfig(**saliency)
    return config, saliency_config


def _ant(world, concept, saliency: dict | None = None, progress: bool = False, bank=None, **hyperparameters):
    """``bank``: a frozen-trajectory bank from an earlier run with the same settings (``info["trajectory_bank"]``)."""
    from unlearnkit.methods import ant

    config, saliency_config = _ant_configs(saliency, **hyperparameters)
    return ant.erase(world, concept, config, saliency_config, progress=progress, bank=bank)


_ant.check = _ant_configs


def _with_config(module_name: str, config_name: str, fit_arguments: tuple[str, ...] = (), **fixed):
    """An eraser that builds ``module.<config_name>(**hyperparameters)`` and calls ``module.fit``; the names in
    ``fit_arguments`` (e.g. FMN's ``concept_text``) go to ``fit`` instead of the config."""

    def split(hyperparameters):
        extra = {k: hyperparameters[k] for k in fit_arguments if k in hyperparameters}
        return {k: v for k, v in hyperparameters.items() if k not in extra}, extra

    def eraser(world, concept, progress: bool = False, **hyperparameters):
        import importlib

        module = importlib.import_module(f"{__name__}.{module_name}")
        hyperparameters, extra = split(hyperparameters)
        config = getattr(module, config_name)(**{**fixed, **hyperparameters})
        kwargs = {} if module_name == "uce" else {"progress": progress}
        edit, log = module.fit(world, concept, config, **kwargs, **extra)
        return edit, {"log": log}

    def check(**hyperparameters):
        import importlib

        module = importlib.import_module(f"{__name__}.{module_name}")
        return getattr(module, config_name)(**{**fixed, **split(hyperparameters)[0]})

    eraser.check = check
    return eraser


def _sepme(function_name: str):
    """A SepME-family eraser: ``SepMEConfig(**hyperparameters)`` → ``sepme.<function_name>(world, concept, config)``
    (``"sepme"``: the concept's single decoupled increment; ``"gcirs"``: G-CiRs on all cross-attention)."""

    def check(**hyperparameters):
        from unlearnkit.methods import sepme

        return sepme.SepMEConfig(**hyperparameters)

    def eraser(world, concept, progress: bool = False, **hyperparameters):
        from unlearnkit.methods import sepme

        edit, log = getattr(sepme, function_name)(world, concept, check(**hyperparameters), progress=progress)
        return edit, {"log": log}

    eraser.check = check
    return eraser


def _mace_configs(objective: str = "ant", fusion: dict | None = None, **hyperparameters):
    """MACEConfig (loss weights by name or an ANT Table 4 config letter) and FusionConfig (ANT Eq. 7)."""
    from unlearnkit.methods import mace

    return mace.MACEConfig(objective=objective, **hyperparameters), mace.FusionConfig(**(fusion or {}))


def _mace(world, concept, objective: str = "ant", fusion: dict | None = None, preserve_texts=None,
          progress: bool = False, **hyperparameters):
    """Per-concept LoRA(s) + closed-form fusion; ``concept`` may be one Concept or a list (mass erasure)."""
    from unlearnkit.methods import mace

    config, fusion_config = _mace_configs(objective, fusion, **hyperparameters)
    return mace.erase(world, concept, config, fusion_config, preserve_texts=preserve_texts, progress=progress)


_mace.check = _mace_configs


ERASERS: dict[str, Callable] = {
    "ant": _ant,
    "esd-x": _with_config("esd", "ESDConfig", scope="xattn"),
    "esd-u": _with_config("esd", "ESDConfig", scope="non_xattn"),
    "ac": _with_config("ablating", "ACConfig"),
    "salun": _with_config("salun", "SalUnConfig"),
    "uce": _with_config("uce", "UCEConfig"),
    "fmn": _with_config("fmn", "FMNConfig", fit_arguments=("concept_text",)),
    "gcirs": _sepme("fit_gcirs_single"),
    "sepme": _sepme("fit"),
    "mace": _mace,
}


#: table labels of the method names (ERASERS keys and the inference-time "sld-m")
METHOD_LABELS = {"ant": "ANT", "esd-x": "ESD-x", "esd-u": "ESD-u", "ac": "AC", "uce": "UCE", "salun": "SalUn",
                 "fmn": "FMN", "sld-m": "SLD-M", "mace": "MACE", "gcirs": "G-CiRs", "sepme": "SepME"}
#: inference-time methods: no Edit, a guidance applied while sampling (their hyperparameters build this config)
INFERENCE_METHODS = ("sld-m",)
#: methods that generate their own training images: :func:`with_sampler` gives them the notebook's sampler
SAMPLER_METHODS = ("ac", "salun", "fmn")


#: one line per method for ``unlearnkit erase --help``
METHOD_DESCRIPTIONS = {
    "ant": "ANT: trajectory-aware loss inside an augmentation-enhanced saliency map (ANT Eq. 3-6)",
    "esd-x": "ESD-x: negative guidance on cross-attention (ESD)",
    "esd-u": "ESD-u: negative guidance on the non-cross-attention layers (ESD)",
    "ac": "AC: map the concept onto its anchor's predictions (Ablating Concepts)",
    "salun": "SalUn: random-label forgetting inside a gradient saliency mask (SalUn)",
    "uce": "UCE: closed-form edit of the cross-attention keys/values (UCE)",
    "fmn": "FMN: suppress the concept tokens' attention maps (Forget-Me-Not)",
    "gcirs": "G-CiRs: decorrelate the concept representation, momentum stop (SepME Eq. 2-4)",
    "sepme": "SepME: one to_k/to_v increment in the null space of the other concepts (SepME Alg. 2)",
    "mace": "MACE / ANT-fusion: one LoRA per concept, closed-form fusion (ANT Eq. 7)",
    "sculpting": "Sculpting Memory: dynamic gradient mask + concept-aware loss, concepts in sequence (SM Eq. 1-12)",
}


def coerce_hyperparameters(hyperparameters: dict) -> dict:
    """A copy in which a ``sampler`` given as a dict (``--set sampler={"num_inference_steps": 10}``, presets)
    becomes :class:`~unlearnkit.sampling.SamplerSettings`; a sampler of any other type raises a ValueError."""
    from unlearnkit.sampling import SamplerSettings

    hyperparameters = dict(hyperparameters)
    sampler = hyperparameters.get("sampler")
    if isinstance(sampler, dict):
        try:
            hyperparameters["sampler"] = SamplerSettings(**sampler)
        except TypeError as error:
            raise ValueError(f"sampler {sampler!r}: {error}") from None
    elif sampler is not None and not isinstance(sampler, SamplerSettings):
        raise ValueError(f"sampler must be SamplerSettings or a dict of its fields, got {sampler!r}")
    return hyperparameters


def label(name: str) -> str:
    """The method's name as the papers' tables write it ("esd-x" -> "ESD-x")."""
    return METHOD_LABELS.get(name, name)


def with_sampler(name: str, hyperparameters: dict | None, settings) -> dict:
    """A copy of ``hyperparameters`` in which a method of :data:`SAMPLER_METHODS` generates its training images with
    ``settings`` unless a ``sampler`` is given (the notebooks' shorter evaluation sampler on the mini world)."""
    import copy

    hyperparameters = copy.deepcopy(dict(hyperparameters or {}))
    if name in SAMPLER_METHODS and settings is not None:
        hyperparameters.setdefault("sampler", settings)
    return hyperparameters


def check_hyperparameters(name: str, **hyperparameters):
    """Build the method's config from ``hyperparameters`` without touching a model: bad names or values raise a
    ValueError naming them, before any compute. Returns the config (``None`` if the method has no checker);
    ``"sld-m"`` returns its :class:`unlearnkit.sampling.sld.SLDConfig`."""
    if name == "sld-m":
        from unlearnkit.sampling.sld import SLDConfig

        try:
            return SLDConfig(**hyperparameters)
        except (TypeError, ValueError) as error:
            raise ValueError(f"method 'sld-m': bad hyperparameter ({error})") from None
    if name not in ERASERS:
        raise ValueError(f"unknown method {name!r}; known methods: {sorted(ERASERS)}")
    check = getattr(ERASERS[name], "check", None)
    if check is None:
        return None
    try:
        return check(**coerce_hyperparameters(hyperparameters))
    except TypeError as error:  # an unknown keyword: name it
        raise ValueError(f"method {name!r}: bad hyperparameter ({error})") from None


#: methods whose eraser takes a list of concepts itself (one closed form / one fusion for all of them)
MULTI_CONCEPT_NATIVE = ("uce", "mace")
#: fine-tuning methods run once on :func:`unlearnkit.core.concepts.joint` of the concepts (training prompts drawn from all)
MULTI_CONCEPT_JOINT = ("esd-x", "esd-u", "ac", "salun", "fmn")


def erase_many(name: str, world, concepts, **hyperparameters):
    """Erase several concepts at once with the eraser ``name`` — the multi-concept baseline rows of ANT Tables 2–3.

    UCE and MACE take the list themselves (:data:`MULTI_CONCEPT_NATIVE`). ESD-x/u, AC, SalUn and FMN are trained
    once on :func:`unlearnkit.core.concepts.joint` of the concepts — every update draws its prompt (and its training
    images) from all of them, with the method's own budget; FMN re-steers each prompt's own concept tokens. ANT,
    G-CiRs and SepME are per-concept methods (ANT's many-concept form is ``"mace"`` with ``objective="ant"``;
    sequential forgetting: :func:`unlearnkit.experiments.sequential.fit_sequential_baseline`) and raise a ValueError here.
    """
    from unlearnkit.core.concepts import Concept, joint

    concepts = [concepts] if isinstance(concepts, Concept) else list(concepts)
    if not concepts:
        raise ValueError("concepts is empty: give at least one concept to erase")
    if name in MULTI_CONCEPT_NATIVE:
        return erase(name, world, concepts, **hyperparameters)
    if name not in MULTI_CONCEPT_JOINT:
        raise ValueError(f"method {name!r} does not erase several concepts in one run; multi-concept methods: "
                         f"{sorted(MULTI_CONCEPT_NATIVE + MULTI_CONCEPT_JOINT)}")
    if name == "fmn" and len(concepts) > 1:
        hyperparameters = {"concept_text": [c.name for c in concepts], **hyperparameters}
    return erase(name, world, joint(concepts), **hyperparameters)


def erase(name: str, world, concept, **hyperparameters):
    """Run the eraser ``name`` on ``concept``; unknown names raise a ValueError listing the known ones."""
    if name not in ERASERS:
        raise ValueError(f"unknown method {name!r}; known methods: {sorted(ERASERS)}")
    return ERASERS[name](world, concept, **coerce_hyperparameters(hyperparameters))
