"""Mini-world generation speed on CPU: images/s through ``generate_cached`` (cold cache) at several batch sizes,
the cache-hit read speed, and the cost of the model fingerprint.

    python benchmarks/generation_speed.py                      # shipped mini world, ~1–2 min on 1–2 cores
    python benchmarks/generation_speed.py --batch-sizes 16 64 --weights-dir /tmp/mw --out /tmp/bench.md

Each batch size generates exactly one batch (``batch_size`` images, 50 DDIM steps, CFG) into a fresh cache,
so every timed image is really generated and written as PNG; the cache-hit row then reads the largest set back.
The Markdown table is printed and written to ``--out`` (default ``reports/benchmarks-generation.md``).
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch

from unlearnkit.sampling.cache import generate_cached, model_fingerprint
from unlearnkit.sampling import SamplerSettings, generate
from unlearnkit.worlds.mini import WEIGHTS_DIR, load_mini_world

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "reports" / "benchmarks-generation.md"
PROMPT_TEMPLATES = ["a photo of a {}", "a painting of a {}", "a drawing of a {}", "a {} on a table"]
OBJECTS = ["cat", "dog", "ball", "cube", "house", "tree", "car", "cup"]


def benchmark_prompts(n: int) -> tuple[list[str], list[int]]:
    """``n`` varied prompts with distinct seeds, so no two items share a cache key."""
    prompts = [PROMPT_TEMPLATES[i % len(PROMPT_TEMPLATES)].format(OBJECTS[i % len(OBJECTS)]) for i in range(n)]
    return prompts, list(range(n))


def timed(fn):
    """``(result, seconds)`` of one call."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def measure_cold_generation(world, batch_size: int, settings: SamplerSettings, model_id: str, cache_dir: Path):
    """Seconds to generate and store one batch of ``batch_size`` images into an empty cache."""
    prompts, seeds = benchmark_prompts(batch_size)
    _, seconds = timed(lambda: generate_cached(world.pipe, prompts, seeds, settings, cache_dir,
                                               embeddings=world.embeddings, batch_size=batch_size,
                                               progress=False, model_id=model_id))
    return seconds


def measure_cache_hits(world, n_images: int, settings: SamplerSettings, model_id: str, cache_dir: Path):
    """Seconds to serve ``n_images`` already-cached images (key hashing + PNG decoding, no UNet)."""
    prompts, seeds = benchmark_prompts(n_images)
    _, seconds = timed(lambda: generate_cached(world.pipe, prompts, seeds, settings, cache_dir,
                                               embeddings=world.embeddings, progress=False, model_id=model_id))
    return seconds


def display_path(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it, so the report holds no machine paths."""
    repo = DEFAULT_OUT.parents[1]
    resolved = Path(path).resolve()
    return str(resolved.relative_to(repo)) if resolved.is_relative_to(repo) else str(path)


def markdown_report(rows: list[tuple[str, int, float]], settings: SamplerSettings, weights_dir, fingerprint_s):
    lines = [
        "# Mini-world generation speed (CPU)",
        "",
        f"- weights: `{display_path(weights_dir)}`; DDIM {settings.num_inference_steps} steps, CFG {settings.guidance_scale}",
        f"- torch {torch.__version__}, {torch.get_num_threads()} thread(s), {platform.processor() or platform.machine()}",
        f"- model fingerprint (UNet + text encoder + VAE sha256): {fingerprint_s * 1e3:.0f} ms",
        "",
        "| run | images | seconds | images/s |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {name} | {n} | {seconds:.2f} | {n / seconds:.1f} |" for name, n, seconds in rows]
    return "\n".join(lines) + "\n"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50, the papers' schedule)")
    parser.add_argument("--guidance-scale", type=float, default=5.0, help="CFG scale (mini world default 5)")
    parser.add_argument("--weights-dir", type=Path, default=WEIGHTS_DIR)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return parser.parse_args()


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = SamplerSettings(num_inference_steps=args.steps, guidance_scale=args.guidance_scale)
    world = load_mini_world("cpu", args.weights_dir)
    # Warm-up: first calls pay one-off allocation and kernel-selection costs that are not generation speed.
    generate(world.pipe, ["warm-up"], [0], SamplerSettings(num_inference_steps=2), embeddings=world.embeddings)
    model_id, fingerprint_s = timed(lambda: model_fingerprint(world.pipe))

    rows = []
    with tempfile.TemporaryDirectory(prefix="unlearnkit-bench-") as tmp:
        for batch_size in args.batch_sizes:
            cache_dir = Path(tmp) / f"bs{batch_size}"
            seconds = measure_cold_generation(world, batch_size, settings, model_id, cache_dir)
            rows.append((f"generate + write PNGs, batch {batch_size}", batch_size, seconds))
            print(f"batch {batch_size}: {batch_size / seconds:.1f} images/s", flush=True)
        largest = max(args.batch_sizes)
        seconds = measure_cache_hits(world, largest, settings, model_id, Path(tmp) / f"bs{largest}")
        rows.append(("cache hit (read PNGs back)", largest, seconds))

    report = markdown_report(rows, settings, args.weights_dir, fingerprint_s)
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
