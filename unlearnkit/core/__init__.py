"""The nouns every layer shares: concepts, diffusion primitives, edits, parameter scopes."""
