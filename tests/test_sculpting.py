"""Sculpting Memory: dynamic mask (Eq. 2–4), concept-aware loss (Eq. 8–12), sequential stages and their Edits."""
from __future__ import annotations

import math
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from unlearnkit.core.concepts import Concept
from unlearnkit.core.diffusion import TextEmbeddingCache
from unlearnkit.methods.parts.dynamic_mask import DynamicMask, keep_fraction_from_sparsity, top_k_mask, update_ratio
from unlearnkit.core.edits import Edit
from unlearnkit.methods.parts.losses.concept_aware import concept_aware_loss_terms
from unlearnkit.methods import sculpting as sm
from unlearnkit.core.params import select_parameters
from unlearnkit.methods.parts.stages import run_sequential


# --- dynamic mask ---------------------------------------------------------------------------------------------------
def _toy_params(seed: int = 0) -> dict[str, torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    shapes = {"a.weight": (7, 5), "b.weight": (4, 4, 3), "c.bias": (9,), "d.weight": (1, 1)}
    return {n: torch.nn.Parameter(torch.randn(s, generator=g)) for n, s in shapes.items()}


def _set_grads(params, fill: str, g: torch.Generator) -> None:
    for p in params.values():
        p.grad = torch.zeros_like(p) if fill == "zero" else torch.randn(p.shape, generator=g)


@pytest.mark.parametrize("k", [0, 1, 7, 10, 11, 20])
def test_top_k_mask_selects_exactly_k_even_among_ties(k):
    assert int(top_k_mask(torch.zeros(4, 5), k).sum()) == k
    scores = torch.tensor([3.0, 1.0, 1.0, 1.0, 2.0] * 4).view(4, 5)
    assert int(top_k_mask(scores, k).sum()) == k


@pytest.mark.parametrize("fill", ["random", "zero"])
@pytest.mark.parametrize("accumulate", ["abs_of_sum", "sum_of_abs"])
def test_drop_grow_keeps_every_tensors_active_count(fill, accumulate):
    params = _toy_params()
    mask = DynamicMask(params, keep_fraction=0.5, update_freq=1, r_m=1.0, total_steps=100, update_window=1.0,
                       accumulate=accumulate)
    g = torch.Generator().manual_seed(1)
    _set_grads(params, fill, g)
    mask.accumulate()
    mask.initialise()
    counts = {n: int(m.sum()) for n, m in mask.masks.items()}
    assert counts == {n: max(1, int(0.5 * p.numel())) for n, p in params.items()}
    turnover = 0
    for step in range(1, 6):
        _set_grads(params, fill, g)
        mask.accumulate()
        turnover += mask.update(step)["turnover"]
        assert {n: int(m.sum()) for n, m in mask.masks.items()} == counts
        assert all(m.dtype == torch.bool for m in mask.masks.values())
    assert turnover > 0


def test_global_ranking_and_sparsity_mapping():
    params = _toy_params()
    mask = DynamicMask(params, sparsity=0.75, update_freq=None)
    _set_grads(params, "random", torch.Generator().manual_seed(2))
    mask.accumulate()
    mask.initialise()
    total = sum(p.numel() for p in params.values())
    assert mask.keep_fraction == 0.25
    assert {n: int(m.sum()) for n, m in mask.masks.items()} == {n: max(1, int(0.25 * p.numel()))
                                                                for n, p in params.items()}
    global_mask = DynamicMask(params, keep_fraction=0.25, update_freq=None, ranking="global")
    global_mask.accumulated = {n: torch.ones_like(p) for n, p in params.items()}   # all tied
    global_mask.initialise()
    assert global_mask.active_count() == int(0.25 * total)
    assert keep_fraction_from_sparsity(0.5) == 0.5
    config = sm.SculptingConfig.from_sparsity(0.8)
    assert config.keep_fraction == pytest.approx(0.2) and config.sparsity == pytest.approx(0.8)


def test_turnover_schedule_eq4_and_release_epochs():
    r_m, t_end = 0.2, 500
    assert update_ratio(0, r_m, t_end) == pytest.approx(r_m)
    assert update_ratio(t_end / 2, r_m, t_end) == pytest.approx(r_m / 2)
    assert update_ratio(t_end, r_m, t_end) == pytest.approx(0.0, abs=1e-12)
    # the release: τ per 0-based epoch over 10 epochs of 50 steps, updates every 100 steps in the first 80 %
    mask = DynamicMask(_toy_params(), keep_fraction=0.5, update_freq=100, r_m=r_m, total_steps=t_end,
                       tau_per="epoch", steps_per_epoch=50, epochs=10)
    mask.initialise()
    due = [s for s in range(1, t_end + 1) if mask.update_due(s)]
    assert due == [100, 200, 300, 400]
    assert [round(mask.tau(s), 4) for s in due] == [0.1951, 0.1588, 0.1, 0.0412]
    per_step = DynamicMask(_toy_params(), keep_fraction=0.5, update_freq=100, r_m=r_m, total_steps=t_end)
    assert per_step.tau(250) == pytest.approx(r_m / 2)


# --- concept-aware loss -------------------------------------------------------------------------------------------
def test_teacher_and_targets_receive_no_gradient():
    g = torch.Generator().manual_seed(0)
    make = lambda: torch.randn(2, 4, 3, 3, generator=g).requires_grad_(True)  # noqa: E731
    eps_concept, eps_target, eps_super, eps_teacher = make(), make(), make(), make()
    noise = torch.randn(2, 4, 3, 3, generator=g)
    terms = concept_aware_loss_terms(eps_concept, eps_target, eps_super, noise, eps_teacher, alpha=0.25, beta=0.5)
    terms["loss"].backward()
    assert eps_teacher.grad is None and eps_target.grad is None
    assert eps_concept.grad is not None and eps_super.grad is not None
    expected = terms["unlearn"] + 0.25 * terms["align"] + 0.5 * terms["reg"]
    assert torch.allclose(terms["loss"], expected)
    # kd=False (the release): β has no effect
    no_kd = [concept_aware_loss_terms(eps_concept, eps_target, eps_super, noise, eps_teacher, beta=b, kd=False)
             for b in (0.0, 10.0)]
    assert torch.equal(no_kd[0]["loss"], no_kd[1]["loss"])
    with pytest.raises(ValueError, match="eps_teacher"):
        concept_aware_loss_terms(eps_concept, eps_target, eps_super, noise, None, kd=True)


# --- training on the mini world -------------------------------------------------------------------------------------
def _random_data(concepts, n: int, shape=(4, 8, 8), seed: int = 0) -> dict[str, sm.ConceptTrainingData]:
    g = torch.Generator().manual_seed(seed)
    data = {}
    for c in concepts:
        concept = sm.ClassLatents(torch.randn(n, *shape, generator=g), 0.1 * torch.ones(n, *shape),
                                  [c.prompts[i % len(c.prompts)] for i in range(n)])
        anchors = sm.superclass_prompts(c)
        superclass = sm.ClassLatents.fixed(torch.randn(n, *shape, generator=g), [anchors[i % len(anchors)]
                                                                                  for i in range(n)])
        data[c.name] = sm.ConceptTrainingData(concept, superclass)
    return data


def _scope_values(unet, scope: str) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in select_parameters(unet, scope).items()}


@torch.no_grad()
def _put_back(unet, values) -> None:
    params = dict(unet.named_parameters())
    for n, v in values.items():
        params[n].copy_(v)


class _RecordingStage(sm.SculptingStage):
    """The real stage trainer, keeping a handle on each stage and the dynamic mask it builds."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.masks: list[DynamicMask] = []
        self.stages = []

    def dynamic_mask(self, stage, total_steps, steps_per_epoch):
        mask = super().dynamic_mask(stage, total_steps, steps_per_epoch)
        self.masks.append(mask)
        self.stages.append(stage)
        return mask


def test_gradients_outside_the_mask_are_zero_and_those_weights_untouched(mini_world):
    """Also: the teacher's frozen values never change while the student trains."""
    unet = mini_world.pipe.unet
    concept = mini_world.concept("tench")
    config = sm.SculptingConfig(lr=1e-3, epochs=2, warmup_steps=2, update_freq=2, r_m=0.5, keep_fraction=0.3,
                                images_per_class=8)
    trainer = _RecordingStage(mini_world, config, _random_data([concept], 8))
    ever_active: dict[str, torch.Tensor] = {}
    checked_steps = []

    class CheckingAdam(torch.optim.Adam):
        def step(self, closure=None):
            mask, teacher = trainer.masks[-1], trainer.stages[-1].delta
            # the teacher (the delta switched off) still holds the stage's starting values, bit for bit
            assert all(torch.equal(teacher.original[n], before[n]) for n in before)
            for name, p in mask.params.items():
                assert not bool((p.grad * ~mask.masks[name]).any()), f"gradient leaks outside the mask in {name}"
                ever_active[name] = ever_active.get(name, torch.zeros_like(mask.masks[name])) | mask.masks[name]
            checked_steps.append(1)
            return super().step(closure)

    before = _scope_values(unet, "xattn")
    names = list(before)
    try:
        edits, log = run_sequential(unet, [concept], names, trainer, lambda ps: CheckingAdam(ps, lr=config.lr),
                                    restore=False)
        after = _scope_values(unet, "xattn")
    finally:
        _put_back(unet, before)
    assert len(checked_steps) == 6 and any(r.get("turnover", 0) > 0 for r in log)
    for name, active in ever_active.items():
        assert torch.equal(after[name][~active], before[name][~active]), f"{name}: a never-active weight moved"
        assert not torch.equal(after[name][active], before[name][active])


def test_stage_edits_compose_to_the_final_model_and_fit_restores_the_world(mini_world):
    unet = mini_world.pipe.unet
    concepts = [mini_world.concept("tench"), mini_world.concept("church")]
    data = _random_data(concepts, 4, seed=3)
    config = sm.SculptingConfig(lr=1e-3, batch_size=2, epochs=3, warmup_steps=1, update_freq=2,
                                checkpoint="best_train_loss", images_per_class=4)
    before = _scope_values(unet, "xattn")
    try:
        edits, log = run_sequential(unet, concepts, list(before), sm.SculptingStage(mini_world, config, data),
                                    lambda ps: torch.optim.Adam(ps, lr=config.lr), checkpoint="best_train_loss",
                                    restore=False)
        final = _scope_values(unet, "xattn")
    finally:
        _put_back(unet, before)
    assert [e.metadata["concept"] for e in edits] == ["tench", "church"]
    with Edit.total(edits).applied(unet):
        composed = _scope_values(unet, "xattn")
    for name in before:
        torch.testing.assert_close(composed[name], final[name], rtol=0, atol=1e-6)
    assert {r["stage"] for r in log} == {0, 1} and all(math.isfinite(r["loss"]) for r in log)

    whole_model = {n: p.detach().clone() for n, p in unet.named_parameters()}
    erasure = sm.fit(mini_world, concepts, replace(config, kd=False, target_model="frozen"), data=data)
    fit_edits = erasure.edits
    with pytest.raises(ValueError, match="2 Edits"):
        erasure.edit   # one Edit per stage: .edits, or .total() for the model after every stage
    assert all(torch.equal(whole_model[n], p) for n, p in unet.named_parameters())
    assert all(p.grad is None for p in unet.parameters())
    assert len(fit_edits) == 2 and all(e.num_changed() > 0 for e in fit_edits)


def test_one_step_on_the_sd14_architecture(sd14_pipe):
    world = SimpleNamespace(pipe=sd14_pipe, embeddings=TextEmbeddingCache(sd14_pipe.tokenizer,
                                                                          sd14_pipe.text_encoder))
    concept = Concept("tench", ("a photo of a tench",), anchor="fish", anchor_prompts=("a photo of a fish",))
    data = _random_data([concept], 2, shape=(4, 16, 16))
    config = sm.SculptingConfig(batch_size=1, epochs=1, warmup_steps=1, images_per_class=2, scope="xattn")
    before = _scope_values(sd14_pipe.unet, "xattn")
    erasure = sm.fit(world, [concept], config, data=data)
    edits, log = erasure.edits, erasure.log
    assert [r["phase"] for r in log] == ["warmup", "unlearn"]
    assert math.isfinite(log[-1]["reg"]) and math.isfinite(log[-1]["loss"])
    assert set(edits[0].deltas) == set(before) and edits[0].num_changed() > 0
    assert all(torch.equal(before[n], p) for n, p in select_parameters(sd14_pipe.unet, "xattn").items())


# --- validation -----------------------------------------------------------------------------------------------------
class _NoComputeWorld:
    """A world whose model must not be touched: validation has to fail first."""

    @property
    def pipe(self):
        raise AssertionError("fit touched the model before validating its inputs")


@pytest.mark.parametrize("kwargs, message", [
    ({"keep_fraction": 0.0}, "keep_fraction.*0.0"),
    ({"keep_fraction": 1.0}, "keep_fraction.*1.0"),
    ({"keep_fraction": 1.5}, "keep_fraction.*1.5"),
    ({"update_freq": 0}, "update_freq.*0"),
    ({"update_freq": -100}, "update_freq.*-100"),
    ({"scope": "attn9"}, "scope.*attn9"),
])
def test_bad_config_values_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sm.SculptingConfig(**kwargs)


def test_bad_inputs_are_rejected_before_compute():
    with pytest.raises(ValueError, match="sparsity.*1.2"):
        sm.SculptingConfig.from_sparsity(1.2)
    with pytest.raises(ValueError, match="exactly one"):
        DynamicMask(_toy_params(), keep_fraction=0.5, sparsity=0.5, update_freq=None)
    with pytest.raises(ValueError, match="concepts is empty"):
        sm.fit(_NoComputeWorld(), [])
    no_superclass = Concept("tench", ("a photo of a tench",))
    with pytest.raises(ValueError, match="'tench' has no superclass"):
        sm.fit(_NoComputeWorld(), [no_superclass])
    fish = Concept("tench", ("a tench",), anchor="fish")
    with pytest.raises(ValueError, match="repeat"):
        sm.fit(_NoComputeWorld(), [fish, fish])
    with pytest.raises(TypeError, match="list"):
        sm.fit(_NoComputeWorld(), fish)
