import pytest


@pytest.fixture(scope="session")
def sd14_pipe():
    """SD v1.4 architecture with random weights at a 16×16 latent, built once per session (~17 s on 2 cores)."""
    from unlearnkit.worlds.paper import build_sd14_architecture

    return build_sd14_architecture(sample_size=16, seed=0)


@pytest.fixture(scope="session")
def mini_world():
    """The shipped mini world (pipeline + evaluators), loaded once per session."""
    from unlearnkit.worlds.mini import load_mini_world

    return load_mini_world("cpu")
