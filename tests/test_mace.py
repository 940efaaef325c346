"""MACE-style mass erasure with ANT's loss: per-concept peft LoRAs and the closed-form fusion of ANT Eq. (7)."""
import pytest
import torch

from unlearnkit.fusion import ClosedFormSolver
from unlearnkit.methods import mace


def _random_problem(d_in=8, d_out=5, q=3, r=2, n_f=6, n_p=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(d_out, d_in, generator=g, dtype=torch.float64)
    A = [torch.randn(r, d_in, generator=g, dtype=torch.float64) for _ in range(q)]
    B = [torch.randn(d_out, r, generator=g, dtype=torch.float64) for _ in range(q)]
    E_f = [torch.randn(n_f, d_in, generator=g, dtype=torch.float64) for _ in range(q)]
    E_p = torch.randn(n_p, d_in, generator=g, dtype=torch.float64)
    return W, A, B, E_f, E_p


class _Layer(torch.nn.Module):
    def __init__(self, W):
        super().__init__()
        self.proj = torch.nn.Linear(W.shape[1], W.shape[0], bias=False, dtype=torch.float64)
        with torch.no_grad():
            self.proj.weight.copy_(W)


def _fuse(W, A, B, E_f, E_p, beta, lam=0.0, scale=1.0):
    loras = [mace.ConceptLoRA(f"c{i}", {"proj": a}, {"proj": b}) for i, (a, b) in enumerate(zip(A, B))]
    grams = {f"c{i}": mace.gram_matrix(e) for i, e in enumerate(E_f)}
    edit, _ = mace.fuse_loras(_Layer(W), loras, grams, mace.gram_matrix(E_p),
                              mace.FusionConfig(beta=beta, lam=lam, lora_scale=scale))
    return W + edit.deltas["proj.weight"]


@pytest.mark.parametrize("beta", [0.0, 0.3, 5.0])
def test_fusion_satisfies_normal_equations_and_matches_lstsq(beta):
    W, A, B, E_f, E_p = _random_problem(n_f=10)
    W_star = _fuse(W, A, B, E_f, E_p, beta)
    # normal equations of Eq. (7): W*(Σ G_i + β G_p) = Σ (W + ΔW_i) G_i + β W G_p
    G = [e.T @ e for e in E_f]
    Gp = E_p.T @ E_p
    lhs = W_star @ (sum(G) + beta * Gp)
    rhs = sum((W + b @ a) @ g for a, b, g in zip(A, B, G)) + beta * W @ Gp
    torch.testing.assert_close(lhs, rhs, rtol=1e-9, atol=1e-9)
    # the same minimiser from an explicit stacked least-squares problem
    rows = [e for e in E_f] + [beta ** 0.5 * E_p]
    targets = [e @ (W + b @ a).T for e, a, b in zip(E_f, A, B)] + [beta ** 0.5 * E_p @ W.T]
    X = torch.linalg.lstsq(torch.cat(rows), torch.cat(targets)).solution.T
    torch.testing.assert_close(W_star, X, rtol=1e-8, atol=1e-8)


def test_large_beta_keeps_preserved_directions():
    W, A, B, E_f, E_p = _random_problem(n_p=4)   # 4 preservation directions in R^8
    errors = []
    for beta in (1.0, 1e2, 1e4, 1e6):
        W_star = _fuse(W, A, B, E_f, E_p, beta)
        errors.append(float(torch.linalg.matrix_norm((W_star - W) @ E_p.T)))
    assert all(b < a for a, b in zip(errors, errors[1:]))
    assert errors[-1] < 1e-4 * errors[0]


def test_one_lora_beta_zero_reproduces_the_lora_on_erased_embeddings():
    W, A, B, E_f, E_p = _random_problem(q=1, n_f=4)   # 4 erased embeddings: underdetermined, λ keeps it solvable
    W_star = _fuse(W, A[:1], B[:1], E_f[:1], E_p, beta=0.0, lam=1e-9, scale=2.0)
    torch.testing.assert_close(E_f[0] @ W_star.T, E_f[0] @ (W + 2.0 * B[0] @ A[0]).T, rtol=1e-6, atol=1e-6)


def test_solver_extra_mat1_is_an_explicit_target():
    W, A, B, E_f, _ = _random_problem(q=1, n_f=12)
    a, b, e = A[0], B[0], E_f[0]
    explicit = ClosedFormSolver(0.0).add_targets(e, e @ (W + b @ a).T).solve(W)
    g = e.T @ e
    split = ClosedFormSolver(0.0).add_gram(g, mapped=g).solve(W, mat1=b @ a @ g)
    torch.testing.assert_close(split, explicit)


def test_config_validation():
    with pytest.raises(ValueError, match="objective"):
        mace.MACEConfig(objective="esd")
    with pytest.raises(ValueError, match="rank"):
        mace.MACEConfig(rank=0)
    with pytest.raises(ValueError, match="beta"):
        mace.FusionConfig(beta=-1)
    assert mace.MACEConfig(weights="A").weights.erase_span == "all"


def test_shards_partition_the_concept_list(mini_world, tmp_path):
    concepts = [mini_world.concept(n) for n in ("anna adams", "ben clark", "clara baker")]
    cfg = mace.MACEConfig(iterations=1, trajectory_seeds=1, num_inference_steps=10, t_prime=8)
    got = [set(mace.train_concept_loras(mini_world, concepts, cfg, tmp_path, shard=(i, 2))) for i in range(2)]
    assert got[0] == {"anna adams", "clara baker"} and got[1] == {"ben clark"}
    loaded = mace.load_concept_loras(tmp_path, concepts)
    assert set(loaded) == {c.name for c in concepts}
    with pytest.raises(ValueError, match="shard"):
        mace.train_concept_loras(mini_world, concepts, cfg, tmp_path, shard=(2, 2))


@pytest.mark.parametrize("objective", ["ant", "mace"])
def test_lora_training_leaves_base_weights_bit_identical(mini_world, objective):
    unet = mini_world.pipe.unet
    before = {n: p.detach().clone() for n, p in unet.named_parameters()}
    flags = {n: p.requires_grad for n, p in unet.named_parameters()}
    cfg = mace.MACEConfig(objective=objective, iterations=3, lr=1e-2, trajectory_seeds=2, num_inference_steps=10,
                          t_prime=8)
    lora, log = mace.train_concept_lora(mini_world, mini_world.concept("anna adams"), cfg)
    assert [n for n, _ in unet.named_parameters()] == list(before)      # adapter fully unloaded
    assert all(torch.equal(before[n], p) for n, p in unet.named_parameters())
    assert {n: p.requires_grad for n, p in unet.named_parameters()} == flags
    assert set(lora.modules) == set(mace.lora_target_modules(unet))
    assert any(float(lora.delta(m).abs().sum()) > 0 for m in lora.modules)  # it did learn something
    assert len(log) == 3 and all(torch.isfinite(torch.tensor(r["loss"])) for r in log)


def test_lora_file_round_trip_and_diffusers_loads_it(mini_world, tmp_path):
    cfg = mace.MACEConfig(iterations=2, lr=1e-2, trajectory_seeds=1, num_inference_steps=10, t_prime=8)
    lora, _ = mace.train_concept_lora(mini_world, mini_world.concept("ben clark"), cfg)
    mace.export_lora_file(lora, tmp_path / "lora")
    again = mace.ConceptLoRA.load(tmp_path / "lora")
    for m in lora.modules:
        torch.testing.assert_close(again.delta(m), lora.delta(m))
    pipe = mini_world.pipe
    w_name = f"{lora.modules[0]}.weight"
    original = dict(pipe.unet.named_parameters())[w_name].detach().clone()
    pipe.load_lora_weights(str(tmp_path / "lora"), adapter_name="check")
    try:
        pipe.fuse_lora()
        fused = dict(pipe.unet.named_parameters())
        key = w_name if w_name in fused else w_name.replace(".weight", ".base_layer.weight")
        torch.testing.assert_close(fused[key].detach(), original + lora.delta(lora.modules[0]), rtol=1e-5, atol=1e-6)
        pipe.unfuse_lora()
    finally:
        pipe.unet.unload_lora()
    torch.testing.assert_close(dict(pipe.unet.named_parameters())[w_name].detach(), original)


def test_fusing_100_random_loras_on_the_mini_unet(mini_world):
    unet = mini_world.pipe.unet
    modules = mace.lora_target_modules(unet)
    params = dict(unet.named_parameters())
    g = torch.Generator().manual_seed(0)
    loras, grams = [], {}
    d = params[f"{modules[0]}.weight"].shape[1]
    for i in range(100):
        A = {m: torch.randn(1, d, generator=g) * 0.1 for m in modules}
        B = {m: torch.randn(params[f"{m}.weight"].shape[0], 1, generator=g) * 0.1 for m in modules}
        loras.append(mace.ConceptLoRA(f"c{i}", A, B))
        e = torch.randn(16, d, generator=g)
        grams[f"c{i}"] = mace.gram_matrix(e)
    prior = mace.gram_matrix(torch.randn(400, d, generator=g))
    edit, info = mace.fuse_loras(unet, loras, grams, prior, mace.FusionConfig(beta=1.0))
    assert info["num_loras"] == 100 and info["num_layers"] == len(modules)
    assert set(edit.deltas) == {f"{m}.weight" for m in modules}
    assert all(torch.isfinite(v).all() for v in edit.deltas.values())


def test_fusion_on_the_mini_world_erases_towards_the_lora(mini_world):
    """End to end on real text embeddings: after fusion the erased prompts' keys/values move towards W + ΔW."""
    concept = mini_world.concept("anna adams")
    cfg = mace.MACEConfig(iterations=3, lr=1e-2, trajectory_seeds=1, num_inference_steps=10, t_prime=8)
    lora, _ = mace.train_concept_lora(mini_world, concept, cfg)
    grams = mace.concept_grams(mini_world, [concept])
    edit, _ = mace.fuse_loras(mini_world.pipe.unet, [lora], grams, None, mace.FusionConfig(beta=0.0, lam=1e-6))
    e = mace.token_embeddings(mini_world, concept.prompts).double()
    params = dict(mini_world.pipe.unet.named_parameters())
    for m in lora.modules[:4]:
        W = params[f"{m}.weight"].detach().double()
        want = e @ (W + lora.delta(m).double()).T
        got = e @ (W + edit.deltas[f"{m}.weight"].double()).T
        assert float((got - want).norm() / (want - e @ W.T).norm().clamp_min(1e-12)) < 1e-2


def test_one_lora_step_on_the_sd14_architecture(sd14_pipe):
    from types import SimpleNamespace

    from unlearnkit.concepts import Concept
    from unlearnkit.diffusion import TextEmbeddingCache

    world = SimpleNamespace(pipe=sd14_pipe, name="sd14-random",
                            embeddings=TextEmbeddingCache(sd14_pipe.tokenizer, sd14_pipe.text_encoder))
    unet = sd14_pipe.unet
    assert len(mace.lora_target_modules(unet)) == 32      # 16 cross-attention layers × (to_k, to_v)
    probe = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"
    before = dict(unet.named_parameters())[probe].detach().clone()
    concept = Concept("a celebrity", ("a portrait of a celebrity",), kind="identity")
    cfg = mace.MACEConfig(iterations=1, trajectory_seeds=1, num_inference_steps=4, t_prime=2)
    lora, log = mace.train_concept_lora(world, concept, cfg)
    assert lora.A[probe[:-len(".weight")]].shape == (1, 768)
    assert torch.isfinite(torch.tensor(log[0]["loss"]))
    assert torch.equal(dict(unet.named_parameters())[probe].detach(), before)
