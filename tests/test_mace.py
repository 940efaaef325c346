"""MACE-style mass erasure with ANT's loss: per-concept peft LoRAs and the closed-form fusion of ANT Eq. (7)."""
import pytest
import torch

from unlearnkit.methods.parts.closed_form import ClosedFormSolver
from unlearnkit.core.tokens import concept_start
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

    from unlearnkit.core.concepts import Concept
    from unlearnkit.core.diffusion import TextEmbeddingCache

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


def test_token_modes_select_exactly_the_intended_positions(mini_world):
    """"a portrait of anna adams" → [bos, a, portrait, of, anna, adams, eos, pad…]: "concept" keeps the name and
    every later position, "last_word" drops the first name too, "content" stops at the first end-of-text."""
    text, name = "a portrait of anna adams", "anna adams"
    tok = mini_world.pipe.tokenizer
    ids = tok(text).input_ids
    n_name = len(tok(name, add_special_tokens=False).input_ids)
    n_last = len(tok("adams", add_special_tokens=False).input_ids)
    start = next(i for i in range(len(ids)) if ids[i:i + n_name] == tok(name, add_special_tokens=False).input_ids)
    emb = mini_world.embeddings([text])[0]                                     # [L, d]
    assert concept_start(tok, text, name) == start
    assert concept_start(tok, text, name, last_word=True) == start + n_name - n_last
    torch.testing.assert_close(mace.token_embeddings(mini_world, [text], "concept", name), emb[start:])
    torch.testing.assert_close(mace.token_embeddings(mini_world, [text], "last_word", name),
                               emb[start + n_name - n_last:])
    torch.testing.assert_close(mace.token_embeddings(mini_world, [text], "content"), emb[:len(ids)])
    torch.testing.assert_close(mace.token_embeddings(mini_world, [text], "all"), emb)
    # a one-word name: "last_word" is "concept"
    one = "a painting in the style of vangogh"
    torch.testing.assert_close(mace.token_embeddings(mini_world, [one], "last_word", "vangogh"),
                               mace.token_embeddings(mini_world, [one], "concept", "vangogh"))
    # a prompt without the name keeps its end-of-text and padding
    other = "a portrait of a person"
    n_other = len(tok(other).input_ids)
    torch.testing.assert_close(mace.token_embeddings(mini_world, [other], "last_word", name),
                               mini_world.embeddings([other])[0, n_other - 1:])
    with pytest.raises(ValueError, match="needs the concept name"):
        mace.token_embeddings(mini_world, [text], "last_word")


def test_last_word_rows_are_never_shared_with_a_same_first_name_identity(mini_world):
    """Why "last_word" exists: in a causal text encoder the first-name row of "anna adams" equals that of
    "anna baker" (a preserved identity would pull the same vector back), and no "last_word" row does."""
    a = mace.token_embeddings(mini_world, ["a portrait of anna adams"], "concept", "anna adams")
    b = mace.token_embeddings(mini_world, ["a portrait of anna baker"], "concept", "anna baker")
    torch.testing.assert_close(a[0], b[0])                                     # "anna" after the same prefix
    a_last = mace.token_embeddings(mini_world, ["a portrait of anna adams"], "last_word", "anna adams")
    b_last = mace.token_embeddings(mini_world, ["a portrait of anna baker"], "last_word", "anna baker")
    assert torch.cdist(a_last, b_last).min() > 1e-3
    assert mace.FusionConfig(tokens="last_word").tokens == "last_word"
    with pytest.raises(ValueError, match="tokens"):
        mace.FusionConfig(tokens="first_word")


def test_attack_erased_identities_attacks_one_portrait_per_identity_with_the_given_sampler():
    """Notebook 05's attack columns: one ``attack_success_table`` call per identity on "a portrait of {name}"
    from its seed, with the notebook's sampler; rows renamed to the table's columns."""
    from types import SimpleNamespace

    import pandas as pd

    from unlearnkit.experiments import mass_fusion
    from unlearnkit.sampling import SamplerSettings

    world = SimpleNamespace(sampler=SamplerSettings(50, 5.0), concept=lambda n: f"concept:{n}")
    calls = []

    def fake_attack(w, models, concept, prompts, seeds, config, cache_dir=None):
        calls.append((w.sampler, concept, prompts, seeds))
        t = pd.DataFrame([{"method": m, "n_prompts": 1, "plain_rate": 1.0, "asr_ring": 0.5, "asr_soft": 0.0,
                           "asr_soft_projected": 0.0} for m in models])
        t.attrs["seconds"] = {"ring": 1.0, "soft:orig": 2.0}
        return t

    short = SamplerSettings(20, 5.0)
    table = mass_fusion.attack_erased_identities(world, {"orig": None}, ["anna adams", "ben clark"], [100, 101],
                                                 settings=short, attack=fake_attack)
    assert [c[1:] for c in calls] == [("concept:anna adams", ["a portrait of anna adams"], [100]),
                                      ("concept:ben clark", ["a portrait of ben clark"], [101])]
    assert all(c[0] == short for c in calls) and world.sampler == SamplerSettings(50, 5.0)   # world untouched
    assert list(table.columns) == ["identity", "method", "n_prompts", "plain rate", "ASR ring", "ASR soft",
                                   "ASR soft (words)"]
    assert table.attrs["seconds"] == {"ring": 2.0, "soft": 4.0}
    assert table.attrs["prompts"] == ["a portrait of anna adams", "a portrait of ben clark"]
    with pytest.raises(ValueError, match="one seed per identity"):
        mass_fusion.attack_erased_identities(world, {"orig": None}, ["anna adams"], [1, 2], attack=fake_attack)


def test_preserved_concept_texts_are_the_other_concepts_of_the_erased_kind(mini_world):
    erased = mini_world.concept("anna adams")
    texts = mace.preserved_concept_texts(mini_world, [erased])
    others = [n for n in mini_world.concepts("identity") if n != "anna adams"]
    assert len(texts) == len({p for n in others for p in mini_world.concept(n).prompts[:2]})
    assert not any("anna adams" in t for t in texts)
    assert any("anna baker" in t for t in texts)          # a same-first-name identity is preserved
    assert not any(mini_world.concept(o).prompts[0] in texts for o in mini_world.concepts("object"))


def test_preserve_others_keeps_the_other_identities_keys_where_captions_alone_do_not(mini_world):
    """Eq. (7) with the other identities in the prior: their keys/values move far less than with captions only."""
    concept = mini_world.concept("anna adams")
    cfg = mace.MACEConfig(iterations=3, lr=1e-2, trajectory_seeds=1, num_inference_steps=10, t_prime=8)
    lora, _ = mace.train_concept_lora(mini_world, concept, cfg)
    grams = mace.concept_grams(mini_world, [concept], "concept")
    captions = mace.prior_gram(mini_world, mace.default_prior_texts(mini_world), "concept")
    others = mace.prior_gram(mini_world, mace.preserved_concept_texts(mini_world, [concept]), "concept")
    kept = mace.token_embeddings(mini_world, mini_world.concept("ben adams").prompts[:2], "concept", "ben adams").double()
    params = dict(mini_world.pipe.unet.named_parameters())

    def kept_drift(prior):
        edit, _ = mace.fuse_loras(mini_world.pipe.unet, [lora], grams, prior,
                                  mace.FusionConfig(beta=4.0, lora_scale=36.0, tokens="concept"))
        return sum(float((kept @ edit.deltas[f"{m}.weight"].double().T).norm()) for m in lora.modules)

    assert kept_drift(captions + 2.5 * others) < 0.5 * kept_drift(captions)
    with pytest.raises(ValueError, match="preserve_others"):
        mace.FusionConfig(preserve_others=-1.0)
