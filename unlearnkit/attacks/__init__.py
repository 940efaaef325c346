"""Adversarial prompt attacks against erased models, used as a robustness metric (attack success rate).

* :mod:`.concept_vector` — Ring-A-Bell-style: a concept direction from the original text encoder and a discrete
  word search along it; black-box with respect to the erased model.
* :mod:`.soft_prompt` — UnlearnDiffAtk-style: soft prefix tokens optimised against the erased model's denoising
  loss on images of the concept, optionally projected to words.
* :mod:`.success` — the ASR table beside the plain-prompt detection rate.
"""
from unlearnkit.attacks.concept_vector import (ConceptVectorConfig, ConceptVectorResult, concept_direction, concept_prompt_pairs,
                             concept_vector_attack)
from unlearnkit.attacks.soft_prompt import SoftPromptConfig, SoftPromptResult, soft_prompt_attack
from unlearnkit.attacks.success import AttackConfig, attack_record, attack_success_table, detect_concept
from unlearnkit.attacks.text import PromptEmbeddings, text_encoder_fn, vocabulary_words

__all__ = [
    "ConceptVectorConfig", "ConceptVectorResult", "concept_direction", "concept_prompt_pairs", "concept_vector_attack",
    "SoftPromptConfig", "SoftPromptResult", "soft_prompt_attack",
    "AttackConfig", "attack_record", "attack_success_table", "detect_concept",
    "PromptEmbeddings", "text_encoder_fn", "vocabulary_words",
]
