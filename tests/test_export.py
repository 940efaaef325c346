"""Export: an Edit becomes a diffusers LoRA or a diffusers folder that standard diffusers code loads exactly."""
import pytest
import torch

from unlearnkit.core.edits import Edit
from unlearnkit.export import export_diffusers, export_lora, lora_factors
from unlearnkit.core.params import select_parameters


@pytest.fixture
def pipe():
    from unlearnkit.worlds.mini import load_mini_pipeline

    return load_mini_pipeline()


def random_edit(unet, scope="xattn_kv", scale=0.01, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Edit({n: scale * torch.randn(p.shape, generator=g) for n, p in select_parameters(unet, scope).items()},
                name="random")


def test_full_rank_lora_loaded_by_diffusers_reproduces_the_edit(pipe, tmp_path):
    from unlearnkit.worlds.mini import load_mini_pipeline

    edit = random_edit(pipe.unet)
    factors = export_lora(edit, pipe, tmp_path)
    assert factors.relative_error < 1e-6 and not factors.dropped
    fresh = load_mini_pipeline()
    fresh.load_lora_weights(str(tmp_path))
    fresh.fuse_lora()
    fresh.unload_lora_weights()
    base, fused = dict(pipe.unet.named_parameters()), dict(fresh.unet.named_parameters())
    for name, value in base.items():
        expected = value + edit.deltas[name] if name in edit.deltas else value
        torch.testing.assert_close(fused[name], expected, atol=1e-6, rtol=0)


def test_truncated_rank_error_shrinks_with_rank(pipe):
    edit = random_edit(pipe.unet)
    errors = [lora_factors(edit, pipe.unet, rank).relative_error for rank in (4, 16, 48)]
    assert errors[0] > errors[1] > errors[2] > 0


def test_lora_refuses_non_linear_deltas_unless_dropped(pipe):
    edit = random_edit(pipe.unet, scope="xattn")            # includes the to_out bias
    with pytest.raises(ValueError, match="bias"):
        lora_factors(edit, pipe.unet)
    factors = lora_factors(edit, pipe.unet, drop_non_linear=True)
    assert factors.dropped and all(name.endswith("bias") for name in factors.dropped)


def test_bad_rank_and_empty_edit_are_rejected(pipe):
    with pytest.raises(ValueError, match="rank"):
        lora_factors(random_edit(pipe.unet), pipe.unet, rank=0)
    with pytest.raises(ValueError, match="empty"):
        lora_factors(Edit({}, name="nothing"), pipe.unet)


def test_diffusers_folder_holds_the_edited_model_and_leaves_the_pipe_unchanged(pipe, tmp_path):
    from diffusers import StableDiffusionPipeline

    before = {n: p.detach().clone() for n, p in pipe.unet.named_parameters()}
    edit = random_edit(pipe.unet, scope="xattn")
    export_diffusers(edit, pipe, tmp_path / "erased")
    for name, value in pipe.unet.named_parameters():
        assert torch.equal(value, before[name])
    loaded = StableDiffusionPipeline.from_pretrained(str(tmp_path / "erased"), local_files_only=True)
    for name, value in loaded.unet.named_parameters():
        expected = before[name] + edit.deltas[name] if name in edit.deltas else before[name]
        torch.testing.assert_close(value, expected, atol=1e-6, rtol=0)
