"""Erasure-step benchmark: seconds per optimisation step, setup time and peak memory of every eraser, each timed
beside a straightforward implementation of the same objective (``benchmarks/naive.py``), plus generation speed.

    OMP_NUM_THREADS=1 python benchmarks/erasure_steps.py --world mini                    # all methods, ~9 min
    OMP_NUM_THREADS=1 python benchmarks/erasure_steps.py --world sd14-arch               # esd-x ac uce, ~9 min
    OMP_NUM_THREADS=1 python benchmarks/erasure_steps.py --world sd14-arch --methods ant  # ANT alone, ~10 min, 17 GB
    python benchmarks/erasure_steps.py --world sd14-arch --device cuda --iterations 12 --repeats 3
    python benchmarks/erasure_steps.py --report-only          # rebuild reports/benchmarks.md from the JSON

Worlds: ``mini`` — the shipped mini world (8×8 latents); ``sd14-arch`` — SD v1.4's architecture with random
weights at real size (64×64 latents, ``build_sd14_architecture(sample_size=64)``) inside the library's
``PaperWorld`` (its concepts, text-embedding cache and sampler; no evaluators are needed here).
On the SD architecture the recipes are cut down so that a CPU step takes ~1–4 min (see ``SD14_CONFIGS``): ESD
samples no partial trajectory (``num_inference_steps=1``: ``x_t`` is pure noise), ANT uses a 2-step schedule with
``t′=1`` (one DDIM step of trajectory) and the cross-attention scope without a saliency mask, AC uses batch 1 on
random anchor latents (generating 200 SD images on a CPU is out of reach). The mini world runs the paper defaults
of each Config except the iteration count (``BUDGETS``: SalUn's data set size and Sculpting's epoch count set
theirs) and ANT's saliency map, computed in the setup. Every method comes from the registry
(``unlearnkit.methods``): its ``Method.prepare`` is the setup, its ``Method.fit`` the timed run, so a new eraser is
benchmarked with no change here. A method whose worker fails is recorded as failed and the others go on.

What each number means
----------------------
* **setup s** — one-off work before the first optimisation step, measured in its own process: the training data
  a method generates with the frozen model (AC anchor images, SalUn D_f/D_r and its saliency mask, FMN concept
  images, ANT's saliency map M*, Sculpting's D_forget/D_super) plus the pre-loop part of ``fit`` (selecting
  parameters, ``TrainableDelta`` / ``deepcopy``, optimiser construction).
* **s/step** — marginal cost of one optimisation step: the optimiser is instrumented (a global step post-hook and
  a timestamp at optimiser construction) and step ``k`` lasts from the end of step ``k−1`` to the end of step
  ``k``. The first step (lazy optimiser state, first-call kernel selection) is dropped when a run has ≥ 2 steps;
  the value of a run is the **mean** of the remaining steps (a step's cost varies with its draws, e.g. ESD's
  partial-sampling length, and the mean is what a long run costs per step). Ours and naive consume the same
  draws, so their steps are paired. For Sculpting Memory only the unlearning steps are counted (warm-up steps make
  no optimiser step). UCE is a closed form: its row gives the whole solve (``uce.fit``) as **total s**.
* **peak MB** — CPU: ``ru_maxrss`` of the process that runs just this one ``fit`` (own subprocess), shown as the
  peak above the baseline measured right after loading the world (``+Δ``) and the absolute peak; CUDA:
  ``torch.cuda.max_memory_allocated`` after the world is loaded, shown the same way.
* **naive s/step, naive peak** — the same for the reference implementation (second full UNet via
  ``copy.deepcopy``, separate conditional and unconditional UNet calls); **ratio** = ours / naive (time: s/step;
  memory: the Δ above the world). Below 1 means ours is faster / lighter. The first step's loss of ours and naive
  must agree (asserted: same objective on the same inputs).
* **generation** — images/s of ``unlearnkit.sampling.generate`` (50 DDIM steps, CFG, VAE decode) after a warm-up;
  on the SD architecture on CPU a 50-step image takes far too long, so one image is run for 2 DDIM steps and
  ``50·(s per DDIM step) + decode`` is extrapolated (marked *extrapolated*).

Each (method, implementation) runs ``--repeats`` times in fresh subprocesses, ours and naive interleaved (their
order alternating between repeats); the table gives the median over repeats. Raw numbers and provenance (versions,
git revision, parameters) go to ``benchmarks/results/<world>-<device>.json`` (merged per method across
invocations); ``reports/benchmarks.md`` is rebuilt from every JSON file there, followed by the hand-written
``benchmarks/results/notes.md`` when it exists.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS_DIR = HERE / "results"
REPORT = REPO / "reports" / "benchmarks.md"
NOTES = RESULTS_DIR / "notes.md"
WORLDS = ("mini", "sd14-arch")
NAIVE_METHODS = ("esd-x", "esd-u", "ant", "ac")
SD14_DEFAULT_METHODS = ("esd-x", "ac", "uce")
DEFAULT_ITERATIONS = {"mini": 12, "sd14-arch": 2}
DEFAULT_REPEATS = {"mini": 3, "sd14-arch": 1}
LOSS_RTOL = 1e-3


# ------------------------------------------------------------------------------------------------ worlds
def load_world(name: str, device: str):
    if name == "mini":
        from unlearnkit.worlds.mini import load_mini_world

        return load_mini_world(device)
    from unlearnkit.worlds.paper import build_sd14_architecture

    from unlearnkit.worlds.paper import PaperWorld

    pipe = build_sd14_architecture(sample_size=64, seed=0, device=device)
    pipe.set_progress_bar_config(disable=True)
    return PaperWorld(pipe=pipe, name="sd14-arch", device=device)  # concepts, embeddings, sampler; no evaluators


CONCEPT = "tench"


# ------------------------------------------------------------------------------------------------ recipes
#: hyperparameters for a run of n optimisation steps where the Config has no ``iterations`` to set
BUDGETS = {
    "salun": lambda n: dict(epochs=1, forget_images=8 * n, retain_images=8 * n),   # one epoch of n batches of 8
    # the mini preset: 20 steps/epoch (40 images, batch 2), 20 warm-up steps → n unlearning steps
    "sculpting": lambda n: {**_sculpting_mini_world(), "epochs": 1 + math.ceil(n / 20)},
}
#: the mini world's settings beside the Config defaults
MINI_HYPERPARAMETERS = {"ant": {"saliency": {}}}
#: the cut-down recipes on the SD architecture (a CPU step of ~1–4 min); only these methods run there
SD14_HYPERPARAMETERS = {
    "esd-x": dict(num_inference_steps=1),
    "esd-u": dict(num_inference_steps=1),
    "ant": dict(num_inference_steps=2, t_prime=1, scope="xattn"),
    "ac": dict(batch_size=1),
    "uce": {},
}


def _sculpting_mini_world() -> dict:
    from unlearnkit.methods.sculpting import MINI_WORLD

    return dict(MINI_WORLD)


def _random_anchor_latents(concept, config) -> dict:
    """AC's anchor data on the SD architecture: random latents (200 generated SD images are out of reach on a CPU)."""
    import torch

    from unlearnkit.methods.ablating import anchor_prompts_of
    from unlearnkit.methods.parts.training_data import GeneratedLatents

    prompts = anchor_prompts_of(concept)
    latents = torch.randn(8, 4, 64, 64, generator=torch.Generator().manual_seed(0))
    return {"anchor_data": GeneratedLatents(latents, tuple(prompts[i % len(prompts)] for i in range(8)))}


#: setup inputs on the SD architecture in place of the method's own ``prepare``
SD14_INPUTS = {"ac": _random_anchor_latents}


def method_hyperparameters(method: str, world: str, iterations: int) -> dict:
    """The flat hyperparameters of a benchmark run: ``iterations`` steps (``BUDGETS``), then the world's recipe."""
    import dataclasses

    from unlearnkit.methods import get

    if method in BUDGETS:
        budget = BUDGETS[method](iterations)
    else:
        budget = ({"iterations": iterations}
                  if "iterations" in {f.name for f in dataclasses.fields(get(method).config)} else {})
    recipe = SD14_HYPERPARAMETERS.get(method, {}) if world == "sd14-arch" else MINI_HYPERPARAMETERS.get(method, {})
    return {**budget, **recipe}


def method_config(method: str, world: str, iterations: int):
    """The method's full Config for this world (see :func:`method_hyperparameters`)."""
    from unlearnkit.methods import check_hyperparameters

    return check_hyperparameters(method, **method_hyperparameters(method, world, iterations))


def make_setup(method: str, world, config, world_name: str) -> dict:
    """The one-off inputs ``fit`` would otherwise generate (``Method.prepare``; ``{}`` if none)."""
    from unlearnkit.methods import get

    concept = world.concept(CONCEPT)
    if world_name == "sd14-arch" and method in SD14_INPUTS:
        return SD14_INPUTS[method](concept, config)
    prepare = get(method).prepare
    return prepare(world, [concept], config) if prepare is not None else {}


def needs_setup(method: str, world_name: str) -> bool:
    """Whether :func:`make_setup` can produce anything (spares a world load otherwise)."""
    from unlearnkit.methods import get

    return get(method).prepare is not None or (world_name == "sd14-arch" and method in SD14_INPUTS)


def naive_fit(method: str, world, concept, config, data: dict):
    """The reference implementation of ``method`` (``benchmarks/naive.py``): ``(edit, log)``."""
    import naive

    fits = {"esd-x": lambda: naive.naive_esd_fit(world, concept, config),
            "esd-u": lambda: naive.naive_esd_fit(world, concept, config),
            "ant": lambda: naive.naive_ant_fit(world, concept, config, mask=data.get("mask")),
            "ac": lambda: naive.naive_ac_fit(world, concept, config, data["anchor_data"])}
    if method not in fits:
        raise ValueError(f"no naive implementation of {method!r}")
    return fits[method]()


def run_fit(method: str, impl: str, world, config, data: dict) -> list[dict]:
    """One ``fit`` of the library (``impl="ours"``, the registry's ``Method.fit`` with the setup's inputs) or of
    the reference implementation (``"naive"``); returns the training log."""
    from unlearnkit.methods import get

    concept = world.concept(CONCEPT)
    if impl == "naive":
        return naive_fit(method, world, concept, config, data)[1]
    return get(method).fit(world, [concept], config, progress=False, **data).log


# ------------------------------------------------------------------------------------------------ measuring
class StepClock:
    """Timestamps of optimiser construction and of the end of every optimiser step, for every optimiser."""

    def __init__(self, device: str):
        import torch

        self.marks: list[tuple[str, float]] = []
        self.cuda = device.startswith("cuda")
        clock = self

        def now():
            if clock.cuda:
                torch.cuda.synchronize()
            return time.perf_counter()

        self.now = now
        for name in ("Adam", "AdamW"):
            base = getattr(torch.optim, name)
            timed = type(f"Timed{name}", (base,), {"__init__": _timed_init(base, clock)})
            setattr(torch.optim, name, timed)
        from torch.optim.optimizer import register_optimizer_step_post_hook

        register_optimizer_step_post_hook(lambda opt, args, kwargs: clock.mark("step"))

    def mark(self, kind: str):
        self.marks.append((kind, self.now()))

    def step_durations(self) -> list[float]:
        """Seconds of each step: from the previous step's end (or the optimiser's construction) to its end."""
        durations, last = [], None
        for kind, stamp in self.marks:
            if kind == "step" and last is not None:
                durations.append(stamp - last)
            last = stamp
        return durations

    def first_construction(self) -> float | None:
        return next((stamp for kind, stamp in self.marks if kind == "init"), None)


def _timed_init(base, clock):
    def __init__(self, *args, **kwargs):
        base.__init__(self, *args, **kwargs)
        clock.mark("init")

    return __init__


def peak_memory_mb(device: str) -> float:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated() / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def worker(job: dict) -> dict:
    """Run one job (``setup``, ``fit`` or ``generation``) in this process and return its measurements."""
    import torch

    torch.set_num_threads(job["threads"])
    device = job["device"]
    clock = StepClock(device)
    started = time.perf_counter()
    world = load_world(job["world"], device)
    load_s = time.perf_counter() - started
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        baseline = torch.cuda.memory_allocated() / 2 ** 20
        torch.cuda.reset_peak_memory_stats()
    else:
        baseline = peak_memory_mb(device)
    out = {"world_load_s": load_s, "baseline_mb": baseline}
    if job["kind"] == "generation":
        out.update(measure_generation(world, job["world"], clock.now))
        return out
    config = method_config(job["method"], job["world"], job["iterations"])
    if job["kind"] == "setup":
        t0 = clock.now()
        data = make_setup(job["method"], world, config, job["world"])
        out["data_s"] = clock.now() - t0
        torch.save(data, job["data_path"])
        out["peak_mb"] = peak_memory_mb(device)
        return out
    data = torch.load(job["data_path"], weights_only=False) if os.path.exists(job["data_path"]) else {}
    t0 = clock.now()
    log = run_fit(job["method"], job["impl"], world, config, data)
    t_end = clock.now()
    out["peak_mb"] = peak_memory_mb(device)
    out["total_s"] = t_end - t0
    first_init = clock.first_construction()
    out["prelude_s"] = (first_init - t0) if first_init is not None else None
    out["step_s"] = clock.step_durations()
    out["losses"] = [row.get("loss") for row in log if isinstance(row, dict) and "loss" in row]
    return out


def measure_generation(world, world_name: str, now) -> dict:
    """Images/s of ``generate`` (50 DDIM steps, CFG, decode); extrapolated from 2 steps on the SD architecture."""
    from generation_speed import benchmark_prompts
    from unlearnkit.sampling import SamplerSettings, decode_latents, generate, sample_latents

    guidance = getattr(world.sampler, "guidance_scale", 7.5)
    if world_name == "mini":
        generate(world.pipe, ["warm-up"], [0], SamplerSettings(num_inference_steps=2), embeddings=world.embeddings)
        n = 16
        prompts, seeds = benchmark_prompts(n)
        t0 = now()
        generate(world.pipe, prompts, seeds, SamplerSettings(50, guidance), embeddings=world.embeddings, batch_size=n)
        seconds = now() - t0
        return {"images": n, "seconds": seconds, "images_per_s": n / seconds, "extrapolated": False,
                "steps": 50, "guidance": guidance}
    prompts, seeds = benchmark_prompts(1)
    sample_latents(world.pipe, prompts, seeds, SamplerSettings(1, guidance), embeddings=world.embeddings)  # warm-up
    t0 = now()
    latents, _ = sample_latents(world.pipe, prompts, seeds, SamplerSettings(2, guidance), embeddings=world.embeddings)
    per_step = (now() - t0) / 2
    t0 = now()
    decode_latents(world.pipe.vae, latents)
    decode_s = now() - t0
    per_image = 50 * per_step + decode_s
    return {"images": 1, "s_per_ddim_step": per_step, "decode_s": decode_s, "seconds_per_image": per_image,
            "images_per_s": 1 / per_image, "extrapolated": True, "steps": 50, "guidance": guidance}


def spawn(job: dict, threads: int) -> dict:
    """Run ``job`` in a fresh Python process (its own ``ru_maxrss``) and return its JSON answer."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    with tempfile.NamedTemporaryFile("r", suffix=".json", delete=False) as answer:
        path = answer.name
    try:
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(job),
                               "--answer", path], env=env, text=True, capture_output=True)
        if proc.returncode != 0:
            raise RuntimeError(f"worker {job} failed:\n{proc.stderr[-4000:]}")
        return json.loads(Path(path).read_text())
    finally:
        os.unlink(path)


# ------------------------------------------------------------------------------------------------ orchestration
def per_run_step(step_s: list[float]) -> float | None:
    """A run's seconds per step: mean of the steps after the first (the only step if there is one)."""
    if not step_s:
        return None
    kept = step_s[1:] if len(step_s) >= 2 else step_s
    return statistics.fmean(kept)


def summarise(runs: list[dict]) -> dict:
    steps = [per_run_step(r["step_s"]) for r in runs]
    steps = [s for s in steps if s is not None]
    return {
        "s_per_step": statistics.median(steps) if steps else None,
        "total_s": statistics.median(r["total_s"] for r in runs),
        "prelude_s": statistics.median(r["prelude_s"] for r in runs) if runs[0]["prelude_s"] is not None else None,
        "peak_mb": statistics.median(r["peak_mb"] for r in runs),
        "delta_mb": statistics.median(r["peak_mb"] - r["baseline_mb"] for r in runs),
        "baseline_mb": statistics.median(r["baseline_mb"] for r in runs),
        "steps_per_run": len(runs[0]["step_s"]),
        "single_step_only": bool(runs[0]["step_s"]) and len(runs[0]["step_s"]) < 2,
        "runs": runs,
    }


def check_same_objective(method: str, ours: list[dict], naive: list[dict]) -> dict:
    """First-step losses must agree (same objective, same inputs); report the largest relative gap over all steps."""
    a, b = ours[0]["losses"], naive[0]["losses"]
    if not a or len(a) != len(b):
        raise AssertionError(f"{method}: ours logged {len(a)} losses, naive {len(b)}")
    gap0 = abs(a[0] - b[0]) / max(abs(a[0]), 1e-12)
    assert gap0 <= LOSS_RTOL, f"{method}: first-step loss ours {a[0]!r} vs naive {b[0]!r} (rel. gap {gap0:.2e})"
    gaps = [abs(x - y) / max(abs(x), 1e-12) for x, y in zip(a, b)]
    return {"first_step_loss": a[0], "first_step_rel_gap": gap0, "max_rel_gap_all_steps": max(gaps)}


def run_benchmark(args) -> dict:
    world, device = args.world, args.device
    iterations = args.iterations or DEFAULT_ITERATIONS[world]
    repeats = args.repeats or DEFAULT_REPEATS[world]
    methods = args.methods or (known_methods() if world == "mini" else list(SD14_DEFAULT_METHODS))
    unknown = [m for m in methods if m not in known_methods()]
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; known: {known_methods()}")
    if world == "sd14-arch":
        unknown = [m for m in methods if m not in SD14_HYPERPARAMETERS]  # no cut-down SD recipe for the others
        if unknown:
            raise SystemExit(f"no SD-architecture recipe for {unknown}; choose from {list(SD14_HYPERPARAMETERS)}")
    base = {"world": world, "device": device, "threads": args.threads, "iterations": iterations}
    results: dict = {"methods": {}}
    with tempfile.TemporaryDirectory(prefix="unlearnkit-bench-") as tmp:
        for method in methods:
            try:
                results["methods"][method] = measure_method(method, world, base, iterations, repeats, tmp, args)
            except RuntimeError as error:  # a worker failed: report it, keep the other methods
                print(f"[{world}] {method}: FAILED — {str(error).strip().splitlines()[-1]}", flush=True)
                results.setdefault("failed", {})[method] = str(error)[-2000:]
        if not args.no_generation:
            print(f"[{world}] generation", flush=True)
            results["generation"] = spawn({**base, "kind": "generation"}, args.threads)
    return results


def measure_method(method, world, base, iterations, repeats, tmp, args) -> dict:
    """Setup once, then ``repeats`` interleaved ours / naive runs of one method; returns its results entry."""
    data_path = str(Path(tmp) / f"{method}.pt")
    if needs_setup(method, world):
        print(f"[{world}] {method}: setup", flush=True)
        setup = spawn({**base, "kind": "setup", "method": method, "data_path": data_path}, args.threads)
    else:
        setup = {"data_s": 0.0, "skipped": "no one-off data"}
    impls = ["ours"] + (["naive"] if method in NAIVE_METHODS and not args.no_naive else [])
    runs = {impl: [] for impl in impls}
    for rep in range(repeats):
        order = impls if rep % 2 == 0 else impls[::-1]
        for impl in order:
            r = spawn({**base, "kind": "fit", "method": method, "impl": impl, "data_path": data_path},
                      args.threads)
            runs[impl].append(r)
            step = per_run_step(r["step_s"])
            print(f"[{world}] {method} {impl} rep {rep}: "
                  f"{'-' if step is None else f'{step:.4f}'} s/step, total {r['total_s']:.2f} s, "
                  f"peak {r['peak_mb']:.0f} MB (+{r['peak_mb'] - r['baseline_mb']:.0f})", flush=True)
    entry = {"setup": setup, "ours": summarise(runs["ours"]),
             "config": _config_dict(method, world, iterations)}
    if "naive" in runs:
        entry["naive"] = summarise(runs["naive"])
        entry["objective_check"] = check_same_objective(method, runs["ours"], runs["naive"])
    return entry


def _config_dict(method, world, iterations):
    from unlearnkit.reports import to_jsonable

    config = method_config(method, world, iterations)
    return to_jsonable(config.as_dict(), "config")


def merge_and_save(args, results: dict) -> Path:
    from unlearnkit.reports import provenance

    import torch

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{args.world}-{args.device.split(':')[0]}.json"
    stored = json.loads(path.read_text()) if path.exists() else {"methods": {}}
    parameters = {"world": args.world, "device": args.device, "threads": args.threads,
                  "iterations": args.iterations or DEFAULT_ITERATIONS[args.world],
                  "repeats": args.repeats or DEFAULT_REPEATS[args.world], "methods": list(results["methods"])}
    record = provenance(parameters, extra={"torch_threads": args.threads, "cpu": platform.processor() or
                                           platform.machine(), "cpu_count": os.cpu_count(),
                                           "cuda_device": torch.cuda.get_device_name(0)
                                           if args.device.startswith("cuda") else None})
    for method, entry in results["methods"].items():
        entry["provenance"] = record
        stored["methods"][method] = entry
    for method, error in results.get("failed", {}).items():
        stored.setdefault("failed", {})[method] = {"error": error, "timestamp_utc": record["timestamp_utc"]}
    for method in results["methods"]:
        stored.get("failed", {}).pop(method, None)
    if "generation" in results:
        results["generation"]["provenance"] = record
        stored["generation"] = results["generation"]
    stored["world"], stored["device"] = args.world, args.device
    path.write_text(json.dumps(stored, indent=1))
    return path


# ------------------------------------------------------------------------------------------------ report
def _fmt_s(value) -> str:
    if value is None:
        return "—"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value * 1e3:.1f} ms"


def _fmt_mb(summary) -> str:
    return f"+{summary['delta_mb']:.0f} ({summary['peak_mb']:.0f})"


def table(stored: dict) -> list[str]:
    lines = ["| method | setup s | s/step | peak MB +Δ (abs) | naive s/step | naive peak MB +Δ (abs) | "
             "time ratio | memory ratio |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    order = [m for m in known_methods() if m in stored["methods"]] + \
            [m for m in stored["methods"] if m not in known_methods()]
    for method in order:
        e = stored["methods"][method]
        ours = e["ours"]
        setup = (e["setup"].get("data_s") or 0.0) + (ours.get("prelude_s") or 0.0)
        if ours["s_per_step"] is None:   # a closed form: no optimiser step
            step = f"total {_fmt_s(ours['total_s'])}"
        else:
            step = _fmt_s(ours["s_per_step"]) + (" ¹" if ours.get("single_step_only") else "")
        generic = " ²" if e.get("config", {}).get("generic") else ""
        row = [method + generic, _fmt_s(setup), step, _fmt_mb(ours)]
        if "naive" in e:
            nv = e["naive"]
            t_ratio = ours["s_per_step"] / nv["s_per_step"]
            m_ratio = ours["delta_mb"] / nv["delta_mb"] if nv["delta_mb"] > 0 else float("nan")
            row += [_fmt_s(nv["s_per_step"]) + (" ¹" if nv.get("single_step_only") else ""), _fmt_mb(nv),
                    f"{t_ratio:.2f}", f"{m_ratio:.2f}"]
        else:
            row += ["—", "—", "—", "—"]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _stamps(stored: dict) -> str:
    """First and last measurement time of the rows of one world (rows may come from several invocations)."""
    entries = list(stored["methods"].values()) + ([stored["generation"]] if "generation" in stored else [])
    stamps = sorted({e["provenance"]["timestamp_utc"] for e in entries if "provenance" in e})
    if not stamps:
        return "?"
    return stamps[0] if len(stamps) == 1 else f"{stamps[0]} – {stamps[-1]}"


def world_section(stored: dict) -> list[str]:
    first = next(iter(stored["methods"].values()), None) or {}
    prov = first.get("provenance") or stored.get("generation", {}).get("provenance", {})
    params = prov.get("parameters", {})
    extra = prov.get("extra", {})
    versions = prov.get("versions", {})
    git = prov.get("git", {})
    title = {"mini": "Mini world (8×8 latents)", "sd14-arch": "SD v1.4 architecture, random weights, 64×64 latents"}
    lines = [f"## {title.get(stored['world'], stored['world'])} — {stored['device']}", ""]
    device = extra.get("cuda_device") or f"{extra.get('cpu')} CPU, {extra.get('cpu_count')} cores visible"
    lines += [f"- device: {device}; torch threads {params.get('threads')}; {params.get('iterations')} iterations "
              f"per run, {params.get('repeats')} repeat(s), median over repeats",
              f"- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
              f"- git revision `{git.get('revision', 'unknown')}` (dirty: {git.get('dirty')}); "
              f"measured {_stamps(stored)} (UTC)", ""]
    lines += table(stored)
    checks = [(m, e["objective_check"]) for m, e in stored["methods"].items() if "objective_check" in e]
    if checks:
        lines += ["", "Same objective, same inputs (first step): " + "; ".join(
            f"{m} loss {c['first_step_loss']:.6g}, rel. gap {c['first_step_rel_gap']:.1e} "
            f"(all steps ≤ {c['max_rel_gap_all_steps']:.1e})" for m, c in checks) + "."]
    setups = [(m, e["setup"].get("data_s") or 0.0, e["ours"].get("prelude_s") or 0.0)
              for m, e in stored["methods"].items()]
    lines += ["", "Setup split (data generation + pre-loop of fit): " + "; ".join(
        f"{m} {_fmt_s(d)} + {_fmt_s(p)}" for m, d, p in setups) + "."]
    for method, failure in stored.get("failed", {}).items():
        lines += ["", f"{method}: **failed** ({failure['timestamp_utc']}): "
                      f"`{failure['error'].strip().splitlines()[-1][:200]}`"]
    gen = stored.get("generation")
    if gen:
        if gen.get("extrapolated"):
            lines += ["", f"Generation: {gen['images_per_s']:.2e} images/s (*extrapolated*: "
                          f"{gen['s_per_ddim_step']:.1f} s per CFG DDIM step × 50 + {gen['decode_s']:.1f} s VAE "
                          f"decode = {gen['seconds_per_image']:.0f} s per image)."]
        else:
            lines += ["", f"Generation: {gen['images_per_s']:.1f} images/s ({gen['images']} images in one batch, "
                          f"50 DDIM steps, CFG {gen['guidance']}, VAE decode, {gen['seconds']:.2f} s)."]
    return lines


def write_report() -> Path:
    files = sorted(RESULTS_DIR.glob("*.json"), key=lambda p: (WORLDS.index(p.stem.rsplit("-", 1)[0])
                                                              if p.stem.rsplit("-", 1)[0] in WORLDS else 9, p.stem))
    lines = ["# Erasure benchmarks", "",
             "Produced by `benchmarks/erasure_steps.py` (see its docstring for how each number is measured; "
             "reference implementations in `benchmarks/naive.py`). Ratios are ours / naive: below 1 is faster or "
             "lighter. Memory columns give the peak above the loaded world (`+Δ`) and the absolute peak. "
             "¹ = a single step per run (includes first-call overhead). ² = an eraser without a recipe in the script, run "
             "through `erase(name, world, concept, iterations=…)` with its Config defaults; its setup is everything "
             "before the first optimiser step.", ""]
    for path in files:
        lines += world_section(json.loads(path.read_text())) + [""]
    if NOTES.exists():  # hand-written reading of the numbers, kept beside the raw results
        lines += [NOTES.read_text().rstrip(), ""]
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text("\n".join(lines))
    return REPORT


def known_methods() -> list[str]:
    """Every registered method that trains an Edit (``unlearnkit.methods``), in registry order."""
    from unlearnkit.methods import registry
    from unlearnkit.methods.contract import INFERENCE

    return [name for name, method in registry().items() if INFERENCE not in method.capabilities]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", choices=WORLDS, default="mini")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--methods", nargs="+", default=None,
                        help="default: every method (mini) or esd-x ac uce (sd14-arch); see known_methods()")
    parser.add_argument("--iterations", type=int, default=None, help="steps per run (mini 12, sd14-arch 2)")
    parser.add_argument("--repeats", type=int, default=None, help="runs per implementation (mini 3, sd14-arch 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each worker (default 1)")
    parser.add_argument("--no-naive", action="store_true", help="skip the reference implementations")
    parser.add_argument("--no-generation", action="store_true", help="skip the generation-speed measurement")
    parser.add_argument("--report-only", action="store_true", help="only rebuild reports/benchmarks.md")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--answer", help=argparse.SUPPRESS)
    return parser.parse_args()


def main():
    args = parse_args()
    if args.worker:
        Path(args.answer).write_text(json.dumps(worker(json.loads(args.worker))))
        return
    if not args.report_only:
        results = run_benchmark(args)
        print(f"raw results: {merge_and_save(args, results)}")
    print(f"report: {write_report()}")
    print(REPORT.read_text())


if __name__ == "__main__":
    main()
