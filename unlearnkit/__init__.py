"""unlearnkit — concept erasure for text-to-image diffusion models (Sculpting Memory, SepME, ANT and baselines)."""
__version__ = "0.1.0"
