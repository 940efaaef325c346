"""Core diffusion layer: timestep conventions, one-call CFG, embedding cache, CFG reversal (ANT Eq. 1–2)."""
import pytest
import torch
from diffusers import DDIMScheduler

from unlearnkit.core.diffusion import (TextEmbeddingCache, guided_eps, paper_step_to_train_t, predict_eps,
                                  sample_train_timesteps, steps_taken_to_paper_step, train_t_to_paper_step)
from unlearnkit.sampling import cfg_guidance, cfg_reversal_guidance


def sd_ddim(n=50):
    s = DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                      clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    s.set_timesteps(n)
    return s


def test_paper_step_threshold_matches_ddim_steps_exactly():
    timesteps = sd_ddim().timesteps.tolist()
    assert timesteps[0] == 981 and timesteps[-1] == 1
    for t_prime in range(0, 51):
        threshold = paper_step_to_train_t(t_prime)
        for i, t in enumerate(timesteps):
            paper_step = 50 - i
            assert (t <= threshold) == (paper_step <= t_prime)
            assert train_t_to_paper_step(t) == paper_step


def test_ant_table6_t_prime_values():
    assert paper_step_to_train_t(43) == 860
    assert paper_step_to_train_t(40) == 800
    assert steps_taken_to_paper_step(10) == 40  # ANT Multiple's before_step=10 is t'=40


@pytest.mark.parametrize("bad", [-1, 51, 100.5])
def test_t_prime_outside_schedule_is_rejected(bad):
    with pytest.raises(ValueError, match="outside the 50-step schedule"):
        paper_step_to_train_t(bad)
    with pytest.raises(ValueError, match="outside"):
        cfg_reversal_guidance(7.5, bad)


def test_timestep_draws_stay_in_range():
    g = torch.Generator().manual_seed(0)
    t = sample_train_timesteps(1000, 860, 1000, generator=g)
    assert t.min() >= 860 and t.max() < 1000
    with pytest.raises(ValueError):
        sample_train_timesteps(3, 500, 500)


class CountingUNet(torch.nn.Module):
    """A linear 'UNet' that records how often and with what batch it is called."""

    def __init__(self):
        super().__init__()
        self.calls = []
        self.proj = torch.nn.Linear(8, 4)

    def forward(self, x, t, encoder_hidden_states):
        self.calls.append(x.shape[0])
        bias = self.proj(encoder_hidden_states.mean(1))[:, :, None, None]
        return type("Out", (), {"sample": x * 0.5 + bias + t.view(-1, 1, 1, 1) * 1e-3})()


def test_predict_eps_batches_cond_and_uncond_in_one_call():
    unet = CountingUNet()
    x = torch.randn(3, 4, 2, 2)
    cond, uncond = torch.randn(3, 5, 8), torch.randn(1, 5, 8)
    eps_c, eps_u = predict_eps(unet, x, 10, cond, uncond)
    assert unet.calls == [6]
    torch.testing.assert_close(eps_c, predict_eps(unet, x, 10, cond))
    torch.testing.assert_close(eps_u, predict_eps(unet, x, 10, uncond.expand(3, -1, -1)))


def test_guidance_hooks():
    eps_c, eps_u = torch.randn(2, 4, 2, 2), torch.randn(2, 4, 2, 2)
    torch.testing.assert_close(guided_eps(eps_c, eps_u, 1.0), eps_c)
    plain, never, always = cfg_guidance(7.5), cfg_reversal_guidance(7.5, 0), cfg_reversal_guidance(7.5, 50)
    mid = cfg_reversal_guidance(7.5, 43)
    for t in (981, 861, 841, 1):
        torch.testing.assert_close(never(eps_c, eps_u, t), plain(eps_c, eps_u, t))
        torch.testing.assert_close(always(eps_c, eps_u, t), eps_u - 7.5 * (eps_c - eps_u))
    torch.testing.assert_close(mid(eps_c, eps_u, 861), plain(eps_c, eps_u, 861))   # paper step 44 > t'
    torch.testing.assert_close(mid(eps_c, eps_u, 841), always(eps_c, eps_u, 841))  # paper step 43 <= t'


class FakeTokenizer:
    model_max_length = 4

    def __call__(self, prompts, **kw):
        ids = torch.tensor([[len(p), sum(map(ord, p)) % 7, 0, 0] for p in prompts])
        return type("Enc", (), {"input_ids": ids})()


class FakeEncoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(100, 8)
        self.calls = 0

    def forward(self, ids):
        self.calls += 1
        return (self.emb(ids),)


def test_embedding_cache_encodes_each_prompt_once():
    enc = FakeEncoder()
    cache = TextEmbeddingCache(FakeTokenizer(), enc)
    a = cache(["cat", "dog", "cat"])
    assert a.shape == (3, 4, 8) and enc.calls == 1
    b = cache(["dog", "cat"])
    assert enc.calls == 1 and len(cache) == 2
    torch.testing.assert_close(a[1], b[0])
    with pytest.raises(ValueError, match="empty"):
        cache([])
