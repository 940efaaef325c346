"""CFG reversal (Eq. (1), ANT) reverses exactly the sampling steps at or below t′, for every schedule length."""
import pytest
import torch

from unlearnkit.sampling import cfg_reversal_guidance
from unlearnkit.worlds.paper import sd14_ddim_scheduler

SCALE = 7.5


def ddim_timesteps(n):
    scheduler = sd14_ddim_scheduler()  # SD v1.4 betas, steps_offset 1, leading spacing
    scheduler.set_timesteps(n)
    return [int(t) for t in scheduler.timesteps]


def reversed_loop_indices(guidance, timesteps):
    """Indices ``i`` of the DDIM loop whose guided ε has the condition direction reversed."""
    eps_c, eps_u = torch.full((1, 4, 2, 2), 1.0), torch.full((1, 4, 2, 2), 0.25)
    plain, flipped = eps_u + SCALE * (eps_c - eps_u), eps_u - SCALE * (eps_c - eps_u)
    out = []
    for i, t in enumerate(timesteps):
        eps = guidance(eps_c, eps_u, t)
        if torch.allclose(eps, flipped):
            out.append(i)
        else:
            torch.testing.assert_close(eps, plain)
    return out


@pytest.mark.parametrize("n", [7, 10, 20, 25, 30, 50])
def test_exactly_the_last_t_prime_sampling_steps_are_reversed(n):
    timesteps = ddim_timesteps(n)
    assert len(timesteps) == n and timesteps == sorted(timesteps, reverse=True)
    for t_prime in range(n + 1):
        got = reversed_loop_indices(cfg_reversal_guidance(SCALE, t_prime, n), timesteps)
        # paper step of loop index i is n - i; sgn(t − t′) = −1 exactly when n - i <= t′: the last t′ steps
        assert got == list(range(n - t_prime, n)), f"N={n}, t'={t_prime}: reversed loop steps {got}"
        assert len(got) == t_prime


@pytest.mark.parametrize("n", [7, 30, 50])
def test_t_prime_zero_is_plain_cfg_and_t_prime_n_reverses_every_step(n):
    timesteps = ddim_timesteps(n)
    assert reversed_loop_indices(cfg_reversal_guidance(SCALE, 0, n), timesteps) == []
    assert reversed_loop_indices(cfg_reversal_guidance(SCALE, n, n), timesteps) == list(range(n))
