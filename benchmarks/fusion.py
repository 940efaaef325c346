"""Closed-form multi-LoRA fusion speed (ANT Eq. 7): fuse N random LoRAs into every cross-attention to_k/to_v.

    python benchmarks/fusion.py                          # 100 LoRAs, mini UNet and SD v1.4 shapes, rank 1 and 64
    python benchmarks/fusion.py --loras 10 100 --ranks 1 --out /tmp/fusion.md

SD v1.4 shapes are the 32 ``attn2.to_k`` / ``to_v`` weights (d_out 320/640/1280 × d_in 768) of its 16
cross-attention layers, built as plain linear layers with random weights (the fusion reads only those weights).
Per-concept Grams ``G_i`` come from 30 prompts × 77 tokens of random embeddings (MACE's augmentation count), the
prior Gram from 1,000 captions × 77 tokens; building them is timed apart from the fusion itself. The Markdown table
is printed and written to ``--out`` (default ``reports/benchmarks-fusion.md``).
"""
from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from unlearnkit.methods import mace

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "reports" / "benchmarks-fusion.md"
# SD v1.4 cross-attention query widths: down 320,320,640,640,1280,1280; mid 1280; up 1280×3, 640×3, 320×3
SD14_WIDTHS = [320, 320, 640, 640, 1280, 1280, 1280, 1280, 1280, 1280, 640, 640, 640, 320, 320, 320]


class _Projections(torch.nn.Module):
    """Stand-in module whose parameters are named like a UNet's attn2 to_k/to_v weights."""

    def __init__(self, widths: list[int], d_in: int, generator: torch.Generator):
        super().__init__()
        self.layers = torch.nn.ModuleList()
        for width in widths:
            block = torch.nn.Module()
            block.to_k = torch.nn.Linear(d_in, width, bias=False)
            block.to_v = torch.nn.Linear(d_in, width, bias=False)
            with torch.no_grad():
                block.to_k.weight.copy_(torch.randn(width, d_in, generator=generator) * d_in ** -0.5)
                block.to_v.weight.copy_(torch.randn(width, d_in, generator=generator) * d_in ** -0.5)
            self.layers.append(block)

    def targets(self) -> dict[str, int]:
        return {f"layers.{i}.{p}": w.to_k.out_features for i, w in enumerate(self.layers) for p in ("to_k", "to_v")}


def _mini_module(generator):
    from unlearnkit.worlds.mini import load_mini_pipeline

    unet = load_mini_pipeline().unet
    params = dict(unet.named_parameters())
    targets = {m: params[f"{m}.weight"].shape[0] for m in mace.lora_target_modules(unet)}
    return unet, targets, params[f"{next(iter(targets))}.weight"].shape[1], 16


def _random_problem(targets: dict[str, int], d_in: int, n_loras: int, rank: int, tokens: int, generator):
    loras, grams = [], {}
    for i in range(n_loras):
        A = {m: torch.randn(rank, d_in, generator=generator) * 0.01 for m in targets}
        B = {m: torch.randn(width, rank, generator=generator) * 0.01 for m, width in targets.items()}
        loras.append(mace.ConceptLoRA(f"concept{i}", A, B))
        grams[f"concept{i}"] = mace.gram_matrix(torch.randn(30 * tokens, d_in, generator=generator))
    prior = mace.gram_matrix(torch.randn(1000 * tokens, d_in, generator=generator))
    return loras, grams, prior


def run(n_loras_list, ranks, repeats: int = 2) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    setups = {"mini UNet": _mini_module(generator)}
    sd14 = _Projections(SD14_WIDTHS, 768, generator)
    setups["SD v1.4 shapes"] = (sd14, sd14.targets(), 768, 77)
    rows = []
    for setup, (module, targets, d_in, tokens) in setups.items():
        for n in n_loras_list:
            for rank in ranks:
                t0 = time.perf_counter()
                loras, grams, prior = _random_problem(targets, d_in, n, rank, tokens, generator)
                build = time.perf_counter() - t0
                times = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    edit, info = mace.fuse_loras(module, loras, grams, prior, mace.FusionConfig(beta=1.0))
                    times.append(time.perf_counter() - t0)
                rows.append({"setup": setup, "LoRAs": n, "rank": rank, "layers": len(targets), "d_in": d_in,
                             "fusion s (best)": min(times), "random inputs s": build})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loras", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = run(args.loras, args.ranks)
    header = "| setup | LoRAs | rank | layers | d_in | fusion s (best of 2) | random inputs s |\n|---|---|---|---|---|---|---|\n"
    body = "".join(f"| {r['setup']} | {r['LoRAs']} | {r['rank']} | {r['layers']} | {r['d_in']} | "
                   f"{r['fusion s (best)']:.3f} | {r['random inputs s']:.2f} |\n" for r in rows)
    text = (f"# Closed-form multi-LoRA fusion (ANT Eq. 7)\n\n{platform.processor() or platform.machine()}, "
            f"torch {torch.__version__}, {args.threads} thread(s). `python benchmarks/fusion.py`\n\n" + header + body)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
