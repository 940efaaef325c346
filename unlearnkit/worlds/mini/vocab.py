"""A word-level CLIP BPE vocabulary for the mini world, written as the ``vocab.json`` / ``merges.txt`` pair that
``transformers.CLIPTokenizer`` reads, so the mini pipeline tokenises exactly the way SD v1.4's does (BOS, words,
EOS, EOS padding) — only with a vocabulary of a few hundred entries instead of 49,408.
"""
from __future__ import annotations

import json
from pathlib import Path

from transformers import CLIPTokenizer

from unlearnkit.worlds.mini import catalogue

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 16


def _chain(word: str) -> list[str]:
    return list(word[:-1]) + [word[-1] + "</w>"]


def _write(folder: Path, vocab: dict[str, int], merges: list[tuple[str, str]]) -> None:
    (folder / "vocab.json").write_text(json.dumps(vocab, indent=0, sort_keys=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n")


def load_tokenizer(folder: str | Path) -> CLIPTokenizer:
    folder = Path(folder)
    for name in ("vocab.json", "merges.txt"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"mini-world tokenizer file {folder / name} is missing; "
                                    f"rebuild it with `python -m unlearnkit.worlds.mini.train --only tokenizer`")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=MAX_LENGTH,
                         pad_token=EOS, bos_token=BOS, eos_token=EOS, unk_token=EOS)


def build_vocabulary(folder: str | Path, words: list[str] | None = None, max_rounds: int = 50) -> CLIPTokenizer:
    """Write vocab.json + merges.txt under ``folder`` such that every word is a single token.

    Merges follow each word's characters left to right; where BPE's greedy order splits a word, a merge joining
    the leftover pieces is appended (later merges never pre-empt earlier ones), until every word is one token.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    words = sorted(set(words or catalogue.vocabulary()) | {","})
    vocab: dict[str, int] = {}
    merges: list[tuple[str, str]] = []
    known: set[tuple[str, str]] = set()

    def add_token(tok: str) -> None:
        vocab.setdefault(tok, len(vocab))

    def add_merge(a: str, b: str) -> None:
        if (a, b) not in known:
            known.add((a, b))
            merges.append((a, b))
        add_token(a + b)

    for c in sorted({c for w in words for c in w}):
        add_token(c)
        add_token(c + "</w>")
    for word in words:
        pieces = _chain(word)
        acc = pieces[0]
        for piece in pieces[1:]:
            add_merge(acc, piece)
            acc += piece
    for _ in range(max_rounds):
        vocab_full = dict(vocab)
        vocab_full.setdefault(BOS, len(vocab_full))
        vocab_full.setdefault(EOS, len(vocab_full))
        _write(folder, vocab_full, merges)
        tokenizer = load_tokenizer(folder)
        split = {w: tokenizer.tokenize(w) for w in words}
        split = {w: p for w, p in split.items() if len(p) > 1}
        if not split:
            return tokenizer
        for pieces in split.values():
            add_merge(pieces[0], pieces[1])
    raise RuntimeError(f"could not make single tokens of {sorted(split)} in {max_rounds} rounds")
