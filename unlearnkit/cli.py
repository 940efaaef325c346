"""``unlearnkit`` command line: reproduce the notebooks, erase a concept, export an erased model.

* ``unlearnkit reproduce --preset mini|paper`` runs the notebooks headless: each gets its preset parameters (plus
  command-line overrides and its own ``output_dir``) injected by papermill, and its executed copy is kept under
  ``<output-dir>/<preset>/executed/``; ``--processes N`` runs up to N notebooks at once.
* ``unlearnkit erase --method M --concept C --out DIR`` erases a concept and writes the Edit (safetensors) and a
  record of how it was made.
* ``unlearnkit export EDIT --format diffusers|lora --out DIR`` turns an Edit into files standard diffusers code loads.

Every command checks its inputs (names, paths, hyperparameters) before loading a model.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PRESETS_DIR = PACKAGE_DIR / "presets"
KERNEL_NAME = "python3"
NOTEBOOK_PATTERN = "[0-9][0-9]_*.ipynb"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


class UsageError(Exception):
    """A bad command line or missing input, found before any notebook runs."""


# ------------------------------------------------------------------------------------- presets and notebooks


def available_presets() -> list[str]:
    """Names of the presets shipped in ``unlearnkit/presets/``."""
    return sorted(path.stem for path in PRESETS_DIR.glob("*.json"))


def read_preset_file(path: Path) -> dict:
    """A preset file: ``{"notebooks": {stem: {parameter: value}}, "scales": {scale: {stem: {...}}}}``."""
    try:
        preset = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UsageError(f"preset file {path}: cannot be read as JSON ({error})") from None
    if not isinstance(preset, dict) or not isinstance(preset.get("notebooks"), dict):
        raise UsageError(f"preset file {path}: expected an object with a 'notebooks' object of notebook parameters")
    return preset


def load_preset(name: str, scale: str = "full", preset_file: str | None = None) -> dict[str, dict]:
    """The per-notebook parameters of preset ``name`` (or of ``preset_file``) at ``scale``:
    ``{notebook stem: {parameter: value}}`` — a scale's entries replace the full scale's, key by key."""
    if preset_file is not None:
        preset = read_preset_file(Path(preset_file))
    else:
        accepted = available_presets()
        if name not in accepted:
            raise UsageError(f"unknown preset {name!r}; accepted: {', '.join(accepted)}")
        preset = read_preset_file(PRESETS_DIR / f"{name}.json")
    notebooks = preset["notebooks"]
    if scale == "full":
        return notebooks
    scales = preset.get("scales", {})
    if scale not in scales:
        raise UsageError(f"--scale {scale}: preset {name!r} has the scales full, {', '.join(scales) or '(none other)'}")
    return {stem: {**parameters, **scales[scale].get(stem, {})} for stem, parameters in notebooks.items()}


def default_notebooks_dir() -> Path:
    """``notebooks/`` of the source checkout holding the package (editable install), else ``./notebooks``."""
    for parent in PACKAGE_DIR.parents:
        if (parent / "pyproject.toml").is_file() and (parent / "notebooks").is_dir():
            return parent / "notebooks"
    return Path.cwd() / "notebooks"


def find_notebooks(notebooks_dir: Path) -> dict[str, Path]:
    """``{stem: path}`` of the numbered notebooks in ``notebooks_dir``, in running order."""
    return {path.stem: path for path in sorted(notebooks_dir.glob(NOTEBOOK_PATTERN))}


def match_notebook(selector: str, stems: list[str]) -> str | None:
    """The stem that ``selector`` names: a full stem, a file name, or the number prefix (``01``)."""
    selector = selector.removesuffix(".ipynb")
    for stem in stems:
        if selector == stem or selector == stem.split("_", 1)[0]:
            return stem
    return None


def select_notebooks(
    notebooks_dir: Path, preset_name: str, preset: dict[str, dict], only: list[str] | None
) -> list[str]:
    """Stems to run, in order. Explicit ``--only`` choices must exist and have preset parameters."""
    existing = find_notebooks(notebooks_dir)
    if only:
        chosen = []
        for selector in only:
            stem = match_notebook(selector, list(existing))
            if stem is None:
                raise UsageError(
                    f"--only {selector}: no such notebook in {notebooks_dir}; existing notebooks: "
                    f"{', '.join(existing) or 'none'}"
                )
            if stem not in preset:
                raise UsageError(f"--only {selector}: preset {preset_name!r} has no parameters for {stem}")
            chosen.append(stem)
        return [stem for stem in existing if stem in chosen]

    for stem in preset:
        if stem not in existing:
            print(f"skipping {stem}: listed in preset {preset_name!r} but {stem}.ipynb does not exist yet")
    for stem in existing:
        if stem not in preset:
            print(f"skipping {stem}: preset {preset_name!r} has no parameters for it")
    return [stem for stem in existing if stem in preset]


def notebook_parameters(preset_parameters: dict, overrides: dict, output_dir: Path) -> dict:
    """Parameters injected into one notebook; relative paths are resolved against the current directory
    because the notebook runs with the notebooks folder as its working directory."""
    parameters = {**preset_parameters, **overrides}
    for key in ("model_path", "data_dir", "coco_images_dir"):
        if key in parameters and parameters[key] is not None:
            parameters[key] = str(Path(parameters[key]).expanduser().resolve())
    parameters["output_dir"] = str(output_dir.resolve())
    return parameters


# --------------------------------------------------------------------------------------------------- running


def run_notebook(notebook: Path, executed: Path, parameters: dict, notebooks_dir: Path,
                 progress_bar: bool | None = None) -> None:
    """Execute ``notebook`` with papermill, writing the executed copy to ``executed``
    (progress bar by default only on a terminal)."""
    import papermill

    executed.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(
        input_path=str(notebook),
        output_path=str(executed),
        parameters=parameters,
        kernel_name=KERNEL_NAME,
        cwd=str(notebooks_dir),
        progress_bar=sys.stderr.isatty() if progress_bar is None else progress_bar,
    )


def describe_failure(stem: str, error: Exception, executed: Path) -> str:
    """One message naming the notebook, the failing cell and the error."""
    from papermill.exceptions import PapermillExecutionError

    if isinstance(error, PapermillExecutionError):
        evalue = str(error.evalue).strip().splitlines()
        first_line = evalue[0] if evalue else ""
        where = f"cell In [{error.exec_count}] (cell index {error.cell_index})"
        what = f"{error.ename}: {first_line}"
    else:
        where = "before a cell finished"
        what = f"{type(error).__name__}: {error}"
    if Path(executed).is_file():
        return f"notebook {stem} failed at {where}: {what}\nexecuted notebook with the traceback: {executed}"
    return f"notebook {stem} failed at {where}: {what}\n(no executed notebook was written)"


def check_processes(processes) -> int:
    """``--processes``: how many notebooks run at once, an integer >= 1."""
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise UsageError(f"--processes {processes!r}: must be an integer >= 1 (how many notebooks run at once)")
    return processes


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def thread_environment(processes: int, cores: int | None = None) -> dict[str, str]:
    """Thread-count variables for each of ``processes`` concurrent notebook kernels: ``max(1, cores // processes)``
    threads each, so the kernels together use the cores once instead of each assuming the whole machine. A variable
    already set in the environment is passed on unchanged (an explicit choice wins)."""
    threads = str(max(1, (cores or available_cores()) // processes))
    return {name: os.environ.get(name, threads) for name in THREAD_VARIABLES}


def visible_gpus() -> list[str]:
    """The GPUs this process may use: ``CUDA_VISIBLE_DEVICES`` when set, else every CUDA device torch sees."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip() and g.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # no usable torch / driver: no GPU
        return []


def run_in_worker(stem: str, notebook: Path, executed: Path, parameters: dict, notebooks_dir: Path,
                  environment: dict[str, str]) -> tuple[str, float, str | None]:
    """One notebook in a worker process: ``(stem, seconds, failure message or None)``.

    ``environment`` goes into the worker's environment, which papermill's kernel inherits; the failure is described
    here (:func:`describe_failure`) because papermill's exceptions do not always survive pickling."""
    os.environ.update(environment)
    started = time.perf_counter()
    try:
        run_notebook(notebook, executed, parameters, notebooks_dir, progress_bar=False)
    except Exception as error:  # any kernel or cell failure, reported by the parent
        return stem, time.perf_counter() - started, describe_failure(stem, error, executed)
    return stem, time.perf_counter() - started, None


def run_sequentially(jobs: list[tuple], notebooks_dir: Path) -> tuple[list[str], list[str]]:
    """Run ``jobs`` (stem, notebook, executed, parameters) in order, stopping at the first failure.
    Returns the finished stems and the failure messages."""
    finished = []
    for position, (stem, notebook, executed, parameters) in enumerate(jobs, start=1):
        print(f"[{position}/{len(jobs)}] {stem} -> {parameters['output_dir']}", flush=True)
        started = time.perf_counter()
        try:
            run_notebook(notebook, executed, parameters, notebooks_dir)
        except Exception as error:  # report any kernel or cell failure per notebook, then stop
            return finished, [describe_failure(stem, error, executed)]
        print(f"    done in {time.perf_counter() - started:.1f} s; executed copy: {executed}", flush=True)
        finished.append(stem)
    return finished, []


def run_concurrently(jobs: list[tuple], notebooks_dir: Path, processes: int) -> tuple[list[str], list[str]]:
    """Run ``jobs`` with up to ``processes`` notebooks at once, each in its own worker process (spawned, so no
    kernel or ZeroMQ state is forked). After a failure no further notebook starts; those already running finish
    and keep their outputs. Returns the finished stems (in running order) and the failure messages."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    workers = min(processes, len(jobs))
    environment = thread_environment(workers)
    on_gpu = any(str(job[3].get("device", "")).startswith("cuda") for job in jobs)
    free_gpus = visible_gpus() if on_gpu else []
    print(f"running up to {workers} notebooks at once; each kernel gets "
          + ", ".join(f"{k}={v}" for k, v in environment.items())
          + (f" and one of the GPUs {','.join(free_gpus)} (CUDA_VISIBLE_DEVICES)" if free_gpus else ""), flush=True)
    waiting, running, finished, failures = list(enumerate(jobs, start=1)), {}, [], []
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        while waiting or running:
            while waiting and len(running) < workers and not failures:
                position, (stem, notebook, executed, parameters) = waiting.pop(0)
                job_environment, gpu = dict(environment), None
                if free_gpus and str(parameters.get("device", "")).startswith("cuda"):
                    gpu = free_gpus.pop(0)   # one GPU per notebook process while it runs
                    job_environment["CUDA_VISIBLE_DEVICES"] = gpu
                    parameters = {**parameters, "device": "cuda"}
                print(f"[{position}/{len(jobs)}] {stem} -> {parameters['output_dir']} (started"
                      + (f" on GPU {gpu})" if gpu is not None else ")"), flush=True)
                future = pool.submit(run_in_worker, stem, notebook, executed, parameters, notebooks_dir,
                                     job_environment)
                running[future] = (executed, gpu)
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                executed, gpu = running.pop(future)
                if gpu is not None:
                    free_gpus.append(gpu)
                try:
                    stem, seconds, failure = future.result()
                except Exception as error:  # the worker process itself died
                    stem = executed.stem
                    failure = describe_failure(stem, error, executed)
                if failure:
                    failures.append(failure)
                else:
                    finished.append(stem)
                    print(f"    {stem} done in {seconds:.1f} s; executed copy: {executed}", flush=True)
    if waiting:
        print(f"not started after the failure: {', '.join(job[0] for _, job in waiting)}", file=sys.stderr)
    order = [job[0] for job in jobs]
    return sorted(finished, key=order.index), failures


def reproduce(args: argparse.Namespace) -> int:
    """Run the selected notebooks (in order, or up to ``--processes`` at once); stop at the first failure,
    keeping finished ones."""
    processes = check_processes(args.processes)
    preset = load_preset(args.preset, args.scale, args.preset_file)
    notebooks_dir = Path(args.notebooks_dir) if args.notebooks_dir else default_notebooks_dir()
    if not notebooks_dir.is_dir():
        raise UsageError(f"notebooks folder {notebooks_dir} does not exist; pass --notebooks-dir")
    for flag, folder in (("--data-dir", args.data_dir), ("--coco-images", args.coco_images)):
        if folder is not None and not Path(folder).is_dir():
            raise UsageError(f"{flag} {folder} is not a folder")
    stems = select_notebooks(notebooks_dir, args.preset, preset, args.only)
    if not stems:
        raise UsageError(f"no notebooks of preset {args.preset!r} exist in {notebooks_dir}")

    overrides = {
        key: value
        for key, value in (("device", args.device), ("model_path", args.model_path), ("data_dir", args.data_dir),
                           ("coco_images_dir", args.coco_images))
        if value is not None
    }
    from unlearnkit.worlds.paper_files import NON_PATH_EVALUATOR_KEYS

    evaluators = {key: str(Path(value).expanduser().resolve()) if key not in NON_PATH_EVALUATOR_KEYS else value
                  for key, value in parse_assignments(args.evaluator, "--evaluator", as_json=False).items()}
    if evaluators:
        overrides["evaluator_weights"] = evaluators
    overrides.update(parse_assignments(args.parameter, "-p"))
    scale_dir = args.preset if args.scale == "full" else f"{args.preset}-{args.scale}"
    preset_root = Path(args.output_dir) / scale_dir
    jobs = [(stem, notebooks_dir / f"{stem}.ipynb", preset_root / "executed" / f"{stem}.ipynb",
             notebook_parameters(preset[stem], overrides, preset_root / stem)) for stem in stems]
    check_run_files(jobs)
    check_job_devices(jobs)
    check_writable(preset_root)
    if processes == 1 or len(jobs) == 1:
        finished, failures = run_sequentially(jobs, notebooks_dir)
    else:
        finished, failures = run_concurrently(jobs, notebooks_dir, processes)
    if failures:
        for failure in failures:
            print(failure, file=sys.stderr)
        if finished:
            print(f"finished notebooks kept: {', '.join(finished)}", file=sys.stderr)
        return 1
    from unlearnkit.reports.index import write_index

    print(f"all {len(finished)} notebooks finished; reports under {preset_root}; index: {write_index(args.output_dir)}")
    return 0


# ------------------------------------------------------------------------------------------- erase and export

METHOD_ALIASES = {"esd": "esd-x"}
MINI_MODEL = "mini"
ERASE_PRESETS_FILE = PRESETS_DIR / "erase" / "settings.json"


def world_name_of(model: str) -> str:
    return "mini" if model == MINI_MODEL else "paper"


def concept_kinds(model: str, names: list[str]) -> list[str]:
    """Each concept's kind, looked up in the world's catalogue without loading a model (unknown names fail here)."""
    kinds = []
    for name in names:
        try:
            if model == MINI_MODEL:
                from unlearnkit.worlds.mini import catalogue

                kinds.append(catalogue.concept(name).kind)
            else:
                from unlearnkit.worlds.paper import paper_concept

                kinds.append(paper_concept(name).kind)
        except ValueError as error:
            raise UsageError(f"--concept {name!r}: {error} (`unlearnkit concepts` lists them)") from None
    return kinds


def erase_preset(preset: str, method: str, kinds: list[str]) -> dict:
    """The settings ``erase --preset`` starts from: the notebooks' mini settings for this method and concept kind,
    or ``{}`` (the Config defaults, the paper's) for ``paper``."""
    presets = json.loads(ERASE_PRESETS_FILE.read_text(encoding="utf-8"))
    if preset not in ("mini", "paper"):
        raise UsageError(f"--preset {preset!r}: expected mini or paper")
    by_kind = presets[preset].get(method, {})
    kind = kinds[0] if len(set(kinds)) == 1 else "*"
    return json.loads(json.dumps(by_kind.get(kind, by_kind.get("*", {}))))   # a deep copy


def parse_assignments(assignments: list[str] | None, flag: str = "--set", as_json: bool = True) -> dict:
    """``["lr=1e-4", "scope=xattn"]`` -> ``{"lr": 0.0001, "scope": "xattn"}`` (values read as JSON, else text)."""
    parsed = {}
    for item in assignments or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{flag} {item!r}: expected KEY=VALUE")
        try:
            parsed[key.strip()] = json.loads(text) if as_json else text
        except json.JSONDecodeError:
            parsed[key.strip()] = text
    return parsed


def check_run_files(jobs: list[tuple]) -> None:
    """Before any notebook starts: one error listing every file the selected paper-world notebooks lack."""
    from unlearnkit.worlds.paper_files import NOTEBOOK_NEEDS, missing_files

    missing = []
    for stem, _, _, parameters in jobs:
        if parameters.get("world") != "paper":
            continue
        for line in missing_files(NOTEBOOK_NEEDS.get(stem, ()), model_path=parameters.get("model_path"),
                                  data_dir=parameters.get("data_dir"),
                                  evaluator_weights=parameters.get("evaluator_weights"),
                                  coco_images_dir=parameters.get("coco_images_dir")):
            if line not in missing:
                missing.append(line)
    if missing:
        raise UsageError("nothing was run; the paper world is missing files:\n  - " + "\n  - ".join(missing))


def check_job_devices(jobs: list[tuple]) -> None:
    """Before any notebook starts: every notebook's ``device`` (preset or ``--device``) exists on this machine."""
    from unlearnkit.core.validation import check_device

    gpus = len(visible_gpus())
    for stem, _, _, parameters in jobs:
        if parameters.get("device") is not None:
            try:
                check_device(parameters["device"], f"notebook {stem}: device", cuda_devices=gpus)
            except ValueError as error:
                raise UsageError(f"{error} (pass --device to choose another)") from None


def check_writable(folder: Path) -> None:
    """``folder`` (created if needed) accepts files, checked before any compute."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".unlearnkit-write-test"
        probe.write_text("", encoding="utf-8")
        probe.unlink()
    except OSError as error:
        raise UsageError(f"output folder {folder} is not writable ({error})") from None


def check_model_argument(model: str) -> None:
    """``mini`` or an existing diffusers folder (it must hold ``model_index.json``)."""
    if model == MINI_MODEL:
        return
    folder = Path(model).expanduser()
    if not (folder / "model_index.json").is_file():
        raise UsageError(f"--model {model}: not 'mini' and not a diffusers folder (no model_index.json there); "
                         f"download SD v1.4 once into a local folder and pass that folder")
    from unlearnkit.core.files import check_code_free_folder

    check_code_free_folder(folder, "the --model folder")


def check_out_dir(out: str, force: bool) -> Path:
    """``--out``: a folder that is empty (or ``force``) and writable — created if needed, checked before any
    compute."""
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()) and not force:
        raise UsageError(f"--out {out} is not empty; pass --force to write into it")
    check_writable(folder)
    return folder


def load_world_for(model: str, device: str):
    from unlearnkit.worlds import load_world

    if model == MINI_MODEL:
        return load_world("mini", device=device)
    return load_world("paper", device=device, model_path=str(Path(model).expanduser()))


def resolve_concepts(world, names: list[str], prompts: list[str] | None, anchor: str | None):
    """The world's concepts by name, with ``--prompt`` / ``--anchor`` overriding theirs."""
    from dataclasses import replace

    concepts = []
    for name in names:
        concept = world.concept(name)
        if prompts:
            concept = replace(concept, prompts=tuple(prompts))
        if anchor is not None:
            concept = replace(concept, anchor=anchor)
        concepts.append(concept)
    return concepts


def check_erase_arguments(args: argparse.Namespace) -> tuple[str, dict, Path]:
    """Everything ``erase`` can check without a model: method, concepts, hyperparameters, paths."""
    from unlearnkit import methods
    from unlearnkit.methods.contract import INFERENCE

    method = METHOD_ALIASES.get(args.method, args.method)
    registry = methods.registry()
    if method not in registry:
        known = sorted([*registry, *METHOD_ALIASES])
        raise UsageError(f"--method {args.method!r} is not known; known methods: {', '.join(known)}")
    if INFERENCE in registry[method].capabilities:
        raise UsageError(f"--method {method} changes sampling, not weights: there is no Edit to write "
                         f"(it is a row of the notebooks' tables)")
    for name in args.concept:
        if not name.strip():
            raise UsageError("--concept is empty: name the concept to erase")
    if len(set(args.concept)) != len(args.concept):
        raise UsageError(f"--concept repeats a concept: {args.concept}")
    if len(args.concept) > 1 and not registry[method].takes_several:
        several = [n for n, m in registry.items() if m.takes_several and INFERENCE not in m.capabilities]
        raise UsageError(f"--method {method} erases one concept per run; got {len(args.concept)} "
                         f"(methods that take several: {', '.join(several)})")
    if args.prompt is not None and any(not p.strip() for p in args.prompt):
        raise UsageError("--prompt is empty")
    check_model_argument(args.model)
    kinds = concept_kinds(args.model, args.concept)
    hyperparameters = {**erase_preset(args.preset or world_name_of(args.model), method, kinds),
                       **parse_assignments(args.set)}
    try:
        methods.check_hyperparameters(method, **hyperparameters)
    except (ValueError, TypeError) as error:
        raise UsageError(f"--set: {error}") from None
    return method, hyperparameters, check_out_dir(args.out, args.force)


def erase_command(args: argparse.Namespace) -> int:
    """Erase the concept(s) and write ``edit.safetensors`` (+ one file per stage of a sequential method, or per
    concept of a method that makes one Edit each) and ``erase.json`` (what was run: method, concepts,
    hyperparameters, versions, git revision, wall time)."""
    from unlearnkit import methods
    from unlearnkit.methods.contract import SEQUENTIAL
    from unlearnkit.sampling.cache import model_fingerprint
    from unlearnkit.reports import provenance

    method, hyperparameters, out = check_erase_arguments(args)
    started = time.perf_counter()
    world = load_world_for(args.model, args.device)
    try:
        concepts = resolve_concepts(world, args.concept, args.prompt, args.anchor)
    except (ValueError, KeyError) as error:
        raise UsageError(f"--concept: {error}") from None
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    erasure = methods.erase(method, world, concepts, progress=True, **hyperparameters)
    sequential = SEQUENTIAL in methods.get(method).capabilities
    if sequential or len(erasure.edits) > 1:
        part = "stage" if sequential else "concept"
        for index, one in enumerate(erasure.edits, start=1):
            files[f"{part} {index}"] = str(one.save(out / f"{part}_{index:02d}.safetensors"))
        edit = erasure.total()
        edit.name = f"{method}:{'+'.join(c.name for c in concepts)}"
    else:
        edit = erasure.edit
    files["edit"] = str(edit.save(out / "edit.safetensors"))
    record = provenance(
        {"method": method, "concepts": [c.name for c in concepts], "prompts": [list(c.prompts) for c in concepts],
         "anchors": [c.anchor for c in concepts], "preset": args.preset or world_name_of(args.model),
         "hyperparameters": hyperparameters, "model": args.model,
         "device": args.device},
        extra={"model_id": model_fingerprint(world.pipe), "files": files, "changed_entries": edit.num_changed(),
               "delta_l1_per_tensor": edit.norm_p(1)})
    record["wall_time_s"] = round(time.perf_counter() - started, 3)
    (out / "erase.json").write_text(json.dumps(record, indent=2))
    print(f"erased {', '.join(c.name for c in concepts)} with {method} in {record['wall_time_s']:.1f} s; "
          f"edit: {files['edit']}")
    return 0


def export_command(args: argparse.Namespace) -> int:
    """Turn an Edit file into a diffusers folder or a diffusers LoRA folder."""
    from unlearnkit.core.edits import Edit
    from unlearnkit.export import FORMATS, export_edit

    edit_path = Path(args.edit)
    if not edit_path.is_file() or edit_path.suffix != ".safetensors":
        raise UsageError(f"EDIT {args.edit}: expected an existing .safetensors file written by `unlearnkit erase`")
    if args.format not in FORMATS:
        raise UsageError(f"--format {args.format!r}: expected one of {', '.join(FORMATS)}")
    if args.rank is not None and args.rank <= 0:
        raise UsageError(f"--rank {args.rank}: must be a positive integer")
    if args.rank is not None and args.format != "lora":
        raise UsageError("--rank applies to --format lora only")
    check_model_argument(args.model)
    out = check_out_dir(args.out, args.force)
    edit = Edit.load(edit_path)
    if not edit.deltas:
        raise UsageError(f"EDIT {args.edit}: the edit changes nothing; there is nothing to export")
    not_weights = sorted(n for n in edit.deltas if not n.endswith(".weight"))
    if args.format == "lora" and not_weights and not args.drop_non_linear:   # known from the names: before the load
        raise UsageError(f"a LoRA holds only linear-layer weights; edit {edit.name!r} also changes {len(not_weights)} "
                         f"other tensors ({', '.join(not_weights[:3])} …). Export it with --format diffusers, or pass "
                         f"--drop-non-linear to leave them out")
    pipe = load_world_for(args.model, args.device).pipe
    try:
        result = export_edit(edit, pipe, out, args.format, args.rank, args.drop_non_linear)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if args.format == "lora":
        print(f"wrote a rank-{result.rank} LoRA to {out} (relative error {result.relative_error:.2e}; "
              f"load with pipe.load_lora_weights({str(out)!r}))")
        if result.dropped:
            print(f"dropped {len(result.dropped)} non-linear deltas: {sorted(result.dropped)}")
    else:
        print(f"wrote the erased pipeline to {out} (load with StableDiffusionPipeline.from_pretrained({str(out)!r}))")
    return 0


METHODS_PLACEHOLDER = "{registered methods}"


class MethodListFormatter(argparse.RawTextHelpFormatter):
    """Writes the registry's methods, one line each, where a description says :data:`METHODS_PLACEHOLDER` — only
    when the help is printed, so the other commands do not import every method module."""

    def _fill_text(self, text, width, indent):
        if METHODS_PLACEHOLDER in text:
            from unlearnkit import methods
            from unlearnkit.methods.contract import INFERENCE

            registry = methods.registry()
            lines = [f"  {n:<10} {m.description}" for n, m in registry.items() if INFERENCE not in m.capabilities]
            sampling = [n for n, m in registry.items() if INFERENCE in m.capabilities]
            if sampling:
                lines.append(f"  (applied while sampling, no Edit to write: {', '.join(sampling)})")
            text = text.replace(METHODS_PLACEHOLDER, "\n".join(lines))
        return super()._fill_text(text, width, indent)


def add_erase_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "erase", help="erase a concept and write the Edit (safetensors)", formatter_class=MethodListFormatter,
        description="Erase a concept (several: at once for the methods that take several, in order for the sequential "
                    "ones) and write DIR/edit.safetensors and DIR/erase.json.\nAll inputs are checked before the model "
                    f"is loaded.\n\nmethods:\n{METHODS_PLACEHOLDER}")
    parser.add_argument("--method", required=True, help="a method listed above (esd = esd-x)")
    parser.add_argument("--preset", choices=("mini", "paper"),
                        help="start from the notebooks' settings for that world (default: the --model's world); "
                             "--set overrides them")
    parser.add_argument("--concept", required=True, action="append",
                        help="concept to erase, as the world names it (mini: 'nudity', 'tench', a style or an identity; "
                             "paper: 'nudity', an Imagenette class, an artist, a celebrity, or any text). Repeat for "
                             "several (`unlearnkit concepts` lists them).")
    parser.add_argument("--prompt", action="append", help="a prompt naming the concept (repeat); replaces the world's")
    parser.add_argument("--anchor", help="what the concept is mapped to (AC's anchor, Sculpting Memory's superclass)")
    parser.add_argument("--model", default=MINI_MODEL,
                        help="'mini' (the embedded mini world, default) or a local SD v1.4 diffusers folder")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default: cpu)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="a hyperparameter of the method's config (repeat), value as JSON: --set lr=1e-5 "
                             "--set scope=xattn; unknown keys and bad values are rejected before any compute")
    parser.add_argument("--out", required=True, help="folder for edit.safetensors and erase.json")
    parser.add_argument("--force", action="store_true", help="write into a non-empty --out")
    parser.set_defaults(handler=erase_command)
    return parser


def add_export_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "export", help="export an Edit as a diffusers folder or a diffusers LoRA",
        description="diffusers: the edited pipeline (StableDiffusionPipeline.from_pretrained(DIR)). lora: the edit as "
                    "LoRA factors from a truncated SVD of each linear-weight delta (pipe.load_lora_weights(DIR)); "
                    "exact at full rank.")
    parser.add_argument("edit", help="an edit file written by `unlearnkit erase` (edit.safetensors)")
    parser.add_argument("--format", required=True, help="diffusers or lora")
    parser.add_argument("--model", default=MINI_MODEL, help="the model the edit was made on: 'mini' or a diffusers folder")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--rank", type=int, help="LoRA rank (default: exact, the largest rank of any delta)")
    parser.add_argument("--drop-non-linear", action="store_true",
                        help="LoRA only: drop deltas a LoRA cannot hold (biases, norms, convolutions) instead of failing")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ... (default: cpu)")
    parser.add_argument("--force", action="store_true", help="write into a non-empty --out")
    parser.set_defaults(handler=export_command)
    return parser


# ------------------------------------------------------------------------------------------------- interface


def add_reproduce_parser(subparsers) -> argparse.ArgumentParser:
    """``reproduce``: run the notebooks of a preset."""
    parser = subparsers.add_parser(
        "reproduce",
        help="run the notebooks headless with a preset's parameters",
        description="Run notebooks/0N_*.ipynb in order with papermill (or up to --processes at once), writing "
                    "reports/<preset>/<notebook>/.",
    )
    parser.add_argument("--preset", required=True, help=f"one of: {', '.join(available_presets())}")
    parser.add_argument("--scale", default="full",
                        help="full (default) or a scale the preset defines (paper: smoke — every count shrunk, the same "
                             "code, claims recorded not asserted); reports go to reports/<preset>-<scale>/")
    parser.add_argument("--preset-file", help="a preset JSON file of your own, used instead of --preset's")
    parser.add_argument("--only", nargs="+", metavar="NOTEBOOK", help="run only these (e.g. 01 03)")
    parser.add_argument("--device", help="override the preset's device (cpu, cuda, cuda:1, ...)")
    parser.add_argument("--model-path", help="local diffusers folder of Stable Diffusion v1.4 (paper world)")
    parser.add_argument("--data-dir", help="folder with the prompt CSVs (I2P, COCO-30k, Imagenette)")
    parser.add_argument("--evaluator", action="append", metavar="KEY=PATH",
                        help="a paper-world evaluator file (keys: open_clip, open_clip_config, inception, resnet50, "
                             "alexnet, nudenet; identity=module:callable); see unlearnkit.worlds.paper_files")
    parser.add_argument("--coco-images", help="folder of real MS-COCO images, FID's reference (without it FID is skipped)")
    parser.add_argument("-p", "--parameter", action="append", metavar="NAME=VALUE",
                        help="override a notebook parameter in every notebook (value read as JSON, else text)")
    parser.add_argument("--output-dir", default="reports", help="reports root (default: reports)")
    parser.add_argument("--notebooks-dir", help="folder of the notebooks (default: the checkout's notebooks/)")
    parser.add_argument("--processes", type=int, default=1, metavar="N",
                        help="run up to N notebooks at once, each in its own process with OMP_NUM_THREADS = "
                             "max(1, cores // N) unless already set (default: 1, one after another)")
    parser.set_defaults(handler=reproduce)
    return parser


EVALUATION_SEED = 5000   # evaluation seeds start here, away from every training seed of the notebooks


def evaluate_command(args: argparse.Namespace) -> int:
    """Measure an edit against the original model: how often the world's evaluator still finds each erased and each
    kept concept, CLIP on generic captions, and ‖Δθ‖; print the table and write ``evaluate.csv`` / ``.json``."""
    import pandas as pd
    from tqdm.auto import tqdm

    from unlearnkit.core.edits import Edit
    from unlearnkit.experiments.evaluation import generate_edited
    from unlearnkit.metrics.clip_score import mean_clip_score
    from unlearnkit.reports import provenance

    edit_path = Path(args.edit)
    if not edit_path.is_file() or edit_path.suffix != ".safetensors":
        raise UsageError(f"EDIT {args.edit}: expected an existing .safetensors file written by `unlearnkit erase`")
    for flag, value in (("--images", args.images), ("--captions", args.captions), ("--steps", args.steps)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} {value}: must be a positive integer")
    if not 0 <= args.first_seed < 2 ** 32 - args.images:
        raise UsageError(f"--first-seed {args.first_seed}: must be in [0, 2**32 - --images)")
    check_model_argument(args.model)
    erased = list(args.concept or [])
    record_file = edit_path.with_name("erase.json")
    if not erased and record_file.is_file():
        from unlearnkit.core.files import read_json

        record = read_json(record_file, "the erase.json `unlearnkit erase` writes")
        erased = (record.get("parameters", {}) if isinstance(record, dict) else {}).get("concepts")
        if not (isinstance(erased, list) and erased and all(isinstance(n, str) for n in erased)):
            raise UsageError(f"{record_file}: no list of concept names under parameters.concepts; name the erased "
                             f"concept(s) with --concept")
    if not erased:
        raise UsageError("name the erased concept(s) with --concept (no erase.json beside the edit to read them from)")
    kinds = concept_kinds(args.model, erased)
    if args.kept:
        concept_kinds(args.model, list(args.kept))
    out = Path(args.out) if args.out else edit_path.parent
    check_writable(out)
    cache = Path(args.cache_dir) if args.cache_dir else out / ".generations"
    check_writable(cache)
    edit = Edit.load(edit_path)
    world = load_world_for(args.model, args.device)
    edit.check_against(world.pipe.unet)
    kept = list(args.kept or [n for n in world.concepts(kinds[0]) if n not in erased][:3])
    sampler = world.sampler if args.steps is None else replace(world.sampler, num_inference_steps=args.steps)
    rows = []
    for role, names in (("erased", erased), ("kept", kept)):
        for name in tqdm(names, desc=f"{role} concepts"):
            pairs = world.evaluation_prompts(name, args.images, args.first_seed)
            prompts, seeds = [p for p, _ in pairs], [s for _, s in pairs]
            row = {"concept": name, "role": role}
            for model, model_edit in (("original", None), ("edited", edit)):
                images = generate_edited(world, model_edit, prompts, seeds, cache, sampler)
                row[f"{model} detected"] = float(world.detect(name, images).mean())
            rows.append(row)
    captions = world.coco_prompts(args.captions)
    scorer = world.clip_scorer()
    clip = {}
    for model, model_edit in tqdm((("original", None), ("edited", edit)), desc="generic captions"):
        images = generate_edited(world, model_edit, captions.prompt, captions.seed, cache, sampler)
        clip[model] = mean_clip_score(images, list(captions.prompt), scorer)["CLIP"]
    table = pd.DataFrame(rows)
    summary = {"CLIP original": clip["original"], "CLIP edited": clip["edited"], "‖Δθ‖₁ / tensor": edit.norm_p(1),
               "‖Δθ‖₂ / tensor": edit.norm_p(2), "changed entries": edit.num_changed()}
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print("  ".join(f"{k} {v:.4g}" for k, v in summary.items()))
    table.to_csv(out / "evaluate.csv", index=False)
    record = provenance({"edit": str(edit_path), "model": args.model, "erased": erased, "kept": kept,
                         "images_per_concept": args.images, "captions": args.captions,
                         "first_seed": args.first_seed, "sampler": sampler.as_dict()},
                        extra={"rows": rows, **summary, "world": world.describe()})
    (out / "evaluate.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    print(f"wrote {out / 'evaluate.csv'} and {out / 'evaluate.json'}")
    return 0


def add_evaluate_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate", help="measure an erased model: erased and kept concepts, CLIP, ‖Δθ‖",
        description="Generate each erased and kept concept's evaluation prompts with the original and the edited "
                    "model (the world's own sampler) and report how often the world's evaluator finds the concept, "
                    "CLIP on generic captions and the size of the edit.")
    parser.add_argument("edit", help="an edit file written by `unlearnkit erase` (edit.safetensors)")
    parser.add_argument("--concept", action="append", help="an erased concept (default: those in erase.json beside "
                                                           "the edit)")
    parser.add_argument("--kept", action="append", help="a concept that should survive (default: three others of "
                                                        "the same kind)")
    parser.add_argument("--model", default=MINI_MODEL, help="the model the edit was made on: 'mini' or a diffusers folder")
    parser.add_argument("--images", type=int, default=16, help="images per concept (default 16)")
    parser.add_argument("--captions", type=int, default=32, help="generic captions for CLIP (default 32)")
    parser.add_argument("--steps", type=int, help="DDIM steps of the evaluation sampler (default: the world's; the "
                                                  "mini notebooks evaluate objects and styles at 10)")
    parser.add_argument("--first-seed", type=int, default=EVALUATION_SEED,
                        help=f"first evaluation seed (default {EVALUATION_SEED}; the mini world's held-out seeds "
                             f"start at 50000)")
    parser.add_argument("--out", help="where to write evaluate.csv / evaluate.json (default: the edit's folder)")
    parser.add_argument("--cache-dir", help="generated-image cache (default: OUT/.generations)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ... (default: cpu)")
    parser.set_defaults(handler=evaluate_command)
    return parser


def list_concepts(args: argparse.Namespace) -> int:
    """Print every concept of a world: name, kind, anchor (superclass / AC anchor) and its first prompt."""
    from unlearnkit.worlds import catalogue
    from unlearnkit.worlds.protocol import CONCEPT_KINDS

    if args.kind is not None and args.kind not in CONCEPT_KINDS:
        raise UsageError(f"--kind {args.kind!r}: expected one of {', '.join(CONCEPT_KINDS)}")
    concepts = catalogue(args.world, args.kind)
    width = max(len(c.name) for c in concepts)
    print(f"{'name':<{width}}  kind      anchor                    first prompt")
    for c in concepts:
        print(f"{c.name:<{width}}  {c.kind:<8}  {(c.anchor or '(empty prompt)'):<24}  {c.prompts[0]}")
    print(f"{len(concepts)} concepts in the {args.world} world")
    return 0


def add_concepts_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("concepts", help="list the concepts a world knows (no model is loaded)",
                                   description="List a world's concepts with their kind, anchor and first prompt.")
    parser.add_argument("--world", choices=("mini", "paper"), default="mini")
    parser.add_argument("--kind", help="object, style, identity or unsafe (default: all)")
    parser.set_defaults(handler=list_concepts)
    return parser


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser and its subcommand parsers by name."""
    parser = argparse.ArgumentParser(prog="unlearnkit", description=__doc__.splitlines()[0])
    debug_help = "on an error, show the full traceback instead of one line"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands = {"reproduce": add_reproduce_parser(subparsers), "erase": add_erase_parser(subparsers),
                "export": add_export_parser(subparsers), "concepts": add_concepts_parser(subparsers),
                "evaluate": add_evaluate_parser(subparsers)}
    for command in commands.values():   # also accepted after the command; SUPPRESS keeps a global --debug
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    return parser, commands


#: errors that mean the command line (or a file it names) is wrong, not that a run failed: exit status 2
BAD_USAGE_ERRORS = (UsageError, FileNotFoundError, NotADirectoryError)


def check_devices(args: argparse.Namespace) -> None:
    """``--device`` names a device this machine has (checked before anything is loaded)."""
    from unlearnkit.core.validation import check_device

    device = getattr(args, "device", None)
    if device is None:
        return
    try:
        if args.command == "reproduce":   # the notebooks' kernels see the GPUs CUDA_VISIBLE_DEVICES lists
            check_device(device, "--device", cuda_devices=len(visible_gpus()))
        else:
            check_device(device, "--device")
    except ValueError as error:
        raise UsageError(str(error)) from None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``unlearnkit`` console script; returns the exit status.

    Errors print one message and no traceback (``--debug`` shows it): bad usage — our validation errors, unknown
    names, missing or unusable files — exits with status 2 (argparse's convention), a run that fails returns 1.
    """
    from unlearnkit.core.errors import UnlearnkitError

    parser, commands = build_parser()
    args = parser.parse_args(argv)
    prog = commands[args.command].prog
    try:
        check_devices(args)
        return args.handler(args)
    except (*BAD_USAGE_ERRORS, UnlearnkitError) as error:
        if args.debug:
            raise
        commands[args.command].exit(2, f"{prog}: error: {error}\n")
    except Exception as error:  # a failed run: one line, the traceback only on request
        if args.debug:
            raise
        print(f"{prog}: failed: {type(error).__name__}: {error} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
