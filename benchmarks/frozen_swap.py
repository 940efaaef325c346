"""What the library's frozen model costs per step on the SD v1.4 architecture: ``TrainableDelta.frozen()`` (swap the
original values in and back out) for several scopes and saliency-mask densities, beside a ``copy.deepcopy`` of the
UNet (the naive frozen model, paid once per run).

    OMP_NUM_THREADS=1 python benchmarks/frozen_swap.py              # ~2 min on 1 thread, ~7 GB of RAM
    python benchmarks/frozen_swap.py --device cuda --sample-size 64

Numbers: ``swap s`` = seconds of one ``with delta.frozen(): pass`` (two swaps; a training step pays it once, ANT
and ESD on every step), median of ``--repeats``; ``kept MB`` = bytes ``TrainableDelta`` keeps (original values
of the trained entries, plus the bool masks when masked) — the naive implementation keeps a whole UNet instead.
The masks are random with the given density: the swap's cost depends on how many entries are masked, not which.
Nothing is written; the table is printed.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from unlearnkit.core.edits import TrainableDelta
from unlearnkit.core.params import select_parameters
from unlearnkit.worlds.paper import build_sd14_architecture


def timed(fn, device, repeats):
    out = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        out.append(time.perf_counter() - start)
    return statistics.median(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sample-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    unet = build_sd14_architecture(sample_size=args.sample_size, device=args.device).unet
    unet.requires_grad_(False)
    unet_mb = sum(p.numel() * p.element_size() for p in unet.parameters()) / 2 ** 20
    copy_s = timed(lambda: copy.deepcopy(unet), args.device, 1)
    print(f"| frozen model | swap s (per step) | kept MB |\n|---|---:|---:|")
    print(f"| naive: copy.deepcopy(unet) (once per run, {copy_s:.2f} s) | 0 | {unet_mb:.0f} |")
    generator = torch.Generator().manual_seed(0)
    for scope, density in (("xattn_kv", None), ("xattn", None), ("unet", None), ("unet", 0.5)):
        names = list(select_parameters(unet, scope))
        masks = None
        if density is not None:
            masks = {n: (torch.rand(p.shape, generator=generator) < density).to(p.device)
                     for n, p in unet.named_parameters() if n in names}
        delta = TrainableDelta(unet, names, masks)
        kept = sum(v.numel() * v.element_size() for v in delta.original.values())
        if masks is not None:
            kept += sum(m.numel() * m.element_size() for m in masks.values())

        def swap():
            with delta.frozen():
                pass

        swap()  # warm-up
        seconds = timed(swap, args.device, args.repeats)
        label = f"ours: {scope}" + (f", mask density {density}" if density is not None else "")
        print(f"| {label} | {seconds:.3f} | {kept / 2 ** 20:.0f} |", flush=True)
        del delta, masks


if __name__ == "__main__":
    main()
