"""Text-side helpers the attacks share: uncached encoding, the tokenizer's whole-word vocabulary, and an embedding
table that lets :func:`unlearnkit.sampling.sample_latents` generate from precomputed (soft) prompt embeddings.
"""
from __future__ import annotations

import hashlib
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from unlearnkit.core.diffusion import TextEmbeddingCache

# encode(texts) -> [B, L, d] last hidden states of the (original) text encoder
Encoder = Callable[[Sequence[str]], torch.Tensor]

__all__ = ["Encoder", "validate_prompts_and_seeds", "text_encoder_fn", "vocabulary_words", "PromptEmbeddings",
           "soft_prompt_key"]


def validate_prompts_and_seeds(prompts, seeds) -> tuple[list[str], list[int]]:
    """The attacks' shared input check: a non-empty list of non-empty prompts and one integer seed each."""
    from unlearnkit.sampling.cache import check_prompts_and_seeds

    return check_prompts_and_seeds(prompts, seeds, purpose="attack", allow_blank=False)


def text_encoder_fn(tokenizer, text_encoder, batch_size: int = 512) -> Encoder:
    """``encode(texts) -> [B, L, d]`` without a cache (for the search's thousands of throw-away candidates)."""
    device = next(text_encoder.parameters()).device

    @torch.no_grad()
    def encode(texts: Sequence[str]) -> torch.Tensor:
        texts = list(texts)
        out = []
        for start in range(0, len(texts), batch_size):
            ids = tokenizer(texts[start:start + batch_size], padding="max_length",
                            max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
            out.append(text_encoder(ids.to(device))[0].float())
        return torch.cat(out)

    return encode


def vocabulary_words(tokenizer, exclude: Sequence[str] = (), limit: int | None = None) -> list[str]:
    """Every vocabulary entry that is a whole word and tokenises back to exactly that one token, sorted.

    These are the words a discrete attack may write: a prompt made of them tokenises to the token ids the attack
    chose. CLIP's BPE marks a word-final token with ``</w>``; special tokens are left out, and so is ``exclude``.
    ``limit`` keeps the ``limit`` words of lowest token id (BPE merges in frequency order: the commonest words).
    """
    special = set(tokenizer.all_special_tokens)
    excluded = {w.lower() for w in exclude}
    words, seen = [], set()
    for token, token_id in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1]):
        if limit is not None and len(words) >= limit:
            break
        if token in special or not token.endswith("</w>"):
            continue
        word = token[: -len("</w>")]
        if not word.strip() or word.lower() in excluded:
            continue
        if word not in seen and tokenizer(word, add_special_tokens=False).input_ids == [token_id]:
            seen.add(word)
            words.append(word)
    return sorted(set(words))


def soft_prompt_key(prompt: str, embedding: torch.Tensor) -> str:
    """A prompt string that names one soft embedding, ``"<soft:sha256[:16]> prompt"``, so that two soft prompts
    never share a cached image (:func:`unlearnkit.sampling.cache.image_key` keys by prompt string)."""
    raw = embedding.detach().float().contiguous().cpu().reshape(-1).view(torch.uint8).numpy()
    digest = hashlib.sha256(raw.tobytes()).hexdigest()[:16]
    return f"<soft:{digest}> {prompt}"


class PromptEmbeddings:
    """The :class:`unlearnkit.core.diffusion.TextEmbeddingCache` interface over a fixed table of embeddings.

    ``table(["key", ""]) -> [B, L, d]``: keys in ``table`` return their stored ``[L, d]`` embedding, any other prompt
    (the empty prompt of classifier-free guidance, plain prompts) is encoded by ``fallback``. Pass it as
    ``embeddings=`` to :func:`unlearnkit.sampling.sample_latents` or :func:`unlearnkit.sampling.cache.generate_cached`.
    """

    def __init__(self, table: Mapping[str, torch.Tensor], fallback: TextEmbeddingCache):
        self.table = {k: v.detach() for k, v in table.items()}
        self.fallback = fallback

    def __call__(self, prompts) -> torch.Tensor:
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = list(prompts)
        if not prompts:
            raise ValueError("prompts is empty: give at least one prompt to encode")
        missing = [p for p in prompts if p not in self.table]
        encoded = dict(zip(missing, self.fallback(missing))) if missing else {}
        rows = [self.table[p] if p in self.table else encoded[p] for p in prompts]
        device = rows[0].device
        return torch.stack([r.to(device) for r in rows])

    @property
    def empty(self) -> torch.Tensor:
        return self([""])

    def __len__(self) -> int:
        return len(self.table)
