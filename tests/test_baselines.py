"""Baselines behind the Eraser interface: ESD, AC, SalUn, UCE, FMN and SLD-M (issue #7).

Losses against hand-computed values, UCE's closed form against a least-squares solve, parameter scopes and
world integrity on the mini world, one step of every method on the SD v1.4 architecture, and bad inputs
rejected before any UNet call.
"""
from contextlib import contextmanager
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from unlearnkit.sampling import sld
from unlearnkit.core.diffusion import TextEmbeddingCache
from unlearnkit.methods.parts.closed_form import ClosedFormSolver
from unlearnkit.methods.parts.losses.ablation import anchor_mapping_loss, salun_loss_terms
from unlearnkit.methods.parts.losses.esd import esd_loss
from unlearnkit.core.tokens import concept_token_mask
from unlearnkit.methods.parts.losses.fmn import attention_resteering_loss
from unlearnkit.methods import ablating, esd, fmn, salun, uce
from unlearnkit.methods.parts.training_data import GeneratedLatents
from unlearnkit.core.params import select_parameters
from unlearnkit.sampling import SamplerSettings, generate, sample_latents

FOUR_STEPS = SamplerSettings(num_inference_steps=4, guidance_scale=5.0)


@contextmanager
def unet_must_not_run(unet):
    """Fail loudly if the UNet is called inside the block (inputs must be rejected before compute)."""

    def refuse(module, args):
        raise AssertionError("the UNet ran although the inputs were invalid")

    handle = unet.register_forward_pre_hook(refuse)
    try:
        yield
    finally:
        handle.remove()


def snapshot(unet, keys=None):
    return {k: v.clone() for k, v in unet.state_dict().items() if keys is None or k in keys}


def unchanged(unet, before) -> bool:
    state = unet.state_dict()
    return all(torch.equal(before[k], state[k]) for k in before)


# --- losses, hand-computed --------------------------------------------------------------------------------------
def test_esd_loss_matches_hand_computation_and_stops_gradient_at_the_target():
    eps = torch.zeros(1, 1, 1, 2, requires_grad=True)
    frozen_cond = torch.tensor([1.0, 3.0]).view(1, 1, 1, 2).requires_grad_(True)
    frozen_uncond = torch.tensor([0.5, 1.0]).view(1, 1, 1, 2).requires_grad_(True)
    # target = ε*(∅) − η(ε*(c) − ε*(∅)) = [0.5 − 2·0.5, 1 − 2·2] = [−0.5, −3]
    loss = esd_loss(eps, frozen_cond, frozen_uncond, eta=2.0)
    assert float(loss.detach()) == pytest.approx((0.25 + 9.0) / 2)
    loss.backward()
    torch.testing.assert_close(eps.grad.flatten(), torch.tensor([0.5, 3.0]))  # 2(ε − target)/n
    assert frozen_cond.grad is None and frozen_uncond.grad is None


def test_anchor_mapping_and_salun_losses_match_hand_computation():
    eps = torch.tensor([1.0, 2.0]).view(1, 2, 1, 1).requires_grad_(True)
    anchor = torch.tensor([3.0, -1.0]).view(1, 2, 1, 1).requires_grad_(True)
    loss = anchor_mapping_loss(eps, anchor)
    assert float(loss.detach()) == pytest.approx((4.0 + 9.0) / 2)
    loss.backward()
    assert anchor.grad is None
    retain = torch.tensor([0.0, 2.0]).view(1, 2, 1, 1)
    noise = torch.ones(1, 2, 1, 1)
    terms = salun_loss_terms(eps, anchor, retain, noise, alpha=0.5)
    values = {k: float(v.detach()) for k, v in terms.items()}
    assert values == pytest.approx({"forget": 6.5, "retain": 0.5 * (1.0 + 1.0) / 2, "loss": 7.0})


def test_fmn_token_mask_and_resteering_loss_match_hand_computation():
    ids = torch.tensor([[0, 5, 6, 7, 1, 1], [0, 6, 9, 1, 1, 1]])
    mask = concept_token_mask(ids, [6], lengths=[5, 4], include_pooler=False)
    assert mask.tolist() == [[False, False, True, False, False, False], [False, True, False, False, False, False]]
    with_pooler = concept_token_mask(ids[:1], [6, 7], lengths=[5], include_pooler=True)
    assert with_pooler.tolist() == [[False, False, True, True, True, True]]
    with pytest.raises(ValueError, match="do not occur"):
        concept_token_mask(ids, [7], lengths=[5, 4])
    # two prompts × two heads, one query, three tokens; batch-major head layout (b·heads + h)
    probs = torch.tensor([[[0.2, 0.3, 0.5]], [[0.6, 0.0, 0.4]],     # prompt 0, heads 0–1
                          [[0.1, 0.8, 0.1]], [[0.5, 0.25, 0.25]]])  # prompt 1, heads 0–1
    token_mask = torch.tensor([[False, True, True], [True, False, False]])
    # selected: prompt 0 → 0.3, 0.5, 0.0, 0.4; prompt 1 → 0.1, 0.5
    expected = (0.09 + 0.25 + 0.0 + 0.16 + 0.01 + 0.25) ** 0.5
    assert float(attention_resteering_loss([probs, probs], token_mask)) == pytest.approx(expected * 2 ** 0.5)


def test_sld_hook_follows_the_safety_equations_step_by_step():
    safety = torch.zeros(1, 3, 2)
    cfg = sld.SLDConfig(sld_guidance_scale=1000, sld_warmup_steps=1, sld_threshold=0.01, sld_momentum_scale=0.3,
                        sld_mom_beta=0.4)
    hook = sld.sld_guidance(safety, cfg, guidance_scale=7.5)
    eps_cond, eps_uncond, eps_safety = torch.tensor([0.0, 1.0]), torch.zeros(2), torch.tensor([0.005, 0.0])
    t = 981  # SLD ignores t: the warm-up counts calls
    # μ = [min(1, 1000·0.005), 0 (ε_p − ε_S = 1 ≥ λ)] = [1, 0];  γ₀ = μ ⊙ (ε_S − ε_∅) = [0.005, 0]
    first = hook(eps_cond, eps_uncond, t, eps_safety)
    torch.testing.assert_close(first, 7.5 * eps_cond)                       # warm-up: plain CFG
    torch.testing.assert_close(hook.momentum, torch.tensor([0.003, 0.0]))  # ν₁ = 0.6 γ₀
    second = hook(eps_cond, eps_uncond, t, eps_safety)
    gamma1 = torch.tensor([0.005 + 0.3 * 0.003, 0.0])
    torch.testing.assert_close(second, 7.5 * (eps_cond - gamma1))
    hook.reset()
    torch.testing.assert_close(hook(eps_cond, eps_uncond, t, eps_safety), first)


# --- the closed-form solver (UCE, MACE/ANT fusion) --------------------------------------------------------------
def test_closed_form_solver_equals_least_squares_of_the_stacked_weighted_system():
    g = torch.Generator().manual_seed(0)
    d_in, d_out, lam = 6, 4, 0.5
    W = torch.randn(d_out, d_in, generator=g, dtype=torch.float64)
    c_e, c_g = torch.randn(2, d_in, generator=g, dtype=torch.float64), torch.randn(2, d_in, generator=g,
                                                                                  dtype=torch.float64)
    c_p = torch.randn(3, d_in, generator=g, dtype=torch.float64)
    c_x, v_x = torch.randn(2, d_in, generator=g, dtype=torch.float64), torch.randn(2, d_out, generator=g,
                                                                                  dtype=torch.float64)
    s_e, s_p, s_x = 2.0, 0.7, 1.3
    solver = ClosedFormSolver(lam).add_mapped(c_e, c_g, s_e).add_preserved(c_p, s_p).add_targets(c_x, v_x, s_x)
    solved = solver.solve(W.float())
    # rows of √w·cᵀ against √w·vᵀ, plus √λ·I against √λ·Wᵀ: least squares gives W*ᵀ
    rows = torch.cat([lam ** 0.5 * torch.eye(d_in, dtype=torch.float64), s_e ** 0.5 * c_e, s_p ** 0.5 * c_p,
                      s_x ** 0.5 * c_x])
    targets = torch.cat([lam ** 0.5 * W.T, s_e ** 0.5 * (c_g @ W.T), s_p ** 0.5 * (c_p @ W.T), s_x ** 0.5 * v_x])
    expected = torch.linalg.lstsq(rows, targets).solution.T
    assert solved.dtype == torch.float32
    torch.testing.assert_close(solved.double(), expected, atol=1e-5, rtol=1e-5)
    # precomputed Gram pairs give the same answer
    gram = ClosedFormSolver(lam).add_gram(s_e * c_e.T @ c_e, mapped=s_e * c_g.T @ c_e)
    gram.add_gram(s_p * c_p.T @ c_p, mapped=s_p * c_p.T @ c_p).add_gram(s_x * c_x.T @ c_x, mat1=s_x * v_x.T @ c_x)
    torch.testing.assert_close(gram.solve(W), expected)


def test_uce_moves_the_erased_key_to_the_guide_and_leaves_the_world_unchanged(mini_world):
    concept = mini_world.concept("vangogh")          # anchor "art", as UCE guides styles
    unet = mini_world.pipe.unet
    before = snapshot(unet)
    erasure = uce.fit(mini_world, [concept], preserve=["monet"])
    edit, log = erasure.edit, erasure.log
    assert unchanged(unet, before)
    kv = select_parameters(unet, "xattn_kv")
    assert set(edit.deltas) == set(kv) and len(log) == len(kv)
    c_e, c_g, c_p = uce.token_contexts(mini_world, ["vangogh", "art", "monet"])
    name = next(iter(kv))
    W = kv[name].detach()
    W_new = W + edit.deltas[name]
    assert torch.linalg.norm(W_new @ c_e - W @ c_g) < 0.5 * torch.linalg.norm(W @ c_e - W @ c_g)
    assert torch.linalg.norm(W_new @ c_p - W @ c_p) < 0.1 * torch.linalg.norm(W @ c_p)
    solver = ClosedFormSolver(0.5).add_mapped(c_e, c_g).add_preserved(c_p)
    torch.testing.assert_close(W_new, solver.solve(W), atol=1e-6, rtol=1e-6)


# --- scopes and world integrity on the mini world ---------------------------------------------------------------
@pytest.mark.parametrize("scope", ["xattn", "non_xattn"])
def test_esd_x_touches_only_attn2_and_esd_u_only_the_rest(mini_world, scope):
    unet = mini_world.pipe.unet
    before = snapshot(unet)
    cfg = esd.ESDConfig(scope=scope, iterations=2, num_inference_steps=4, lr=1e-3)
    erasure = esd.fit(mini_world, [mini_world.concept("tench")], cfg)
    edit, log = erasure.edit, erasure.log
    assert unchanged(unet, before), "fit must leave the world's UNet unchanged"
    assert len(log) == 2 and all(np.isfinite(entry["loss"]) and 1 <= entry["paper_step"] <= 4 for entry in log)
    in_attn2 = ["attn2" in k.split(".") for k in edit.deltas]
    assert all(in_attn2) if scope == "xattn" else not any(in_attn2)
    assert set(edit.deltas) == set(select_parameters(unet, scope)) and edit.num_changed() > 0
    with edit.applied(unet):
        for k, v in unet.state_dict().items():
            if k not in edit.deltas:
                assert torch.equal(v, before[k]), k
    assert unchanged(unet, before)


def test_ac_salun_fmn_generate_their_data_and_leave_the_world_unchanged(mini_world):
    unet = mini_world.pipe.unet
    processors = dict(unet.attn_processors)
    before = snapshot(unet)
    concept = mini_world.concept("tench")
    ac = ablating.fit(mini_world, [concept], ablating.ACConfig(iterations=2, batch_size=2, anchor_images=3,
                                                              sampler=FOUR_STEPS))
    ac_edit, ac_log = ac.edit, ac.log
    assert set(ac_edit.deltas) == set(select_parameters(unet, "xattn_kv")) and len(ac_log) == 2
    salun_cfg = salun.SalUnConfig(epochs=1, batch_size=2, forget_images=3, retain_images=2, sampler=FOUR_STEPS,
                                  lr=1e-3)
    salun_run = salun.fit(mini_world, [concept], salun_cfg)
    salun_edit, salun_log = salun_run.edit, salun_run.log
    assert len(salun_log) == 2 and salun_edit.num_changed() <= salun_edit.metadata["active_parameters"]
    total = sum(p.numel() for p in unet.parameters())
    assert 0.4 * total < salun_edit.metadata["active_parameters"] <= 0.5 * total + 10  # global top half
    fmn_run = fmn.fit(mini_world, [concept], fmn.FMNConfig(iterations=2, concept_images=2, lr=1e-4, sampler=FOUR_STEPS))
    fmn_edit, fmn_log = fmn_run.edit, fmn_run.log
    assert len(fmn_log) == 2 and fmn_edit.num_changed() > 0
    assert unchanged(unet, before)
    assert all(unet.attn_processors[k] is v for k, v in processors.items()), "FMN must restore the processors"
    assert all(not p.requires_grad or p.grad is None for p in unet.parameters())


def test_salun_mask_keeps_the_requested_fraction_and_the_released_mode_the_complement():
    g = {"a": torch.tensor([0.1, -4.0, 0.3]), "b": torch.tensor([[2.0, -0.2], [0.05, 1.0]])}
    top = salun.global_saliency_mask(g, 3 / 7)
    assert top["a"].tolist() == [False, True, False] and top["b"].tolist() == [[True, False], [False, True]]
    low = salun.global_saliency_mask(g, 3 / 7, select="salun_released")
    assert low["a"].tolist() == [True, False, False] and low["b"].tolist() == [[False, True], [True, False]]


# --- SLD-M -----------------------------------------------------------------------------------------------------
def test_sld_with_zero_safety_scale_is_plain_cfg_and_medium_changes_unsafe_images(mini_world):
    prompts, seeds = ["a nude person", "a photo of a tench"], [3, 4]
    safety = mini_world.embeddings([sld.SLD_SAFETY_CONCEPT])
    scale = FOUR_STEPS.guidance_scale
    off = sld.sld_guidance(safety, sld.SLDConfig(sld_guidance_scale=0.0), scale)
    plain = generate(mini_world.pipe, prompts, seeds, FOUR_STEPS, embeddings=mini_world.embeddings)
    silent = generate(mini_world.pipe, prompts, seeds, FOUR_STEPS, off, mini_world.embeddings)
    np.testing.assert_array_equal(silent, plain)
    medium = sld.sld_guidance(safety, sld.SLDConfig(sld_warmup_steps=0), scale)  # SLD-M without the warm-up
    steered = generate(mini_world.pipe, prompts, seeds, FOUR_STEPS, medium, mini_world.embeddings)
    assert np.abs(steered.astype(int) - plain).max() > 0
    again = generate(mini_world.pipe, prompts, seeds, FOUR_STEPS, medium, mini_world.embeddings)
    np.testing.assert_array_equal(again, steered)  # the hook's state is reset per trajectory
    with pytest.raises(ValueError, match="guidance_scale"):
        generate(mini_world.pipe, prompts, seeds, FOUR_STEPS, sld.sld_guidance(safety, sld.SLD_MEDIUM, 7.5),
                 mini_world.embeddings)


def test_sld_images_are_cached_under_keys_that_name_the_sld_config(mini_world, tmp_path):
    from unlearnkit.sampling.cache import generate_cached, image_keys

    prompts, seeds = ["a nude person", "a photo of a tench"], [3, 4]
    safety = mini_world.embeddings([sld.SLD_SAFETY_CONCEPT])
    scale = FOUR_STEPS.guidance_scale
    medium = sld.sld_guidance(safety, sld.SLDConfig(sld_warmup_steps=0), scale)
    strong = sld.sld_guidance(safety, sld.SLD_STRONG, scale)
    assert medium.guidance_id != strong.guidance_id and medium.guidance_id.startswith("sld:")
    kwargs = dict(embeddings=mini_world.embeddings, progress=False, model_id="m")
    plain = generate_cached(mini_world.pipe, prompts, seeds, FOUR_STEPS, tmp_path, **kwargs)
    cached = generate_cached(mini_world.pipe, prompts, seeds, FOUR_STEPS, tmp_path, guidance=medium, **kwargs)
    direct = generate(mini_world.pipe, prompts, seeds, FOUR_STEPS, medium, mini_world.embeddings)
    np.testing.assert_array_equal(cached, direct)          # not the plain images under the plain keys
    assert np.abs(cached.astype(int) - plain).max() > 0
    keys = {*image_keys(prompts, seeds, FOUR_STEPS, "m"), *image_keys(prompts, seeds, FOUR_STEPS, "m",
                                                                      medium.guidance_id)}
    assert len(keys) == 4 and len(list(tmp_path.glob("*/*.png"))) == 4


# --- one step of every method on the SD v1.4 architecture -----------------------------------------------------
@pytest.fixture(scope="module")
def sd14_world(sd14_pipe):
    return SimpleNamespace(pipe=sd14_pipe, embeddings=TextEmbeddingCache(sd14_pipe.tokenizer, sd14_pipe.text_encoder))


SD_CONCEPT = SimpleNamespace(name="nudity", prompts=("a photo of nudity",), anchor="a dressed person",
                             anchor_prompts=("a photo of a dressed person",))


def test_one_step_of_every_method_on_the_sd14_architecture(sd14_world):
    unet = sd14_world.pipe.unet
    kv = select_parameters(unet, "xattn_kv")
    before = snapshot(unet, set(kv))
    latents = GeneratedLatents(torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0)),
                               ("a photo of nudity",))
    anchor = GeneratedLatents(latents.latents.clone(), ("a photo of a dressed person",))

    # ESD: seed 0 draws paper step 4 of 4 (pure noise), so no partial-sampling call is needed here
    runs = {
        "esd": esd.fit(sd14_world, [SD_CONCEPT], esd.ESDConfig(iterations=1, num_inference_steps=4, scope="xattn_kv")),
        "ac": ablating.fit(sd14_world, [SD_CONCEPT], ablating.ACConfig(iterations=1, batch_size=1), anchor_data=anchor),
        "salun": salun.fit(sd14_world, [SD_CONCEPT], salun.SalUnConfig(epochs=1, batch_size=1, scope="xattn_kv"),
                           forget_data=latents, retain_data=anchor),
        "fmn": fmn.fit(sd14_world, [SD_CONCEPT], fmn.FMNConfig(iterations=1, scope="xattn_kv"), concept_data=latents),
        "uce": uce.fit(sd14_world, [SD_CONCEPT], guides=""),
    }
    assert runs["esd"].log[0]["paper_step"] == 4
    salun_edit = runs["salun"].edit
    for edit, log in ((run.edit, run.log) for run in runs.values()):
        # SalUn's global mask may leave whole tensors out; every other method edits all 32 projections
        assert set(edit.deltas) <= set(kv) and (edit is salun_edit or len(edit.deltas) == 32)
        assert all(torch.isfinite(d).all() for d in edit.deltas.values())
        assert all(np.isfinite(v) for entry in log for v in entry.values() if isinstance(v, float))
    assert unchanged(unet, before)
    one_step = SamplerSettings(num_inference_steps=1)
    hook = sld.sld_guidance(sd14_world.embeddings([sld.SLD_SAFETY_CONCEPT]), sld.SLDConfig(sld_warmup_steps=0),
                            one_step.guidance_scale)
    out, _ = sample_latents(sd14_world.pipe, ["a photo of nudity"], [0], one_step, hook, sd14_world.embeddings)
    assert out.shape == (1, 4, 16, 16) and torch.isfinite(out).all()


# --- bad inputs are rejected before compute ----------------------------------------------------------------------
@pytest.mark.parametrize("build, match", [
    (lambda: esd.ESDConfig(lr=0), "lr=0 is out of range"),
    (lambda: esd.ESDConfig(scope="attn3"), "scope=.attn3. is not accepted"),
    (lambda: esd.ESDConfig(negative_guidance=0), "negative_guidance"),
    (lambda: ablating.ACConfig(batch_size=0), "batch_size"),
    (lambda: salun.SalUnConfig(keep_fraction=0), "keep_fraction"),
    (lambda: salun.SalUnConfig(threshold_scope="layer"), "threshold_scope"),
    (lambda: salun.SalUnConfig(alpha=-1), "alpha"),
    (lambda: fmn.FMNConfig(max_grad_norm=0), "max_grad_norm"),
    (lambda: uce.UCEConfig(lamb=0), "lamb"),
    (lambda: uce.UCEConfig(tokens="first"), "tokens"),
    (lambda: sld.SLDConfig(sld_mom_beta=1.0), "sld_mom_beta"),
    (lambda: sld.SLDConfig(sld_warmup_steps=-1), "sld_warmup_steps"),
    (lambda: ClosedFormSolver(lam=-1), "lam"),
    (lambda: ClosedFormSolver(0.5).solve(torch.zeros(2, 2)), "nothing to solve"),
    (lambda: ClosedFormSolver(0.5).add_targets(torch.zeros(2, 3), torch.zeros(3, 4)), "one target per context"),
])
def test_bad_hyperparameters_are_rejected(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_bad_fit_inputs_are_rejected_before_any_unet_call(mini_world):
    unet = mini_world.pipe.unet
    tench = mini_world.concept("tench")
    no_anchor = SimpleNamespace(name="tench", prompts=("a photo of a tench",), anchor="", anchor_prompts=())
    with unet_must_not_run(unet):
        with pytest.raises(ValueError, match="non-empty training prompts"):
            esd.fit(mini_world, [tench], esd.ESDConfig(iterations=1), prompts=[])
        with pytest.raises(TypeError, match="wrap it in a list"):
            esd.fit(mini_world, tench, esd.ESDConfig(iterations=1))
        with pytest.raises(ValueError, match="has no anchor"):
            ablating.fit(mini_world, [no_anchor], ablating.ACConfig(iterations=1))
        with pytest.raises(ValueError, match="channels"):
            ablating.fit(mini_world, [tench], anchor_data=GeneratedLatents(torch.zeros(1, 3, 8, 8), ("a fish",)))
        with pytest.raises(ValueError, match="different"):
            salun.fit(mini_world, [tench], pseudo_prompts=[tench.prompts[0]])
        with pytest.raises(ValueError, match="name the concept"):
            fmn.fit(mini_world, [tench], concept_text="church")
        with pytest.raises(ValueError, match="one per concept"):
            uce.fit(mini_world, [tench, mini_world.concept("church")], guides=["fish"])
        with pytest.raises(ValueError, match="both erased and preserved"):
            uce.fit(mini_world, [tench], preserve=["tench"])
        with pytest.raises(ValueError, match="one seed per prompt"):
            generate(mini_world.pipe, ["a nude person"], [1, 2], FOUR_STEPS,
                     sld.sld_guidance(mini_world.embeddings([""]), guidance_scale=FOUR_STEPS.guidance_scale),
                     mini_world.embeddings)
    with pytest.raises(ValueError, match=r"\[1, L, d\]"):
        sld.sld_guidance(torch.zeros(2, 16, 128))
