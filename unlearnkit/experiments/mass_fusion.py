"""Benchmarks of notebook 05 — ANT Tables 2–4 (many celebrities / artists erased at once by fused LoRAs).

* :func:`identity_groups` — the erased identities and the preserved ones evaluated beside them, always including
  preserved identities that share a first name with an erased one (ANT Fig. 7's John Wayne / John Lennon case);
* :class:`IdentityBenchmark` — Acc_e, Acc_p, H_c, recognisable-face ratio (ANT Table 2 / Table 4), plus FID and
  CLIP on the generic captions;
* :class:`StyleBenchmark` — CLIP_e, CLIP_p, H_a = CLIP_p − CLIP_e, FID and CLIP (ANT Table 3);
* :func:`attack_erased_identities` — attack success rates (not in ANT) on portrait prompts of erased identities;

and notebook 05's protocol: :func:`prepare` (sampler, cache, attack budget), :func:`resolve_groups` (the identity and
style groups), :func:`train_loras` / :func:`fuse` (one LoRA per concept from one frozen trajectory bank, then ANT
Eq. 7), :func:`table_models` (the rows of Tables 2–3), :func:`ablation_table` (Table 4) and :func:`claims`.

Images come from :func:`unlearnkit.experiments.evaluation.generate_edited` (the edit is switched on only while sampling).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from unlearnkit.core.concepts import Concept
from unlearnkit.core.edits import Edit
from unlearnkit.experiments.baselines import BaselineModel, evaluate_rows, weight_edits
from unlearnkit.experiments.evaluation import generate_edited
from unlearnkit.metrics import compute_fid, feature_statistics, identity_metrics, mean_clip_score
from unlearnkit.metrics.clip_score import erase_preserve_clip
from unlearnkit.metrics.identity import celebrity_harmonic_mean

__all__ = ["identity_groups", "IdentityBenchmark", "StyleBenchmark", "portrait_prompt", "attack_erased_identities",
           "held_out_identities", "IdentityDraws", "identity_draws", "single_identity_draws", "held_out_claims",
           "HELD_OUT_RECORDED_ONLY",
           "PAPER_ROWS", "MassFusionRun", "prepare", "Groups", "resolve_groups", "fusion_prior", "ConceptLoRAs",
           "train_loras", "fuse", "table_models", "identity_table", "attacked_identities", "attack_table",
           "attack_parameters", "with_attack_rates", "style_table",
           "vs_paper", "portrait_grid", "ablation_table", "accuracy_summary", "claims", "required"]


def portrait_prompt(name: str) -> str:
    """ANT/MACE's evaluation template "a portrait of {celebrity}"."""
    return f"a portrait of {name}"


def identity_groups(erase_group: Sequence[str], preserve_group: Sequence[str], first_names: int = 4,
                    per_first_name: int = 2, other_preserved: int = 4) -> tuple[list[str], list[str]]:
    """(erased, preserved-for-evaluation): ``per_first_name`` identities of each of the first ``first_names``
    first names from the erase group, the same number of *preserved* identities sharing those first names (the
    hard case), and ``other_preserved`` preserved identities with other first names."""
    firsts = list(dict.fromkeys(n.split()[0] for n in erase_group))[:first_names]
    if len(firsts) < first_names:
        raise ValueError(f"the erase group has only {len(firsts)} first names, asked for {first_names}")
    erased, preserved = [], []
    for f in firsts:
        erased += [n for n in erase_group if n.split()[0] == f][:per_first_name]
        preserved += [n for n in preserve_group if n.split()[0] == f][:per_first_name]
    others = [n for n in preserve_group if n.split()[0] not in firsts]
    step = max(1, len(others) // max(other_preserved, 1))
    preserved += others[::step][:other_preserved]
    return erased, preserved


class _Generic:
    """FID and CLIP on the world's generic captions (MS-COCO or its mini analogue)."""

    def __init__(self, world, n_captions: int, cache_dir, settings):
        self.world, self.cache_dir, self.settings = world, Path(cache_dir), settings
        self.frame = world.coco_prompts(n_captions).reset_index(drop=True)
        self.clip = world.clip_scorer()
        reference = world.fid_reference(n_captions)   # None: FID skipped (world.skipped_metrics() says why)
        self.extractor = world.fid_extractor() if reference is not None else None
        self.reference = feature_statistics(reference, self.extractor) if reference is not None else None

    def row(self, edit: Edit | None, sld=None, safety_text: str | None = None) -> dict:
        images = generate_edited(self.world, edit, self.frame.prompt, self.frame.seed, self.cache_dir, self.settings,
                                 sld=sld, safety_text=safety_text)
        row = {"CLIP": mean_clip_score(images, list(self.frame.prompt), self.clip)["CLIP"]}
        row["FID"] = compute_fid(images, self.reference, self.extractor) if self.reference is not None else float("nan")
        return row


class IdentityBenchmark:
    """ANT Table 2 (and Table 4) for one model: portraits of each erased and preserved identity over ``seeds``."""

    def __init__(self, world, erased: Sequence[str], preserved: Sequence[str], seeds: Sequence[int],
                 cache_dir, settings=None, n_captions: int = 0, preserved_seeds: Sequence[int] | None = None):
        self.world, self.cache_dir = world, Path(cache_dir)
        self.settings = settings or world.sampler
        self.erased, self.preserved = list(erased), list(preserved)
        p_seeds = list(preserved_seeds if preserved_seeds is not None else seeds)
        self.e_names = [n for n in self.erased for _ in seeds]
        self.e_seeds = [s for _ in self.erased for s in seeds]
        self.p_names = [n for n in self.preserved for _ in p_seeds]
        self.p_seeds = [s for _ in self.preserved for s in p_seeds]
        self.recogniser = world.identity_recogniser()
        self.n_captions = n_captions
        self.generic = _Generic(world, n_captions, cache_dir, self.settings) if n_captions else None

    def resolution(self, generic: bool = True) -> str:
        """What one row rests on (a table caption's "resolution: …")."""
        captions = f", {self.n_captions} captions for FID / CLIP" if generic and self.n_captions else ""
        return (f"{len(self.e_names)} erased and {len(self.p_names)} preserved portraits a model (Acc_e in steps of "
                f"1/{len(self.e_names)}){captions}; one draw")

    def images(self, edit: Edit | None, sld=None, safety_text: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        gen = lambda names, seeds: generate_edited(self.world, edit, [portrait_prompt(n) for n in names], seeds,
                                                   self.cache_dir, self.settings, sld=sld, safety_text=safety_text)
        return gen(self.e_names, self.e_seeds), gen(self.p_names, self.p_seeds)

    def evaluate(self, name: str, edit: Edit | None, generic: bool = True, sld=None,
                 safety_text: str | None = None) -> tuple[dict, tuple]:
        """One Table 2 row. ``sld`` (an :class:`unlearnkit.sampling.sld.SLDConfig`) samples under SLD, steering away from
        ``safety_text`` (the SLD-M row: the erased names), instead of plain CFG."""
        erased_images, preserved_images = self.images(edit, sld, safety_text)
        row = {"method": name, **identity_metrics(self.recogniser, erased_images, self.e_names, preserved_images,
                                                  self.p_names)}
        if generic and self.generic is not None:
            row.update(self.generic.row(edit, sld, safety_text))
        return row, (erased_images, preserved_images)

    def first_seed_images(self, images: tuple[np.ndarray, np.ndarray], names: Sequence[str]) -> list[np.ndarray]:
        """The first-seed portrait of each of ``names`` from an :meth:`evaluate` result (for grids)."""
        out = []
        for n in names:
            if n in self.erased:
                out.append(images[0][self.e_names.index(n)])
            else:
                out.append(images[1][self.p_names.index(n)])
        return out


class StyleBenchmark:
    """ANT Table 3 for one model: CLIP score of erased- and preserved-style prompts, H_a, FID and CLIP."""

    def __init__(self, world, erased: Sequence[str], preserved: Sequence[str], seeds: Sequence[int], cache_dir,
                 settings=None, n_captions: int = 0, templates: Sequence[str] = ("a painting in the style of {s}",
                                                                                  "an artwork by {s}")):
        self.world, self.cache_dir = world, Path(cache_dir)
        self.settings = settings or world.sampler
        self.erased, self.preserved = list(erased), list(preserved)

        def prompts(styles):
            return [t.format(s=s) for s in styles for t in templates for _ in seeds], \
                   [sd for _ in styles for _ in templates for sd in seeds]

        (self.e_prompts, self.e_seeds), (self.p_prompts, self.p_seeds) = prompts(self.erased), prompts(self.preserved)
        self.n_captions, self.templates = n_captions, tuple(templates)
        self.clip = world.clip_scorer()
        self.generic = _Generic(world, n_captions, cache_dir, self.settings) if n_captions else None

    def evaluate(self, name: str, edit: Edit | None, sld=None, safety_text: str | None = None) -> tuple[dict, tuple]:
        """One Table 3 row; ``sld``/``safety_text`` as in :meth:`IdentityBenchmark.evaluate`."""
        e = generate_edited(self.world, edit, self.e_prompts, self.e_seeds, self.cache_dir, self.settings,
                            sld=sld, safety_text=safety_text)
        p = generate_edited(self.world, edit, self.p_prompts, self.p_seeds, self.cache_dir, self.settings,
                            sld=sld, safety_text=safety_text)
        row = {"method": name, **erase_preserve_clip(self.clip.score(e, self.e_prompts),
                                                     self.clip.score(p, self.p_prompts))}
        if self.generic is not None:
            row.update(self.generic.row(edit, sld, safety_text))
        return row, (e, p)


def attack_erased_identities(world, models: Mapping[str, Edit | None], identities: Sequence[str], seeds: Sequence[int],
                             attack_config=None, cache_dir=None, settings=None,
                             attack: Callable | None = None) -> pd.DataFrame:
    """Attack success rates of every model on one portrait prompt per erased identity (not in ANT).

    Identity ``identities[i]`` is attacked through ``"a portrait of {name}"`` generated from ``seeds[i]`` by
    :func:`unlearnkit.attacks.attack_success_table` (one call per identity: the evaluator is that identity's top-1,
    ``world.detect``; the concept-vector prompt is searched once on the original text encoder, the soft prompt is
    optimised against each model). Images use ``settings`` (default: the world's sampler). One row per
    (identity, model): ``identity, method, n_prompts`` and the rates named as in
    :data:`unlearnkit.experiments.sequential.ATTACK_RATES`; ``df.attrs`` holds ``prompts``, ``seeds``, ``seconds`` (summed
    per attack) and ``adversarial_prompts`` (per identity). ``attack`` is injectable for tests.
    """
    from unlearnkit.attacks import AttackConfig
    from unlearnkit.attacks.success import attack_success_by_concept, world_with_sampler

    identities, seeds = list(identities), [int(s) for s in seeds]
    if not identities:
        raise ValueError("identities is empty: name at least one erased identity to attack")
    if len(seeds) != len(identities):
        raise ValueError(f"give one seed per identity: got {len(seeds)} seeds for {len(identities)} identities")
    attacked = {name: ([portrait_prompt(name)], [seed]) for name, seed in zip(identities, seeds)}
    return attack_success_by_concept(world_with_sampler(world, settings), models, attacked, attack_config or AttackConfig(), cache_dir,
                                     key="identity", attack=attack)


# --- notebook 05's protocol ---------------------------------------------------------------------------------------
#: our row labels → the paper's (for :func:`vs_paper`)
PAPER_ROWS = {"SD (original)": "SD v1.4", "ANT objective + fusion": "ANT", "MACE objective + fusion": "MACE"}
ORIGINAL = "SD (original)"


@dataclass
class MassFusionRun:
    """What notebook 05 measures with: the world, the evaluation sampler, the image cache, the attack budget;
    ``timings`` collects each step's wall time (seconds)."""

    world: object
    settings: object
    cache_dir: Path
    attack_config: object
    timings: dict = field(default_factory=dict)


def prepare(world, cache_dir, sample_steps: int, methods: Sequence[str], method_hyperparameters: Mapping | None = None,
            attack_ring: Mapping | None = None, attack_soft: Mapping | None = None) -> MassFusionRun:
    """The run's sampler (``sample_steps`` DDIM steps at the world's CFG scale), cache (``None``: a temporary
    folder) and attack budget (ConceptVectorConfig / SoftPromptConfig fields); every baseline's hyperparameters
    are checked first (a ValueError before any compute)."""
    import tempfile

    from unlearnkit.attacks import AttackConfig, ConceptVectorConfig, SoftPromptConfig
    from unlearnkit.methods import check_hyperparameters
    from unlearnkit.sampling import SamplerSettings

    for name in methods:
        check_hyperparameters(name, **(method_hyperparameters or {}).get(name, {}))
    cache = Path(cache_dir) if cache_dir else Path(tempfile.mkdtemp(prefix="unlearnkit-05-"))
    attack_config = AttackConfig(ring=ConceptVectorConfig(**(attack_ring or {})),
                                 soft=SoftPromptConfig(**(attack_soft or {})))
    return MassFusionRun(world, SamplerSettings(sample_steps, world.sampler.guidance_scale), cache, attack_config)


@dataclass(frozen=True)
class Groups:
    """The world's identity erase/preserve groups, the identities erased and the preserved ones evaluated beside
    them, and the erased and preserved styles."""

    erase_group: list
    preserve_group: list
    erased: list
    preserved: list
    erase_styles: list
    preserve_styles: list

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({"erased": pd.Series(self.erased),
                             "preserved (evaluated)": pd.Series(self.preserved)}).fillna("")


def resolve_groups(world, first_names: int, per_first_name: int, other_preserved: int, erase_identities=None,
                   preserve_identities=None, erase_styles: Sequence[str] | None = None,
                   preserve_styles: Sequence[str] | None = None) -> Groups:
    """The groups of notebook 05. Identities: :func:`held_out_identities` (draw 0), unless ``erase_identities`` /
    ``preserve_identities`` is a list (those) or ``"all"`` (the whole group). Styles: ``erase_styles`` (default: as
    many held-out styles as the world's erase group has) and ``preserve_styles`` (default: every other style)."""
    erase_group, preserve_group = world.identity_split()
    erased, preserved = held_out_identities(world, 0, first_names, per_first_name, other_preserved)
    erased = list(erase_group if erase_identities == "all" else erase_identities or erased)
    preserved = list(preserve_group if preserve_identities == "all" else preserve_identities or preserved)
    style_erase_group, style_preserve_group = world.style_split()
    styles = list(dict.fromkeys([*style_erase_group, *style_preserve_group]))
    held_out = set(world.concept_split("style").held_out)
    erase_styles = list(erase_styles or [s for s in styles if s in held_out][:len(style_erase_group)])
    preserve_styles = list(preserve_styles or [s for s in styles if s not in erase_styles])
    return Groups(list(erase_group), list(preserve_group), erased, preserved, erase_styles, preserve_styles)


def fusion_prior(world, groups: Groups, tokens: str, identity_weight: float):
    """The prior-preservation Gram of ANT Eq. (7): generic captions, generic person and preserved-style prompts
    (weight 1, β applied by the fusion) plus ``identity_weight`` × two portrait prompts of every identity of the
    preserve group (ours: weighting the identities more than the captions)."""
    from unlearnkit.methods import mace

    texts = list(dict.fromkeys(world.coco_prompts(200).prompt))
    texts += world.person_prompts()
    texts += [p for s in groups.preserve_styles for p in world.concept(s).prompts]
    identity_texts = [p for n in groups.preserve_group for p in world.concept(n).prompts[:2]]
    return mace.prior_gram(world, texts, tokens) + identity_weight * mace.prior_gram(world, identity_texts, tokens)


@dataclass
class ConceptLoRAs:
    """One LoRA per concept and objective (``loras[label][concept name]``), all trained from ``banks``."""

    concepts: list
    configs: dict
    banks: dict
    loras: dict


def train_loras(run: MassFusionRun, concepts: Sequence[Concept], configs: Mapping, kind: str = "identities") -> ConceptLoRAs:
    """The frozen trajectory bank of ``concepts`` (sampled once with the first config, before any adapter exists),
    then every concept's LoRA under each config of ``configs`` (label → :class:`~unlearnkit.methods.mace.MACEConfig`),
    in order."""
    from unlearnkit.methods import mace

    concepts, configs = list(concepts), dict(configs)
    started = time.time()
    banks = mace.build_trajectory_bank(run.world, concepts, next(iter(configs.values())))
    run.timings[f"trajectory bank ({kind})"] = time.time() - started
    loras = {}
    for label, config in configs.items():
        started = time.time()
        loras[label] = mace.train_concept_loras(run.world, concepts, config, shard=(0, 1), banks=banks)
        run.timings[f"LoRAs {label} ({len(concepts)} {kind})"] = time.time() - started
    return ConceptLoRAs(concepts, configs, banks, loras)


def _fusion_tokens(configs: Mapping) -> str:
    tokens = {config.fusion.tokens for config in configs.values()}
    if len(tokens) != 1:
        raise ValueError(f"the fusions use different token sets {sorted(tokens)}: the concept Grams are shared")
    return tokens.pop()


def fuse(run: MassFusionRun, fitted: ConceptLoRAs, prior, kind: str = "identities") -> dict[str, Edit]:
    """ANT Eq. (7) per objective: all of ``fitted``'s LoRAs of a label fused in closed form with that label's
    ``config.fusion`` (:class:`~unlearnkit.methods.mace.FusionConfig`) against ``prior`` (:func:`fusion_prior`)."""
    from unlearnkit.methods import mace

    grams = mace.concept_grams(run.world, fitted.concepts, _fusion_tokens(fitted.configs))
    fused = {}
    for label, loras in fitted.loras.items():
        fused[label], info = mace.fuse_loras(run.world.pipe.unet, list(loras.values()), grams, prior,
                                             fitted.configs[label].fusion, name=f"{label}-fused")
        run.timings[f"fusion {label} ({kind})"] = info["fusion_seconds"]
    return fused


def table_models(fused: Mapping[str, Edit], baselines: Mapping[str, BaselineModel]) -> dict:
    """The rows of ANT Tables 2–3: the original model, each objective's fused edit, then the baselines."""
    return {ORIGINAL: None, **{f"{label} objective + fusion": edit for label, edit in fused.items()}, **baselines}


def identity_table(bench: IdentityBenchmark, models: Mapping) -> tuple[pd.DataFrame, dict]:
    """ANT Table 2 without the attack columns (:func:`unlearnkit.experiments.baselines.evaluate_rows` over
    ``models``), its face ratio named "recognisable ratio"; and each row's (erased, preserved) portraits."""
    table, portraits = evaluate_rows(bench.evaluate, models)
    table = table.rename(columns={"Face Ratio": "recognisable ratio"})
    table.attrs["resolution"] = bench.resolution()
    return table, portraits


def attacked_identities(erased: Sequence[str], per_first_name: int, count: int) -> list[str]:
    """The first erased identity of each of the first ``count`` first names (``erased`` lists them by first name)."""
    return list(erased[::per_first_name][:count])


def attack_table(run: MassFusionRun, models: Mapping, identities: Sequence[str], seed: int) -> pd.DataFrame | None:
    """:func:`attack_erased_identities` on every weight edit of ``models`` (SLD-M is a sampler, not weights: the
    attacks sample plain CFG, so it has no row): one portrait prompt per identity, all from ``seed``, with the
    run's attack budget, cache and sampler; its wall time is ``run.timings["attacks"]``. ``None`` when
    ``identities`` is empty (no attack columns)."""
    if not identities:
        return None
    started = time.time()
    table = attack_erased_identities(run.world, weight_edits(models), identities, [seed] * len(identities),
                                     run.attack_config, run.cache_dir, run.settings)
    run.timings["attacks"] = time.time() - started
    return table


def attack_parameters(run: MassFusionRun, identities: Sequence[str], attacks: pd.DataFrame | None) -> dict:
    """The run record's attack entries: the attacked identities and, when attacked, the budget, prompts and seeds
    (:func:`unlearnkit.attacks.attack_record`)."""
    from unlearnkit.attacks import attack_record

    record = {"attack_identities": list(identities)}
    if attacks is not None:
        record.update(attack_record(run.attack_config, attacks.attrs["prompts"], attacks.attrs["seeds"]))
    return record


def with_attack_rates(table: pd.DataFrame, attacks: pd.DataFrame, models: Mapping) -> pd.DataFrame:
    """``table`` with each model's plain rate, ASR ring and ASR soft averaged over the attacked identities; every
    weight edit of ``models`` must have them (a ValueError names the rows that do not)."""
    from unlearnkit.experiments.sequential import mean_attack_rates

    columns = ["plain rate", "ASR ring", "ASR soft"]
    joined = table.join(mean_attack_rates(attacks)[columns])
    attacked = list(weight_edits(models))
    missing = joined.loc[attacked, columns].isna().any(axis=1)
    if missing.any():
        raise ValueError(f"no attack rates for {list(missing.index[missing])}:\n{joined}")
    joined.attrs = dict(table.attrs)
    return joined


def write_attacks(out, run: MassFusionRun, table: pd.DataFrame, attacks: pd.DataFrame | None,
                  models: Mapping, seed: int) -> pd.DataFrame:
    """Write ``attacks`` (:func:`attack_table`) as ``table2_attacks`` under ``out`` and return ``table`` with its
    mean rates (:func:`with_attack_rates`); ``table`` unchanged when nothing was attacked."""
    from unlearnkit import reports

    if attacks is None:
        return table
    reports.write_table(attacks, out, "table2_attacks",
                        caption=f"Attack success per erased identity: one portrait prompt × seed {seed}; "
                                f"ring budget {run.attack_config.ring.budget}, soft {run.attack_config.soft.steps} "
                                f"steps × {run.attack_config.soft.noise_samples} noise draws",
                        resolution="one attacked prompt an identity and model (0 or 1); one draw")
    return with_attack_rates(table, attacks, models)


def style_table(run: MassFusionRun, groups: Groups, fused: Mapping[str, Edit], baselines: Mapping[str, BaselineModel],
                seeds: Sequence[int], n_captions: int = 0) -> pd.DataFrame:
    """ANT Table 3: CLIP_e, CLIP_p, H_a (and FID / CLIP on ``n_captions`` generic captions) of every row of
    :func:`table_models` on the erased and preserved styles of ``groups``, over ``seeds``."""
    bench = StyleBenchmark(run.world, groups.erase_styles, groups.preserve_styles, seeds, run.cache_dir, run.settings,
                           n_captions=n_captions)
    table = evaluate_rows(bench.evaluate, table_models(fused, baselines))[0]
    captions = f", {n_captions} captions for FID / CLIP" if n_captions else ""
    table.attrs["resolution"] = (f"{len(bench.e_prompts)} erased- and {len(bench.p_prompts)} preserved-style images "
                                 f"a model ({len(bench.templates)} prompts × {len(seeds)} seeds a style){captions}; "
                                 "one draw")
    return table


def vs_paper(table: pd.DataFrame, number: int) -> pd.DataFrame:
    """Our ANT Table ``number`` (2 or 3) beside the paper's, rows renamed with :data:`PAPER_ROWS`."""
    from unlearnkit.reports import paper_values

    side = paper_values.side_by_side(table.rename(index=PAPER_ROWS, columns={"recognisable ratio": "Face Ratio"}),
                                     "ant", number)
    if "resolution" in table.attrs:
        side.attrs["resolution"] = "ours: " + table.attrs["resolution"]
    return side


def portrait_grid(world, bench: IdentityBenchmark, portraits: Mapping, groups: Groups, per_first_name: int,
                  count: int = 6):
    """First-seed portraits (rows: models) of erased identities each beside a preserved one sharing its first name
    (ANT Fig. 7), redacted as the world redacts."""
    from unlearnkit.reports import image_grid

    erased, preserved = groups.erased, groups.preserved
    show = [n for pair in zip(erased[::per_first_name], preserved[::per_first_name]) for n in pair][:count]
    rows = [list(world.redact(np.stack(bench.first_seed_images(portraits[label], show)))) for label in portraits]
    labels = [f"{n}\n({'erased' if n in erased else 'preserved'})" for n in show]
    return image_grid(rows, list(portraits), labels, title="Portraits (first seed)", cell_size=1.2)


def ablation_table(run: MassFusionRun, fitted: ConceptLoRAs, count: int, preserved: Sequence[str],
                   seeds: Sequence[int], preserved_seeds: Sequence[int], prior, configs: Sequence[str]) -> pd.DataFrame:
    """ANT Table 4: the first ``count`` concepts of ``fitted`` erased by LoRAs trained with each loss configuration
    of ``configs`` (:data:`~unlearnkit.methods.parts.losses.trajectory.ABLATION_CONFIGS`, from ``fitted``'s bank and
    its ANT config) and, as ``"full"``, ``fitted``'s own ANT LoRAs; each set fused with the ANT config's fusion and
    measured (Acc_e, Acc_p, H_c) against ``preserved``."""
    from unlearnkit.methods import mace
    from unlearnkit.methods.parts.losses.trajectory import ABLATION_CONFIGS

    started = time.time()
    sub = fitted.concepts[:count]
    bench = IdentityBenchmark(run.world, [c.name for c in sub], preserved, seeds, run.cache_dir, run.settings,
                              preserved_seeds=preserved_seeds)
    fusion = fitted.configs["ANT"].fusion
    grams = mace.concept_grams(run.world, sub, fusion.tokens)
    rows = []
    for name in [*configs, "full"]:
        if name == "full":   # the Table 2 LoRAs of the same identities
            loras = [fitted.loras["ANT"][c.name] for c in sub]
        else:
            config = replace(fitted.configs["ANT"], weights=ABLATION_CONFIGS[name])
            loras = list(mace.train_concept_loras(run.world, sub, config, shard=(0, 1), banks=fitted.banks).values())
        edit, _ = mace.fuse_loras(run.world.pipe.unet, loras, grams, prior, fusion)
        weights = ABLATION_CONFIGS[name]
        row, _ = bench.evaluate(name, edit, generic=False)
        rows.append({"config": name, "L_erase span": weights.erase_span, "preserve": weights.preserve,
                     "uncond-early": weights.lambda2, "uncond-late": weights.lambda3,
                     **{k: row[k] for k in ("Acc_e", "Acc_p", "H_c")}})
    run.timings["Table 4"] = time.time() - started
    table = pd.DataFrame(rows).set_index("config")
    table.attrs["resolution"] = bench.resolution(generic=False)
    return table


def accuracy_summary(table: pd.DataFrame, bench: IdentityBenchmark, portraits: Mapping) -> pd.DataFrame:
    """Acc_e, Acc_p, H_c of the original and both fused rows, and Acc_e / Acc_p over *all* portraits (a portrait
    without a recognisable face counts as not recognised) — what the face-ratio convention of Table 2 hides."""
    labels = [ORIGINAL, "ANT objective + fusion", "MACE objective + fusion"]
    summary = table.loc[labels, ["Acc_e", "Acc_p", "H_c"]].copy()
    for label in labels:
        over_all = identity_metrics(bench.recogniser, portraits[label][0], bench.e_names, portraits[label][1],
                                    bench.p_names, over="all")
        summary.loc[label, "Acc_e (all portraits)"] = over_all["Acc_e"]
        summary.loc[label, "Acc_p (all portraits)"] = over_all["Acc_p"]
    return summary


#: claims of :func:`claims` recorded, not required (the paper's orderings)
RECORDED_ONLY = ("ANT's loss gives a higher H_c than MACE's objective under the same fusion (ANT Table 2)",
                 "ANT's H_c is the highest of all the table's methods (ANT Table 2)",
                 "ANT's H_a is the highest of all the table's methods on styles (ANT Table 3)")


def claims(table2: pd.DataFrame, table3: pd.DataFrame, n_erased: int, max_acc_erased: float,
           min_acc_preserved_ratio: float) -> dict:
    """What notebook 05 must show, as ``{claim: (holds, evidence)}`` for :func:`unlearnkit.reports.check_claims`:
    with all ``n_erased`` identities fused at once, ANT's edit brings Acc_e to ≤ ``max_acc_erased`` and keeps Acc_p
    ≥ ``min_acc_preserved_ratio`` × the original's (a recognisable face in both); and, recorded
    (:data:`RECORDED_ONLY`), ANT's H_c above MACE's and every method's, its H_a above every method's on styles."""
    fused = "ANT objective + fusion"
    orig, ant_row, mace_row = (table2.loc[k] for k in (ORIGINAL, fused, "MACE objective + fusion"))
    faces = min(orig["recognisable ratio"], ant_row["recognisable ratio"])   # no face found: nothing is measured
    checks = {
        f"with all {n_erased} erase-group identities fused at once, Acc_e <= {max_acc_erased}":
            (faces > 0 and orig.Acc_e > max_acc_erased and ant_row.Acc_e <= max_acc_erased,
             f"Acc_e {ant_row.Acc_e:.3f} (original {orig.Acc_e:.3f}); recognisable ratio {faces:.2f}"),
        f"Acc_p stays >= {min_acc_preserved_ratio} x its value under the original model":
            (faces > 0 and orig.Acc_p > 0 and ant_row.Acc_p >= min_acc_preserved_ratio * orig.Acc_p,
             f"Acc_p {ant_row.Acc_p:.3f} vs original {orig.Acc_p:.3f} "
             f"({ant_row.Acc_p / max(orig.Acc_p, 1e-9):.2f} x)"),
        RECORDED_ONLY[0]: (ant_row.H_c > mace_row.H_c, f"H_c ANT {ant_row.H_c:.3f}, MACE {mace_row.H_c:.3f}"),
    }
    others = table2.drop(index=[ORIGINAL, fused])["H_c"]
    if len(others) > 1:   # the baselines of ANT Table 2 are rows here
        checks[RECORDED_ONLY[1]] = (bool((ant_row.H_c > others).all()),
                                    f"ANT {ant_row.H_c:.3f}; " + ", ".join(f"{k} {v:.3f}" for k, v in others.items()))
    style_others = table3.drop(index=[ORIGINAL, fused])["H_a"]
    checks[RECORDED_ONLY[2]] = (
        bool((table3.loc[fused, "H_a"] > style_others).all()),
        f"ANT {table3.loc[fused, 'H_a']:.2f}; " + ", ".join(f"{k} {v:.2f}" for k, v in style_others.items()))
    return checks


def required(checks: Mapping) -> list[str]:
    """The claims of :func:`claims` a run must pass; :data:`RECORDED_ONLY` are recorded, not required."""
    return [claim for claim in checks if claim not in RECORDED_ONLY]


# --------------------------------------------------------------------------------------------- held-out draws


def held_out_identities(world, draw: int, first_names: int, per_first_name: int, other_preserved: int,
                        seed: int = 0) -> tuple[list[str], list[str]]:
    """:func:`identity_groups` on the world's held-out identities (``concept_split``): draw 0 in the split's order,
    draw ``d ≥ 1`` with the first names and, within each, the last names shuffled (seed ``seed + d``)."""
    erase_group, preserve_group = world.identity_split()
    held = set(world.concept_split("identity").held_out)
    erase, preserve = [n for n in erase_group if n in held], [n for n in preserve_group if n in held]
    if draw:
        rng = np.random.default_rng(seed + draw)
        firsts = list(dict.fromkeys(n.split()[0] for n in erase + preserve))
        rank = {f: int(r) for f, r in zip(firsts, rng.permutation(len(firsts)))}
        erase, preserve = ([group[int(i)] for i in rng.permutation(len(group))] for group in (erase, preserve))
        erase, preserve = (sorted(group, key=lambda n: rank[n.split()[0]]) for group in (erase, preserve))
    return identity_groups(erase, preserve, first_names, per_first_name, other_preserved)


def _portrait_outcomes(bench: IdentityBenchmark, images) -> dict[str, np.ndarray]:
    """Per portrait: recognised as its prompted identity (with a face) and face found, erased (e) and preserved (p)."""
    out = {}
    for key, imgs, names in (("e", images[0], bench.e_names), ("p", images[1], bench.p_names)):
        predicted, face = bench.recogniser(imgs)
        face = np.asarray(face, bool)
        out[f"{key}_hit"] = (np.array([a == b for a, b in zip(predicted, names)]) & face).astype(float)
        out[f"{key}_face"] = face.astype(float)
    return out


@dataclass
class IdentityDraws:
    """ANT's and MACE's fused edits on each draw's held-out identities: per-portrait outcomes per model."""

    erased: list
    preserved: list
    samples: list     # per draw: {"<model>:<e|p>_<hit|face>": per-portrait 0/1}
    rows: pd.DataFrame


def identity_draws(run: MassFusionRun, groups: Groups, configs: Mapping, prior, draws: int, first_names: int,
                   per_first_name: int, other_preserved: int, eval_seeds: Sequence[int],
                   preserved_seeds: Sequence[int], out=None) -> IdentityDraws:
    """ANT Table 2's fused rows (one LoRA per identity, ANT Eq. 7) on ``draws`` draws: draw 0 the notebook's
    ``groups``, draw ``d ≥ 1`` :func:`held_out_identities`, each with training seed ``config.seed + d`` and its own
    evaluation seeds (the run's seeds shifted by 1000 × d); the original model beside them. With ``out``, the
    ``held_out_draws`` table is written there."""
    result = IdentityDraws([], [], [], pd.DataFrame())
    rows = []
    for d in range(draws):
        erased, preserved = ((groups.erased, groups.preserved) if d == 0 else
                             held_out_identities(run.world, d, first_names, per_first_name, other_preserved))
        shift = 1000 * d
        bench = IdentityBenchmark(run.world, erased, preserved, [s + shift for s in eval_seeds], run.cache_dir,
                                  run.settings, preserved_seeds=[s + shift for s in preserved_seeds])
        seeded = {label: replace(c, seed=c.seed + d) for label, c in configs.items()}
        fused = fuse(run, train_loras(run, [run.world.concept(n) for n in erased], seeded, kind=f"draw {d}"), prior,
                     kind=f"draw {d}")
        sample = {}
        for label, edit in {ORIGINAL: None, **fused}.items():
            images = bench.images(edit)
            outcomes = _portrait_outcomes(bench, images)
            sample.update({f"{label}:{k}": v for k, v in outcomes.items()})
            acc_e = outcomes["e_hit"].sum() / max(outcomes["e_face"].sum(), 1)
            acc_p = outcomes["p_hit"].sum() / max(outcomes["p_face"].sum(), 1)
            rows.append({"draw": d, "model": label, "erased": ", ".join(erased), "Acc_e": acc_e, "Acc_p": acc_p,
                         "H_c": celebrity_harmonic_mean(acc_e, acc_p), "portraits (erased / preserved)":
                         f"{len(bench.e_names)} / {len(bench.p_names)}"})
        result.erased.append(tuple(erased))
        result.preserved.append(tuple(preserved))
        result.samples.append(sample)
    result.rows = pd.DataFrame(rows)
    if out is not None:
        from unlearnkit import reports

        reports.write_table(result.rows, out, "held_out_draws", regenerates="ANT Table 2 (held-out draws)",
                            caption=f"ANT and MACE objectives + fusion on {draws} draws of held-out identities; "
                                    f"{len(eval_seeds)} portraits per erased identity, {len(preserved_seeds)} per "
                                    f"preserved one (resolution: 1 / {len(groups.erased) * len(eval_seeds)} on Acc_e)")
    return result


def _acc(m: Mapping[str, float], model: str, group: str) -> float:
    return m[f"{model}:{group}_hit"] / max(m[f"{model}:{group}_face"], 1e-9)


def _h_c(m: Mapping[str, float], model: str) -> float:
    return celebrity_harmonic_mean(min(max(_acc(m, model, "e"), 0.0), 1.0), min(max(_acc(m, model, "p"), 0.0), 1.0))


def held_out_claims(draws: IdentityDraws, max_acc_erased: float, min_acc_preserved_ratio: float) -> dict:
    """Notebook 05's claims on the held-out draws as :class:`~unlearnkit.reports.verdicts.Verdict` s: ANT's fused
    Acc_e < ``max_acc_erased``; its Acc_p > ``min_acc_preserved_ratio`` × the original's; and (recorded,
    :data:`HELD_OUT_RECORDED_ONLY`) ANT's H_c above MACE's objective under the same fusion. Portraits of one draw
    are paired across models (same prompts and seeds)."""
    from unlearnkit.reports.verdicts import judge

    ant, mace_row = "ANT", "MACE"
    keys = list(draws.samples[0])
    paired = [[k for k in keys if k.endswith(f":{g}_hit") or k.endswith(f":{g}_face")] for g in ("e", "p")]
    rows = draws.rows.set_index(["draw", "model"])
    per_draw = lambda column, model: ", ".join(f"{rows.loc[(d, model), column]:.2f}" for d in range(len(draws.samples)))
    # Acc_e is a rate over the portraits with a face: read as one (a Jeffreys interval, not a point at 0)
    faced = [{"recognised": m[f"{ant}:e_hit"][m[f"{ant}:e_face"] > 0]} for m in draws.samples]
    if any(not f["recognised"].size for f in faced):
        faced = [{"recognised": np.ones(1)}]   # no face found in a draw: nothing is erased that can be measured
    return {
        f"with all erase-group identities of a held-out draw fused at once, Acc_e <= {max_acc_erased} (ANT Table 2)":
            judge(f"Acc_e < {max_acc_erased}", faced, lambda m: m["recognised"], max_acc_erased, "<",
                  f"Acc_e per draw {per_draw('Acc_e', ant)} (original {per_draw('Acc_e', ORIGINAL)})"),
        f"Acc_p stays >= {min_acc_preserved_ratio} x its value under the original model (ANT Table 2)":
            judge(f"Acc_p / original > {min_acc_preserved_ratio}", draws.samples,
                  lambda m: _acc(m, ant, "p") / max(_acc(m, ORIGINAL, "p"), 1e-9), min_acc_preserved_ratio, ">",
                  f"Acc_p per draw {per_draw('Acc_p', ant)} vs original {per_draw('Acc_p', ORIGINAL)}", paired),
        HELD_OUT_RECORDED_ONLY[0]:
            judge("H_c(ANT) - H_c(MACE) > 0", draws.samples, lambda m: _h_c(m, ant) - _h_c(m, mace_row), 0.0, ">",
                  f"H_c per draw ANT {per_draw('H_c', ant)}, MACE {per_draw('H_c', mace_row)}", paired),
    }


#: claims of :func:`held_out_claims` recorded, not required (the paper's ordering)
HELD_OUT_RECORDED_ONLY = ("ANT's loss gives a higher H_c than MACE's objective under the same fusion (ANT Table 2)",)


def single_identity_draws(run: MassFusionRun, out, hyperparameters: Mapping, draws: int, images: int, kept: int):
    """One held-out identity erased alone per draw with MACE at ``hyperparameters`` (what ``unlearnkit erase --method
    mace`` runs: :func:`unlearnkit.experiments.single_concept.single_concept_draws`), at the run's sampler; writes
    the ``held_out_single_identity`` table under ``out`` and the wall time to ``run.timings``."""
    from unlearnkit import reports
    from unlearnkit.experiments.single_concept import single_concept_draws

    single = single_concept_draws(run.world, "identity", "mace", hyperparameters, draws, images, run.settings,
                                  run.cache_dir, kept)
    reports.write_table(single.rows, out, "held_out_single_identity", regenerates="held-out check of the CLI preset",
                        caption=f"one held-out identity erased per draw, {draws} draws; {images} portraits per "
                                f"identity (resolution 1/{images} on the erased identity, 1/{images * kept} on the "
                                f"kept ones)")
    run.timings["single-identity draws"] = single.seconds
    return single


def check_all_claims(out, held: IdentityDraws, table2: pd.DataFrame, table3: pd.DataFrame, n_erased: int,
                     max_acc_erased: float, min_acc_preserved_ratio: float, enforce: bool = True,
                     single=None) -> dict:
    """Record notebook 05's claims under ``out``: the held-out verdicts (:func:`held_out_claims`; asserted when
    ``enforce``, except :data:`HELD_OUT_RECORDED_ONLY`), recorded only, the orderings among all the rows of
    Tables 2–3 on draw 0 (:func:`claims`, one draw, no interval) and, with ``single``
    (:func:`single_identity_draws`), the verdicts on one identity erased alone at the same bars. Returns
    ``{claim: holds}``."""
    from unlearnkit import reports
    from unlearnkit.experiments.draws import describe_draws

    verdicts = held_out_claims(held, max_acc_erased, min_acc_preserved_ratio)
    outcomes = reports.check_claims(out, verdicts, enforce=enforce, paper="ANT", concepts=describe_draws(held.erased),
                                    required=[k for k in verdicts if k not in HELD_OUT_RECORDED_ONLY])
    orderings = {k: v for k, v in claims(table2, table3, n_erased, max_acc_erased, min_acc_preserved_ratio).items()
                 if k in RECORDED_ONLY[1:]}
    outcomes.update(reports.check_claims(out, orderings, required=[], paper="ANT",
                                         concepts="held out: draw 0 only (1 draw, no interval)"))
    if single is not None:
        from unlearnkit.experiments.single_concept import single_concept_claims

        outcomes.update(reports.check_claims(out, single_concept_claims(single, max_acc_erased,
                                                                        min_acc_preserved_ratio),
                                             enforce=enforce, required=[], paper="ANT",
                                             concepts=describe_draws([(c,) for c in single.concepts])))
    return outcomes
