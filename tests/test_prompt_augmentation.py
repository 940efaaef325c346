"""ANT's prompt augmentation (§3.3): a documented, seeded generator replaces GPT-4."""
import pytest

from unlearnkit.methods.parts.prompt_augmentation import DEFAULT_TEMPLATES, augmented_prompts, draw_prompts


def test_same_seed_same_prompts_other_seed_other_order():
    terms = ["nudity", "naked", "erotic", "sexual"]
    first = augmented_prompts(terms, 12, seed=3)
    assert first == augmented_prompts(terms, 12, seed=3)
    assert first != augmented_prompts(terms, 12, seed=4)
    assert len(set(first)) == 12 and all(any(t in p for t in terms) for p in first)


def test_every_combination_is_reachable_and_no_more():
    terms = ["a", "b"]
    everything = augmented_prompts(terms, 2 * len(DEFAULT_TEMPLATES), seed=0)
    assert sorted(everything) == sorted({t.format(term=x) for t in DEFAULT_TEMPLATES for x in terms})
    with pytest.raises(ValueError, match="num_prompts"):
        augmented_prompts(terms, 2 * len(DEFAULT_TEMPLATES) + 1)


@pytest.mark.parametrize("kwargs, match", [
    (dict(terms=[], num_prompts=1), "terms"),
    (dict(terms=["x"], num_prompts=0), "num_prompts"),
    (dict(terms=["x"], num_prompts=1, templates=["no placeholder"]), "placeholder"),
])
def test_bad_inputs_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        augmented_prompts(**kwargs)
    with pytest.raises(ValueError, match="no candidate"):
        draw_prompts([], 1)


def test_mini_world_augmentation_stays_in_its_vocabulary(mini_world):
    concept = mini_world.concept("nudity")
    prompts = mini_world.augmented_prompts(concept, 20, seed=0)
    assert len(set(prompts)) == 20 and prompts == mini_world.augmented_prompts(concept, 20, seed=0)
    from unlearnkit.worlds.mini import catalogue

    known_words = {word for text in catalogue.vocabulary() for word in text.replace(",", " ").split()}
    for prompt in prompts:
        assert set(prompt.replace(",", " ").split()) <= known_words, prompt
