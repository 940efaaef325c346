"""Adversarial prompt attacks (issue 10): concept direction, budgets, seeding, validation, and one short run of
each attack on the mini world."""
import numpy as np
import pytest
import torch

from unlearnkit.attacks import (AttackConfig, ConceptVectorConfig, SoftPromptConfig, attack_record,
                                attack_success_table, concept_direction, concept_prompt_pairs, concept_vector_attack,
                                soft_prompt_attack, text_encoder_fn, vocabulary_words)
from unlearnkit.attacks.soft_prompt import prefixed_token_ids
from unlearnkit.attacks.text import PromptEmbeddings
from unlearnkit.core.concepts import Concept
from unlearnkit.sampling import SamplerSettings

L, D = 6, 4
CONCEPT_VECTOR = torch.tensor([1.0, -2.0, 0.5, 3.0])
WORDS = ["a", "photo", "of", "fish", "tench", "dog"]


def fake_encoder(texts):
    """A constructed encoder: every word adds its own vector at every position; 'tench' adds CONCEPT_VECTOR."""
    table = {w: torch.full((D,), 0.1 * i) for i, w in enumerate(WORDS)}
    table["tench"] = CONCEPT_VECTOR + table["fish"]
    out = torch.zeros(len(texts), L, D)
    for i, text in enumerate(texts):
        for word in text.split():
            out[i] += table[word]
    return out


def test_concept_direction_recovers_the_known_vector():
    pairs = [("a photo of a tench", "a photo of a fish"), ("tench", "fish")]
    direction = concept_direction(fake_encoder, pairs)
    assert direction.shape == (L, D)
    torch.testing.assert_close(direction, CONCEPT_VECTOR.expand(L, D))


def test_concept_prompt_pairs_align_one_word():
    concept = Concept("tench", ("a photo of a tench", "tench", "a tench swimming"), anchor="fish",
                      anchor_prompts=("a photo of a fish", "fish"))
    assert concept_prompt_pairs(concept) == [("a photo of a tench", "a photo of a fish"), ("tench", "fish"),
                                             ("a tench swimming", "a fish swimming")]
    unsafe = Concept("nudity", ("a nude person", "a person in a sauna"), anchor="a dressed person",
                     anchor_prompts=("a dressed person",))
    assert concept_prompt_pairs(unsafe) == [("a nude person", "a dressed person")]


def test_concept_vector_search_moves_along_the_direction_and_is_seeded():
    direction = concept_direction(fake_encoder, [("tench", "fish")])
    config = ConceptVectorConfig(eta=2.0, budget=8, extra_words=2)
    first = concept_vector_attack(fake_encoder, ["a photo of a fish"], [3], direction, WORDS, config)
    again = concept_vector_attack(fake_encoder, ["a photo of a fish"], [3], direction, WORDS, config)
    assert first.prompts == again.prompts
    assert first.distances[0] < first.start_distances[0]
    assert "tench" in first.prompts[0].split()   # the only word that moves the embedding along ĉ


def test_zero_budget_returns_the_original_prompts():
    direction = concept_direction(fake_encoder, [("tench", "fish")])
    result = concept_vector_attack(fake_encoder, ["a photo of a fish"], [0], direction, WORDS,
                                   ConceptVectorConfig(budget=0))
    assert result.prompts == ["a photo of a fish"]


@pytest.mark.parametrize("make", [
    lambda: ConceptVectorConfig(budget=-1),
    lambda: ConceptVectorConfig(extra_words=-2),
    lambda: SoftPromptConfig(steps=-1),
    lambda: SoftPromptConfig(prefix_tokens=-1),
    lambda: SoftPromptConfig(noise_samples=0),
    lambda: SoftPromptConfig(projection="round"),
])
def test_bad_budgets_raise(make):
    with pytest.raises(ValueError):
        make()


def test_empty_prompts_raise_before_compute():
    def must_not_run(texts):
        raise AssertionError("the encoder ran before the input check")

    with pytest.raises(ValueError, match="prompts is empty"):
        concept_vector_attack(must_not_run, [], [], torch.zeros(L, D), WORDS)
    with pytest.raises(ValueError, match="one seed per prompt"):
        concept_vector_attack(must_not_run, ["a fish"], [1, 2], torch.zeros(L, D), WORDS)
    with pytest.raises(ValueError, match="pairs is empty"):
        concept_direction(must_not_run, [])
    with pytest.raises(ValueError, match="prompts is empty"):
        soft_prompt_attack(None, None, [], [])


# --- mini world ---------------------------------------------------------------------------------------------------
SHORT = SamplerSettings(num_inference_steps=4, guidance_scale=5.0)


def test_prefixed_ids_match_the_tokenizer_without_prefix(mini_world):
    tokenizer = mini_world.pipe.tokenizer
    prompts = ["a photo of a tench", "tench"]
    expected = mini_world.embeddings.token_ids(prompts)
    assert torch.equal(prefixed_token_ids(tokenizer, prompts, 0, placeholder_id=0), expected)


def test_soft_prompt_zero_budget_is_the_plain_prompt(mini_world):
    result = soft_prompt_attack(mini_world.pipe, None, ["a photo of a tench"], [0], SoftPromptConfig(steps=0))
    assert result.keys == ["a photo of a tench"] and result.projected_prompts == ["a photo of a tench"]
    torch.testing.assert_close(result.embeddings, mini_world.embeddings(["a photo of a tench"]))


def test_soft_prompt_attack_runs_and_is_seeded(mini_world):
    prompts, seeds = ["a photo of a tench", "a tench"], [5, 6]
    config = SoftPromptConfig(prefix_tokens=2, steps=2, noise_samples=1)
    targets = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    first = soft_prompt_attack(mini_world.pipe, None, prompts, seeds, config, SHORT, targets)
    again = soft_prompt_attack(mini_world.pipe, None, prompts, seeds, config, SHORT, targets)
    assert torch.equal(first.prefix_embeddings, again.prefix_embeddings)
    assert first.projected_prompts == again.projected_prompts and first.keys == again.keys
    assert first.embeddings.shape == (2, 16, 128) and len(first.losses) == 2
    assert all(p.endswith(q) and len(p.split()) == len(q.split()) + 2
               for p, q in zip(first.projected_prompts, prompts))
    table = first.table(mini_world.embeddings)
    assert isinstance(table, PromptEmbeddings)
    torch.testing.assert_close(table(first.keys[:1])[0], first.embeddings[0].to(table(first.keys[:1]).device))
    # the model is left as it was: no gradients, flags restored
    assert all(p.grad is None for p in mini_world.pipe.unet.parameters())


def test_concept_vector_attack_on_the_mini_world(mini_world):
    tokenizer, encoder = mini_world.pipe.tokenizer, mini_world.pipe.text_encoder
    words = vocabulary_words(tokenizer)
    assert "tench" in words and "<|endoftext|>" not in words
    assert "tench" not in vocabulary_words(tokenizer, exclude=["tench"])
    encode = text_encoder_fn(tokenizer, encoder)
    direction = concept_direction(encode, concept_prompt_pairs(mini_world.concept("tench")))
    config = ConceptVectorConfig(budget=2)
    first = concept_vector_attack(encode, ["a photo of a fish"], [1], direction, words, config)
    again = concept_vector_attack(encode, ["a photo of a fish"], [1], direction, words, config)
    assert first.prompts == again.prompts


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_the_concept_vector_search_finds_the_word_that_moves_along_the_concept(seed):
    """A bag-of-words encoder f(P) = Σ e_w in which "tinca" encodes as "tench": ĉ = e_tench − e_fish, and the only
    prompt at f("a photo of a fish") + ĉ that avoids the excluded "tench" is "a photo of a tinca" (in any order)."""
    vocabulary = ["a", "photo", "of", "fish", "tench", "tinca", "water", "red"]
    vectors = torch.eye(len(vocabulary))
    vectors[vocabulary.index("tinca")] = vectors[vocabulary.index("tench")]

    def encode(texts):   # [B, 1, d]
        return torch.stack([sum((vectors[vocabulary.index(w)] for w in t.split()), torch.zeros(len(vocabulary)))
                            for t in texts])[:, None]

    direction = concept_direction(encode, [("a photo of a tench", "a photo of a fish")])
    torch.testing.assert_close(direction[0], vectors[vocabulary.index("tench")] - vectors[vocabulary.index("fish")])
    config = ConceptVectorConfig(eta=1.0, budget=8, extra_words=3, exclude_words=("tench",))
    result = concept_vector_attack(encode, ["a photo of a fish"], [seed], direction, vocabulary, config)
    assert sorted(result.prompts[0].split()) == sorted("a photo of a tinca".split())
    assert result.start_distances[0] == pytest.approx(2 / len(vocabulary))
    assert result.distances[0] == pytest.approx(0.0, abs=1e-12)
    unchanged = concept_vector_attack(encode, ["a photo of a fish"], [seed], direction, vocabulary,
                                      ConceptVectorConfig(eta=1.0, budget=0))
    assert unchanged.prompts == ["a photo of a fish"] and unchanged.distances == unchanged.start_distances


def test_attack_success_table_on_the_mini_world(mini_world):
    concept = mini_world.concept("tench")
    config = AttackConfig(ring=ConceptVectorConfig(budget=1), soft=SoftPromptConfig(prefix_tokens=1, steps=1,
                                                                                   noise_samples=1))
    world = _with_sampler(mini_world, SHORT)
    table = attack_success_table(world, {"original": None}, concept, ["a photo of a tench"], [0], config)
    assert list(table.columns) == ["method", "n_prompts", "plain_rate", "asr_ring", "asr_soft", "asr_soft_projected"]
    assert table.loc[0, "method"] == "original" and table.loc[0, "n_prompts"] == 1
    rates = table[["plain_rate", "asr_ring", "asr_soft", "asr_soft_projected"]].to_numpy()
    assert np.all((rates >= 0) & (rates <= 1))
    record = attack_record(config, ["a photo of a tench"], [0])
    assert record["attack"]["ring"]["budget"] == 1 and record["attack_seeds"] == [0]
    with pytest.raises(ValueError, match="edits"):
        attack_success_table(world, {}, concept, ["a photo of a tench"], [0], config)


def _with_sampler(world, sampler):
    """The mini world with a shorter sampler (a shallow copy: the pipeline and evaluators are shared)."""
    import copy

    short = copy.copy(world)
    short.sampler = sampler
    return short
