"""Parameter scopes on the SD v1.4 architecture (random weights, 16×16 latent)."""
import hashlib

import pytest
import torch
import torch.nn.functional as F

from unlearnkit.core.diffusion import TextEmbeddingCache, predict_eps, q_sample, sample_train_timesteps
from unlearnkit.core.params import (
    SCOPES,
    count_parameters,
    cross_attention_modules,
    scope_names,
    select_parameters,
)

SD14_XATTN_KV_PARAMETERS = 19_169_280  # Σ over 16 attn2 modules of 2 · inner_dim · 768
SD14_UNET_PARAMETERS = 859_520_964


@pytest.mark.parametrize(
    "name, in_scopes",
    [
        ("down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight",
         {"xattn", "xattn_kv", "attn_all", "unet"}),
        ("mid_block.attentions.0.transformer_blocks.0.attn2.to_out.0.bias", {"xattn", "attn_all", "unet"}),
        ("up_blocks.3.attentions.2.transformer_blocks.0.attn2.to_q.weight", {"xattn", "attn_all", "unet"}),
        ("up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_v.weight", {"attn_all", "unet", "non_xattn"}),
        ("up_blocks.1.attentions.0.transformer_blocks.0.norm2.weight", {"unet", "non_xattn"}),
        ("down_blocks.1.attentions.0.proj_in.weight", {"unet", "non_xattn"}),
        ("time_embedding.linear_1.weight", {"unet", "non_xattn"}),
    ],
)
def test_scope_predicates_on_diffusers_names(name, in_scopes):
    assert {scope for scope, predicate in SCOPES.items() if predicate(name)} == in_scopes


def test_unknown_scope_names_the_bad_value_and_the_accepted_ones():
    unet = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match=r"'cross_attn'.*xattn_kv"):
        select_parameters(unet, "cross_attn")
    with pytest.raises(ValueError, match="xattn"):
        count_parameters(unet, None)
    assert scope_names() == ["xattn", "xattn_kv", "attn_all", "unet", "non_xattn"]


def test_cross_attention_modules_of_sd14(sd14_pipe):
    modules = cross_attention_modules(sd14_pipe.unet)
    assert len(modules) == 16
    assert all(name.endswith("transformer_blocks.0.attn2") for name in modules)
    for module in modules.values():
        for projection in (module.to_k, module.to_v):
            assert projection.weight.shape[1] == 768
            assert projection.weight.shape[0] in (320, 640, 1280)
            assert projection.bias is None
    widths = [module.to_k.weight.shape[0] for module in modules.values()]
    assert sorted(widths) == sorted([320] * 5 + [640] * 5 + [1280] * 6)


def test_scope_counts_on_sd14(sd14_pipe):
    unet = sd14_pipe.unet
    counts = {scope: count_parameters(unet, scope) for scope in scope_names()}
    assert counts["xattn_kv"] == SD14_XATTN_KV_PARAMETERS
    assert counts["unet"] == SD14_UNET_PARAMETERS == sum(p.numel() for p in unet.parameters())
    assert counts["non_xattn"] + counts["xattn"] == counts["unet"]
    assert counts["xattn_kv"] < counts["xattn"] < counts["attn_all"] < counts["unet"]

    selected = {scope: select_parameters(unet, scope) for scope in scope_names()}
    assert set(selected["xattn_kv"]) <= set(selected["xattn"]) <= set(selected["attn_all"]) <= set(selected["unet"])
    assert not set(selected["xattn"]) & set(selected["non_xattn"])
    assert len(selected["xattn_kv"]) == 32 and len(selected["xattn"]) == 16 * 5
    order = [name for name, _ in unet.named_parameters()]
    for params in selected.values():
        names = list(params)
        assert names == sorted(names, key=order.index)


def _fingerprints(named_params):
    return {
        name: hashlib.sha1(param.detach().contiguous().numpy(), usedforsecurity=False).digest()
        for name, param in named_params
    }


def test_one_adam_step_on_xattn_kv_changes_only_that_scope(sd14_pipe):
    unet, scheduler = sd14_pipe.unet, sd14_pipe.scheduler
    trained = select_parameters(unet, "xattn_kv")
    frozen_before = _fingerprints((n, p) for n, p in unet.named_parameters() if n not in trained)
    trained_before = {name: param.detach().clone() for name, param in trained.items()}
    requires_grad_before = {name: param.requires_grad for name, param in unet.named_parameters()}

    embeddings = TextEmbeddingCache(sd14_pipe.tokenizer, sd14_pipe.text_encoder)
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(1, 4, 16, 16, generator=generator)
    noise = torch.randn(1, 4, 16, 16, generator=generator)
    t = sample_train_timesteps(1, 0, scheduler.config.num_train_timesteps, generator=generator)
    try:
        unet.requires_grad_(False)
        for param in trained.values():
            param.requires_grad_(True)
        optimizer = torch.optim.Adam(trained.values(), lr=1e-3)
        eps = predict_eps(unet, q_sample(scheduler, x0, t, noise), t, embeddings(["a photo of a church"]))
        loss = F.mse_loss(eps, noise)
        loss.backward()
        optimizer.step()

        assert torch.isfinite(loss)
        assert all(not torch.equal(param, trained_before[name]) for name, param in trained.items())
        frozen_after = _fingerprints((n, p) for n, p in unet.named_parameters() if n not in trained)
        assert frozen_after == frozen_before
    finally:  # the pipeline is shared by the whole session: put it back as it was
        with torch.no_grad():
            for name, param in trained.items():
                param.copy_(trained_before[name])
                param.grad = None
        for name, param in unet.named_parameters():
            param.requires_grad_(requires_grad_before[name])
