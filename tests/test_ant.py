"""ANT: trajectory-aware loss (Eq. 3), stage draws, saliency maps (Eq. 4–6), masked training."""
from types import SimpleNamespace

import pytest
import torch

from unlearnkit.core.diffusion import TextEmbeddingCache, paper_step_to_train_t
from unlearnkit.methods.parts.losses.trajectory import (ABLATION_CONFIGS, TrajectoryLossWeights, draw_stage_steps, erase_target,
                                          preserve_target, trajectory_loss_terms)
from unlearnkit.methods.parts.saliency import SaliencyThreshold, intersect_saliency_maps, threshold_gradient
from unlearnkit.methods import ant


def _frozen_tensors(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 4, 3, 3, generator=g) for _ in range(4)]


@pytest.mark.parametrize("term", ["erase", "preserve", "uncond_early", "uncond_late"])
def test_each_term_is_zero_with_zero_gradient_at_its_target(term):
    fc1, fu1, fc2, fu2 = _frozen_tensors()
    w = TrajectoryLossWeights(eta=0.7)
    targets = {"eps_cond_early": preserve_target(fc1, fu1, w.eta), "eps_uncond_early": fu1.clone(),
               "eps_cond_late": erase_target(fc2, fu2, w.eta), "eps_uncond_late": fu2.clone()}
    inputs = {k: (v.clone().requires_grad_(True)) for k, v in targets.items()}
    terms = trajectory_loss_terms(w, frozen_cond_early=fc1, frozen_uncond_early=fu1, frozen_cond_late=fc2,
                                  frozen_uncond_late=fu2, **inputs)
    assert float(terms[term].detach()) == 0.0
    terms[term].backward()
    for v in inputs.values():
        assert v.grad is None or torch.count_nonzero(v.grad) == 0
    # and away from the target the term is positive with a gradient
    moved = {k: (v + 0.1).requires_grad_(True) for k, v in targets.items()}
    terms = trajectory_loss_terms(w, frozen_cond_early=fc1, frozen_uncond_early=fu1, frozen_cond_late=fc2,
                                  frozen_uncond_late=fu2, **moved)
    assert float(terms[term]) > 0


def test_preserve_target_is_the_frozen_conditional_at_eta_one():
    fc, fu = _frozen_tensors()[:2]
    torch.testing.assert_close(preserve_target(fc, fu, 1.0), fc)
    torch.testing.assert_close(erase_target(fc, fu, 1.0), 2 * fu - fc)


def test_frozen_targets_carry_no_gradient():
    fc1, fu1, fc2, fu2 = [t.requires_grad_(True) for t in _frozen_tensors()]
    eps = [t.detach().clone().add(0.3).requires_grad_(True) for t in _frozen_tensors(1)]
    terms = trajectory_loss_terms(TrajectoryLossWeights(), eps_cond_early=eps[0], eps_uncond_early=eps[1],
                                  eps_cond_late=eps[2], eps_uncond_late=eps[3], frozen_cond_early=fc1,
                                  frozen_uncond_early=fu1, frozen_cond_late=fc2, frozen_uncond_late=fu2)
    terms["loss"].backward()
    assert all(t.grad is None for t in (fc1, fu1, fc2, fu2))


@pytest.mark.parametrize("t_prime", [1, 25, 40, 43, 47, 49])
def test_stage_draws_never_overlap_and_preserve_sees_t_above_t_prime(t_prime):
    g = torch.Generator().manual_seed(t_prime)
    threshold = paper_step_to_train_t(t_prime)
    for _ in range(300):
        early, late = draw_stage_steps(t_prime, 50, g)
        assert early > t_prime >= late >= 1 and early <= 50
        assert 20 * (early - 1) + 1 > threshold >= 20 * (late - 1) + 1  # the DDIM train timesteps of those steps
        r_early, r_late = draw_stage_steps(t_prime, 50, g, stage_split="ant_single_released")
        assert r_early <= 50 - t_prime < r_late


def test_ablation_configs_are_settings_of_one_loss():
    assert ABLATION_CONFIGS["A"].erase_span == "all" and ABLATION_CONFIGS["A"].preserve == 0
    assert ABLATION_CONFIGS["E"].preserve > 0 and ABLATION_CONFIGS["C"].erase_span == "late"
    w = TrajectoryLossWeights.from_released_alphas(0.5, 2.5)  # ANT Multiple, celebrity (reference §4.4)
    assert (w.lambda1, w.lambda2, w.lambda3) == pytest.approx((0.4, 0.5, 0.2))


def test_thresholds_and_streamed_intersection():
    g = torch.tensor([[0.1, -2.0], [0.5, 3.0]])
    assert threshold_gradient(g, SaliencyThreshold(gamma=0.5)).tolist() == [[False, True], [True, True]]
    assert threshold_gradient(g, SaliencyThreshold(keep_fraction=0.5)).tolist() == [[False, True], [False, True]]
    assert threshold_gradient(g, SaliencyThreshold(keep_fraction=0.5, select="ant_released")).tolist() == \
        [[True, False], [True, False]]
    maps = [{"w": torch.tensor([True, True, False])}, {"w": torch.tensor([True, False, True])}]
    mask, counts = intersect_saliency_maps(maps)
    assert mask["w"].tolist() == [True, False, False] and counts == [2, 1]


@pytest.mark.parametrize("kwargs, match", [
    (dict(t_prime=60), "outside the 50-step schedule"),
    (dict(t_prime=50), "both stages"),
    (dict(lr=0), "lr=0 is out of range"),
    (dict(iterations=0), "iterations"),
    (dict(stage_split="sideways"), "stage_split"),
])
def test_bad_hyperparameters_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ant.ANTConfig(**kwargs)


def test_bad_saliency_settings_are_rejected():
    with pytest.raises(ValueError, match="gamma=0.0 is out of range"):
        SaliencyThreshold(gamma=0.0)
    with pytest.raises(ValueError, match="keep_fraction"):
        SaliencyThreshold(keep_fraction=1.5)
    with pytest.raises(ValueError, match="exactly one"):
        SaliencyThreshold()
    with pytest.raises(ValueError, match=r"seeds=\(\) is empty"):
        ant.SaliencyConfig(seeds=())


def test_empty_prompt_set_is_rejected_before_compute(mini_world):
    concept = mini_world.concept("nudity")
    with pytest.raises(ValueError, match="empty prompt set"):
        ant.fit(mini_world, [concept], ant.ANTConfig(iterations=1), prompts=[])


def test_masked_training_leaves_everything_outside_the_mask_bit_identical(mini_world):
    cfg = ant.ANTConfig(iterations=3, batch_size=2, num_inference_steps=10, t_prime=8, trajectory_guidance=5.0, lr=1e-3)
    concept = mini_world.concept("nudity")
    mask, counts = ant.saliency_mask(mini_world, concept, config=cfg,
                                     saliency=ant.SaliencyConfig(seeds=(1, 2), max_prompts=2))
    assert len(counts) == 4 and counts == sorted(counts, reverse=True)
    unet = mini_world.pipe.unet
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    erasure = ant.fit(mini_world, [concept], cfg, mask=mask)
    edit, log = erasure.edit, erasure.log
    assert erasure.info["active_parameters"] == counts[-1]
    assert all(torch.equal(before[k], v) for k, v in unet.state_dict().items()), "fit must leave the world unchanged"
    assert len(log) == 3 and all(entry["t_early"] > 800 >= entry["t_late"] for entry in log)  # t'=8 of 10 steps
    assert edit.num_changed() > 0
    for name, delta in edit.deltas.items():
        assert not delta[~mask[name]].any(), name
    with edit.applied(unet):
        params = dict(unet.named_parameters())
        for name in params:
            if name not in edit.deltas:
                assert torch.equal(params[name], before[name])
    assert all(torch.equal(before[k], v) for k, v in unet.state_dict().items())


def test_one_ant_step_on_the_sd14_architecture(sd14_pipe):
    world = SimpleNamespace(pipe=sd14_pipe, embeddings=TextEmbeddingCache(sd14_pipe.tokenizer, sd14_pipe.text_encoder))
    concept = SimpleNamespace(name="nudity", prompts=("nudity",))
    cfg = ant.ANTConfig(iterations=1, num_inference_steps=4, t_prime=2, scope="xattn_kv", trajectory_guidance=3.0)
    before = {k: v.clone() for k, v in sd14_pipe.unet.state_dict().items() if "attn2.to_k" in k}
    erasure = ant.fit(world, [concept], cfg)
    edit, log = erasure.edit, erasure.log
    assert len(edit.deltas) == 32 and all(k.endswith(("attn2.to_k.weight", "attn2.to_v.weight")) for k in edit.deltas)
    assert torch.isfinite(torch.tensor(log[0]["loss"]))
    assert all(torch.equal(before[k], v) for k, v in sd14_pipe.unet.state_dict().items() if k in before)
