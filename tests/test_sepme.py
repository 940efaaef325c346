"""SepME (issue #6): null-space bases, decoupled increments, the G-CiRs loss and its early stop.

The maths first: ``A·S_p = 0`` to 1e-5 relative; an increment ``w(βS_pᵀ)`` leaves the to_k/to_v outputs of c_∅ and
of every protected concept unchanged on the mini UNet and on the SD v1.4 architecture; L_cor, η_i and L_mom against
hand-computed values; early stop fires exactly when ``L_mom ≤ τ``; increments add and subtract exactly; bad inputs
are rejected before any UNet call; one optimisation step on the SD v1.4 architecture.
"""
import dataclasses
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
import torch

from unlearnkit.core.concepts import Concept
from unlearnkit.core.diffusion import TextEmbeddingCache
from unlearnkit.methods.parts.losses.gcirs import (MomentumStop, balanced_correlation, balancing_weights, concept_representation,
                                     correlation_loss, weight_penalty)
from unlearnkit.methods import check_hyperparameters, registry, sepme
from unlearnkit.methods.parts.training_data import GeneratedLatents
from unlearnkit.methods.parts.nullspace import constraint_matrix, particular_solutions, residual_ratio
from unlearnkit.core.params import cross_attention_modules, select_parameters
from unlearnkit.experiments import restoration

torch.set_num_threads(1)


from test_baselines import unet_must_not_run  # noqa: E402  (one definition for every test file)


# --- null space ------------------------------------------------------------------------------------------------------
def test_particular_solutions_span_the_null_space_of_a_rank_deficient_matrix():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(12, 5, generator=g, dtype=torch.float64) @ torch.randn(5, 20, generator=g, dtype=torch.float64)
    basis = particular_solutions(A, rtol=1e-8)
    assert basis.shape == (20, 15)                                          # d_in − rank
    assert residual_ratio(A, basis) <= 1e-5
    torch.testing.assert_close(torch.linalg.vector_norm(basis, dim=0), torch.ones(15, dtype=torch.float64))
    # together with the row space it spans everything: no solution was lost
    assert torch.linalg.matrix_rank(torch.cat([A, basis.T])) == 20


def test_null_space_of_mini_embeddings_has_the_expected_dimension(mini_world):
    A = constraint_matrix(mini_world.embeddings, ["", "picasso", "cezanne"])
    basis = particular_solutions(A)
    # 16 token rows per text; the BOS row is shared by all texts, so at most 16 + 15 + 15 independent rows
    rank = A.shape[1] - basis.shape[1]
    assert rank <= 46 and basis.shape[1] >= 128 - 46
    assert residual_ratio(A, basis) <= 1e-5


@pytest.mark.parametrize("rtol", [0.0, -1e-6, 1.0])
def test_rank_tolerance_outside_range_is_rejected_with_its_value(rtol):
    with pytest.raises(ValueError, match=repr(rtol)):
        particular_solutions(torch.eye(3), rtol=rtol)


def test_no_null_space_left_is_a_clear_error():
    with pytest.raises(ValueError, match="no null space left"):
        particular_solutions(torch.randn(10, 4, dtype=torch.float64))


# --- decoupling: keys and values of protected texts are untouched -------------------------------------------------------
def _kv_outputs(unet, context):
    return {f"{name}.{proj}": getattr(module, proj)(context)
            for name, module in cross_attention_modules(unet).items() for proj in ("to_k", "to_v")}


def _random_increment(unet, embeddings, erased, protected, scale=1.0):
    basis = particular_solutions(constraint_matrix(embeddings, ["", *protected]))
    g = torch.Generator().manual_seed(1)
    weights = {k: torch.randn(p.shape[0], basis.shape[1], generator=g) * scale
               for k, p in select_parameters(unet, "xattn_kv").items()}
    return sepme.increment_edit(unet, basis, weights, beta=1.0, name=f"sepme:{erased}")


def _check_protected_unchanged(unet, embeddings, erased, protected, scale=1e-2):
    # w at the scale training reaches (ΔW a few % of W): float32 storage of W + ΔW then stays far below 1e-5
    edit = _random_increment(unet, embeddings, erased, protected, scale)
    assert set(edit.deltas) == set(select_parameters(unet, "xattn_kv"))
    texts = ["", *protected, erased]
    with torch.no_grad():
        context = embeddings(texts)
        before = _kv_outputs(unet, context)
        with edit.applied(unet):
            after = _kv_outputs(unet, context)
    for key in before:
        for i, text in enumerate(texts[:-1]):
            change = (after[key][i] - before[key][i]).norm() / before[key][i].norm()
            assert change <= 1e-5, f"{key}: output for {text!r} moved by {float(change):.2e}"
        assert (after[key][-1] - before[key][-1]).norm() > 1e-3 * before[key][-1].norm(), "erased text unaffected"


def test_increment_leaves_empty_and_other_concepts_unchanged_on_the_mini_unet(mini_world):
    _check_protected_unchanged(mini_world.pipe.unet, mini_world.embeddings, "vangogh", ["picasso", "cezanne"])


def test_increment_leaves_empty_and_other_concepts_unchanged_on_sd14_architecture(sd14_pipe):
    embeddings = TextEmbeddingCache(sd14_pipe.tokenizer, sd14_pipe.text_encoder)
    _check_protected_unchanged(sd14_pipe.unet, embeddings, "Van Gogh", ["Picasso", "Cezanne"], scale=1e-3)


def test_increments_add_and_subtract_exactly(mini_world):
    unet = mini_world.pipe.unet
    edits = {s: _random_increment(unet, mini_world.embeddings, s, [o for o in ("vangogh", "picasso") if o != s],
                                  scale=1e-2)
             for s in ("vangogh", "picasso")}
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    both = restoration.subset_edit(edits, ("vangogh", "picasso"))
    for k in both.deltas:
        assert torch.equal(both.deltas[k], edits["vangogh"].deltas[k] + edits["picasso"].deltas[k])
        torch.testing.assert_close((both - edits["picasso"]).deltas[k], edits["vangogh"].deltas[k], rtol=0, atol=1e-7)
    with both.applied(unet):
        params = dict(unet.named_parameters())
        for k, d in both.deltas.items():
            torch.testing.assert_close(params[k].detach(), before[k] + d, rtol=0, atol=1e-7)
    assert all(torch.equal(v, before[k]) for k, v in unet.state_dict().items())     # bit-exact restoration
    assert restoration.subset_edit(edits, ()) is None
    assert restoration.all_subsets(["a", "b", "c"])[:5] == [(), ("a",), ("b",), ("c",), ("a", "b")]


# --- G-CiRs loss, η and the momentum stop --------------------------------------------------------------------------
def test_correlation_loss_matches_hand_computation_and_takes_no_gradient_from_the_frozen_side():
    frozen_c = torch.tensor([1.0, 2.0, 0.0, -1.0], requires_grad=True)
    frozen_u = torch.tensor([0.0, 1.0, 1.0, 0.0])
    edited_c = torch.tensor([2.0, 0.0, 1.0, 1.0], requires_grad=True)
    edited_u = torch.tensor([1.0, 1.0, 0.0, 0.0])
    frozen = concept_representation(frozen_c, frozen_u)          # [1, 1, −1, −1]
    edited = concept_representation(edited_c, edited_u)          # [1, −1, 1, 1]
    loss = correlation_loss(frozen, edited)                       # (1 − 1 − 1 − 1) / 4
    assert float(loss.detach()) == pytest.approx(-0.5)
    loss.backward()
    torch.testing.assert_close(edited_c.grad, torch.tensor([0.25, 0.25, -0.25, -0.25]))
    assert frozen_c.grad is None


def test_balancing_weights_and_penalty_match_hand_computation():
    correlations = torch.tensor([0.02, -0.01, 0.04], requires_grad=True)
    torch.testing.assert_close(balancing_weights(correlations), torch.tensor([1.0, 2.0, 0.5]))
    total = balanced_correlation(correlations)                   # 0.02 − 0.02 + 0.02
    assert float(total.detach()) == pytest.approx(0.02)
    total.backward()
    torch.testing.assert_close(correlations.grad, torch.tensor([1.0, 2.0, 0.5]))   # η carries no gradient
    penalty = weight_penalty([torch.tensor([1.0, -2.0]), torch.tensor([[3.0]])])
    assert float(penalty) == pytest.approx((3.0 + 3.0) / 2)


def test_early_stop_fires_exactly_when_momentum_reaches_tau():
    stop = MomentumStop(alpha=0.9, tau=0.0)
    values = [0.1, 0.0, -0.5, -0.5, -0.5]
    expected, m, fired = [], None, []
    for v in values:
        m = v if m is None else 0.9 * m + 0.1 * v
        expected.append(m)
        fired.append(stop.update(v))
        assert stop.value == pytest.approx(m)
    assert fired == [m_ <= 0.0 for m_ in expected] == [False, False, False, True, True]
    assert MomentumStop(0.9, tau=0.2).update(0.2) is True                  # ≤, not <
    assert MomentumStop(0.9, tau=0.0, min_steps=2).update(-1.0) is False   # waits min_steps


# --- configuration and bad inputs -------------------------------------------------------------------------------------
def test_config_defaults_are_the_papers_and_bad_values_name_themselves():
    c = sepme.SepMEConfig()
    assert (c.lr, c.gcirs_lr, c.iterations, c.beta, c.lam, c.tau, c.alpha) == (1e-2, 1e-6, 1000, 1e-4, 3e-5, 0.0, 0.9)
    with pytest.raises(ValueError, match="-0.1"):
        sepme.SepMEConfig(lr=-0.1)
    with pytest.raises(ValueError, match="1.5"):
        sepme.SepMEConfig(alpha=1.5)
    with pytest.raises(ValueError, match="bad hyperparameter"):
        check_hyperparameters("sepme", no_such=1)
    assert {"sepme", "gcirs"} <= set(registry())
    with pytest.raises(ValueError, match="mode"):
        check_hyperparameters("sepme", mode="sequential")


def test_bad_concept_lists_are_rejected_before_any_unet_call(mini_world):
    unet = mini_world.pipe.unet
    config = sepme.SepMEConfig.for_mini_world(iterations=1)
    with unet_must_not_run(unet):
        with pytest.raises(ValueError, match="duplicate"):
            sepme.fit_increments(mini_world, ["vangogh", "picasso", "vangogh"], config)
        with pytest.raises(ValueError, match="no concepts"):
            sepme.fit_increments(mini_world, [], config)
        with pytest.raises(ValueError, match="mode"):
            sepme.fit_increments(mini_world, ["vangogh"], config, mode="sequential")
        with pytest.raises(ValueError, match="duplicate concepts in the constraint matrix"):
            sepme.fit_decoupled(mini_world, ["vangogh"], {"vangogh": ["picasso", "picasso"]}, config)
        with pytest.raises(ValueError, match="also among the protected"):
            sepme.fit_decoupled(mini_world, ["vangogh"], {"vangogh": ["vangogh"]}, config)


# --- fits -------------------------------------------------------------------------------------------------------------
def _random_data(unet, names, n=2):
    g = torch.Generator().manual_seed(0)
    size = unet.config.sample_size
    return {name: GeneratedLatents(torch.randn(n, unet.config.in_channels, size, size, generator=g), (name,) * n)
            for name in names}


def test_one_sepme_step_on_sd14_architecture_changes_only_the_erased_concept(sd14_pipe):
    embeddings = TextEmbeddingCache(sd14_pipe.tokenizer, sd14_pipe.text_encoder)
    world = SimpleNamespace(pipe=sd14_pipe, embeddings=embeddings, concept=None)
    concept = Concept("Van Gogh", ("Van Gogh",), kind="style")
    before = {k: v.clone() for k, v in sd14_pipe.unet.state_dict().items()}
    config = sepme.SepMEConfig(iterations=2, lr=1e-1, beta=1.0)
    edits, log = sepme.fit_decoupled(world, [concept], {"Van Gogh": ["Picasso"]}, config,
                                     data=_random_data(sd14_pipe.unet, ["Van Gogh"], n=1))
    edit = edits["Van Gogh"]
    assert len(edit.deltas) == 32 and all(k.endswith(("attn2.to_k.weight", "attn2.to_v.weight")) for k in edit.deltas)
    assert edit.num_changed() > 0 and len(log) == 2
    assert all(torch.equal(v, before[k]) for k, v in sd14_pipe.unet.state_dict().items())   # θ untouched
    context = embeddings(["", "Picasso"])
    key = next(iter(edit.deltas))
    moved = (context @ edit.deltas[key].T).norm() / (context @ before[key].T).norm()
    assert moved <= 1e-5


def test_gcirs_and_iterative_sepme_on_the_mini_world(mini_world):
    unet = mini_world.pipe.unet
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    config = sepme.SepMEConfig.for_mini_world(iterations=2, min_iterations=0)
    data = _random_data(unet, ["vangogh", "picasso"])
    edit, log = sepme.fit_gcirs(mini_world, ["vangogh"], config, data)
    assert set(edit.deltas) == set(select_parameters(unet, "xattn")) and len(log) <= 2
    edits = sepme.fit_increments(mini_world, ["vangogh", "picasso"], config, mode="iterative", data=data)
    assert list(edits) == ["vangogh", "picasso"]
    assert set(edits["vangogh"].deltas) == set(select_parameters(unet, "xattn"))              # step 1: G-CiRs
    assert set(edits["picasso"].deltas) == set(select_parameters(unet, "xattn_kv"))
    assert edits["picasso"].metadata["protected"] == ["", "vangogh"]
    # the registry's "sepme" in mode "iterative" is SepME₂: the same Edits, one per concept
    erasure = sepme.fit(mini_world, ["vangogh", "picasso"], dataclasses.replace(config, mode="iterative"), data=data)
    assert [e.name for e in erasure.edits] == [edits[n].name for n in edits]
    assert all(torch.equal(a.deltas[k], b.deltas[k]) for a, b in zip(erasure.edits, edits.values()) for k in a.deltas)
    assert {row["concept"] for row in erasure.log} == {"vangogh", "picasso"}
    assert all(torch.equal(v, before[k]) for k, v in unet.state_dict().items())


def test_protect_others_puts_every_other_style_in_the_null_space_of_a_single_increment(mini_world):
    """``protect_others``: one increment's A holds c_∅ and every other style's name, so their keys and values do not
    move (SepME Eq. 8 on the widened A); without it, A holds c_∅ only and the other styles' keys move."""
    unet = mini_world.pipe.unet
    styles = mini_world.concepts("style")
    others = sepme.other_concept_texts(mini_world, [mini_world.concept("vangogh")])
    assert others == [s for s in styles if s != "vangogh"]
    data = _random_data(unet, ["vangogh"])
    moved = {}
    for protect in (False, True):
        config = sepme.SepMEConfig.for_mini_world(iterations=3, min_iterations=0, beta=1.0, protect_others=protect)
        edit = sepme.fit_increments(mini_world, ["vangogh"], config, data=data)["vangogh"]
        assert edit.metadata["protected"] == ["", *(others if protect else [])]
        context = mini_world.embeddings(others)
        key = next(k for k in edit.deltas if k.endswith("to_k.weight"))
        weight = dict(unet.named_parameters())[key].detach()
        moved[protect] = float((context @ edit.deltas[key].T).norm() / (context @ weight.T).norm())
        target = mini_world.embeddings(["vangogh"])
        assert (target @ edit.deltas[key].T).norm() > 0                  # the erased name still moves
    assert moved[True] <= 1e-5 < moved[False]
    with pytest.raises(ValueError, match="protect_others"):
        sepme.SepMEConfig(protect_others="yes")
