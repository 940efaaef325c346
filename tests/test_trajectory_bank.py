"""The frozen trajectory bank: the same points and targets as sampling the trajectory at each update."""
import pytest
import torch

from unlearnkit.core.diffusion import predict_eps
from unlearnkit.methods import ant
from unlearnkit.sampling import SamplerSettings, cfg_guidance, sample_latents
from unlearnkit.methods.parts.trajectory_bank import sample_trajectory_bank


def test_bank_points_equal_a_fresh_trajectory_and_its_frozen_predictions(mini_world):
    pipe, steps, guidance = mini_world.pipe, 10, 5.0
    runs = [("a nude person", 3), ("a naked figure", 4)]
    bank = sample_trajectory_bank(mini_world, {"nudity": runs}, steps, guidance)["nudity"]
    assert len(bank) == 2 and bank.x.shape[:2] == (2, steps)
    _, snaps = sample_latents(pipe, [p for p, _ in runs], [s for _, s in runs], SamplerSettings(steps, guidance),
                              guidance=cfg_guidance(guidance), embeddings=mini_world.embeddings, snapshot_steps=(7, 2))
    for paper_step in (7, 2):
        x, t, eps_c, eps_u = bank.gather([0, 1], paper_step)
        assert torch.allclose(x, snaps[paper_step][0], atol=1e-5)
        assert int(t[0]) == snaps[paper_step][1]
        with torch.no_grad():
            ref_c, ref_u = predict_eps(pipe.unet, x, t, mini_world.embeddings([p for p, _ in runs]),
                                       mini_world.embeddings([""]))
        assert torch.allclose(eps_c, ref_c, atol=1e-5) and torch.allclose(eps_u, ref_u, atol=1e-5)
    with pytest.raises(ValueError, match="paper_step"):
        bank.gather([0], 0)
    with pytest.raises(ValueError, match="non-empty"):
        sample_trajectory_bank(mini_world, {"nudity": []}, steps, guidance)


def test_ant_with_a_bank_trains_and_leaves_the_world_unchanged(mini_world):
    with pytest.raises(ValueError, match="trajectory_bank"):
        ant.ANTConfig(batch_size=4, trajectory_bank=2)
    cfg = ant.ANTConfig(iterations=3, batch_size=2, num_inference_steps=10, t_prime=8, trajectory_guidance=5.0,
                        lr=1e-3, scope="xattn_kv", trajectory_bank=4)
    unet = mini_world.pipe.unet
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    erasure = ant.fit(mini_world, [mini_world.concept("nudity")], cfg)
    edit, log = erasure.edit, erasure.log
    assert erasure.info["trajectory_bank"] is not None and len(erasure.info["trajectory_bank"]) == 4
    assert all(torch.equal(before[k], v) for k, v in unet.state_dict().items())
    assert len(log) == 3 and all(entry["t_early"] > 800 >= entry["t_late"] for entry in log)
    assert edit.num_changed() > 0 and all(".attn2.to_k." in n or ".attn2.to_v." in n for n in edit.deltas)
