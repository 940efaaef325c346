"""Token positions in prompts: where a concept's tokens are, the end-of-text position, the last content token."""
from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["concept_token_mask", "concept_token_masks", "prompts_naming", "concept_start", "last_content_index"]


def _occurrences(ids: Sequence[int], sub: Sequence[int]) -> list[int]:
    """Start index of every occurrence of ``sub`` in ``ids``."""
    n = len(sub)
    return [i for i in range(len(ids) - n + 1) if n and list(ids[i:i + n]) == list(sub)]


def concept_token_mask(token_ids: torch.Tensor, concept_ids: Sequence[int], lengths: torch.Tensor | Sequence[int],
                       include_pooler: bool = True, require: bool = True) -> torch.Tensor:
    """Bool ``[B, L]``: every occurrence of ``concept_ids`` in each row of ``token_ids`` ``[B, L]`` and, with
    ``include_pooler``, the end-of-text position ``lengths[b] − 1`` and all padding after it.

    ``lengths`` counts each prompt's tokens including start and end tokens (the attention-mask sum). Rows without the
    concept raise a ValueError naming them (``require=False``: they keep only their pooler positions).
    """
    concept_ids = [int(i) for i in concept_ids]
    if not concept_ids:
        raise ValueError("concept_ids is empty: the concept text tokenised to nothing")
    if token_ids.ndim != 2:
        raise ValueError(f"token_ids must be [B, L], got shape {tuple(token_ids.shape)}")
    batch, length = token_ids.shape
    lengths = [int(n) for n in lengths]
    if len(lengths) != batch:
        raise ValueError(f"got {len(lengths)} lengths for {batch} prompts")
    mask = torch.zeros(batch, length, dtype=torch.bool)
    missing = []
    for b, row in enumerate(token_ids.tolist()):
        starts = _occurrences(row, concept_ids)
        for i in starts:
            mask[b, i:i + len(concept_ids)] = True
        if not starts:
            missing.append(b)
        if include_pooler:
            mask[b, max(lengths[b] - 1, 0):] = True
    if missing and require:
        raise ValueError(f"the concept's tokens {concept_ids} do not occur in prompt rows {missing}")
    return mask


def _texts(concept_text: str | Sequence[str]) -> list[str]:
    texts = [concept_text] if isinstance(concept_text, str) else list(concept_text)
    if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
        raise ValueError(f"concept_text must be a non-empty string or a list of them, got {concept_text!r}")
    return texts


def concept_token_masks(tokenizer, prompts, concept_text: str | Sequence[str], use_pooler: bool = True,
                        require: bool = True) -> torch.Tensor:
    """Bool ``[N, L]`` concept positions of each prompt padded to the tokenizer's length (:func:`concept_token_mask`).
    ``concept_text`` is one text or several (several concepts erased together: each prompt's positions are those of
    the first text it contains); every prompt must contain one of them unless ``require=False``."""
    prompts, texts = list(prompts), _texts(concept_text)
    length = tokenizer.model_max_length
    encoded = tokenizer(prompts, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
    lengths = encoded.attention_mask.sum(-1).tolist()
    if len(texts) == 1:
        concept_ids = tokenizer(texts[0], add_special_tokens=False).input_ids
        return concept_token_mask(encoded.input_ids, concept_ids, lengths, use_pooler, require)
    text_ids = [tokenizer(text, add_special_tokens=False).input_ids for text in texts]
    rows, missing = [], []
    for b in range(len(prompts)):
        one = encoded.input_ids[b:b + 1]
        for concept_ids in text_ids:
            if _occurrences(one[0].tolist(), concept_ids):
                rows.append(concept_token_mask(one, concept_ids, lengths[b:b + 1], use_pooler)[0])
                break
        else:
            missing.append(prompts[b])
            row = torch.zeros(length, dtype=torch.bool)
            if use_pooler:
                row[max(lengths[b] - 1, 0):] = True
            rows.append(row)
    if missing and require:
        raise ValueError(f"prompts {missing!r} contain none of the concept texts {texts!r}")
    return torch.stack(rows)


def prompts_naming(tokenizer, prompts, concept_text: str | Sequence[str]) -> list[str]:
    """The prompts whose tokens contain ``concept_text``'s tokens (or one of several texts')."""
    text_ids = [tokenizer(text, add_special_tokens=False).input_ids for text in _texts(concept_text)]
    length = tokenizer.model_max_length
    kept = []
    for prompt in prompts:
        ids = tokenizer([prompt], padding="max_length", max_length=length, truncation=True).input_ids[0]
        if any(_occurrences(ids, concept_ids) for concept_ids in text_ids):
            kept.append(prompt)
    return kept


def concept_start(tokenizer, prompt: str, concept: str, last_word: bool = False) -> int | None:
    """Position of the first token of ``concept`` in ``prompt`` (``last_word``: of the name's last word, within
    the first occurrence of the whole name); ``None`` when the name does not occur."""
    ids = tokenizer(prompt, truncation=True, max_length=tokenizer.model_max_length).input_ids
    name_ids = tokenizer(concept, add_special_tokens=False).input_ids
    last_ids = tokenizer(concept.split()[-1], add_special_tokens=False).input_ids if concept.split() else name_ids
    starts = _occurrences(ids, name_ids)
    if not starts:
        return None
    # a word's tokens may merge differently alone than after the name's other words: clamp to the name
    return starts[0] + max(len(name_ids) - len(last_ids), 0) if last_word else starts[0]


def last_content_index(tokenizer, text: str) -> int:
    """Index of the last token before end-of-text (the start token's index 0 for the empty prompt)."""
    ids = tokenizer(text, truncation=True, max_length=tokenizer.model_max_length).input_ids
    return max(len(ids) - 2, 0)
