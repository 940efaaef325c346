"""``unlearnkit`` command line: ``unlearnkit reproduce --preset mini|paper`` runs the notebooks headless.

Each notebook gets its preset parameters (plus command-line overrides and its own ``output_dir``) injected
by papermill, and its executed copy is kept under ``<output-dir>/<preset>/executed/``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PRESETS_DIR = PACKAGE_DIR / "presets"
KERNEL_NAME = "python3"
NOTEBOOK_PATTERN = "[0-9][0-9]_*.ipynb"


class UsageError(Exception):
    """A bad command line or missing input, found before any notebook runs."""


# ------------------------------------------------------------------------------------- presets and notebooks


def available_presets() -> list[str]:
    """Names of the presets shipped in ``unlearnkit/presets/``."""
    return sorted(path.stem for path in PRESETS_DIR.glob("*.json"))


def load_preset(name: str) -> dict[str, dict]:
    """The per-notebook parameters of preset ``name``: ``{notebook stem: {parameter: value}}``."""
    accepted = available_presets()
    if name not in accepted:
        raise UsageError(f"unknown preset {name!r}; accepted: {', '.join(accepted)}")
    preset = json.loads((PRESETS_DIR / f"{name}.json").read_text(encoding="utf-8"))
    return preset["notebooks"]


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
    for key in ("model_path", "data_dir"):
        if key in parameters and parameters[key] is not None:
            parameters[key] = str(Path(parameters[key]).expanduser().resolve())
    parameters["output_dir"] = str(output_dir.resolve())
    return parameters


# --------------------------------------------------------------------------------------------------- running


def run_notebook(notebook: Path, executed: Path, parameters: dict, notebooks_dir: Path) -> None:
    """Execute ``notebook`` with papermill, writing the executed copy to ``executed``."""
    import papermill

    executed.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(
        input_path=str(notebook),
        output_path=str(executed),
        parameters=parameters,
        kernel_name=KERNEL_NAME,
        cwd=str(notebooks_dir),
        progress_bar=sys.stderr.isatty(),
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
    return f"notebook {stem} failed at {where}: {what}\nexecuted notebook with the traceback: {executed}"


def reproduce(args: argparse.Namespace) -> int:
    """Run the selected notebooks in order; stop at the first failure, keeping finished ones."""
    preset = load_preset(args.preset)
    notebooks_dir = Path(args.notebooks_dir) if args.notebooks_dir else default_notebooks_dir()
    if not notebooks_dir.is_dir():
        raise UsageError(f"notebooks folder {notebooks_dir} does not exist; pass --notebooks-dir")
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        raise UsageError(f"--data-dir {args.data_dir} is not a folder")
    stems = select_notebooks(notebooks_dir, args.preset, preset, args.only)
    if not stems:
        raise UsageError(f"no notebooks of preset {args.preset!r} exist in {notebooks_dir}")

    overrides = {
        key: value
        for key, value in (("device", args.device), ("model_path", args.model_path), ("data_dir", args.data_dir))
        if value is not None
    }
    preset_root = Path(args.output_dir) / args.preset
    finished = []
    for position, stem in enumerate(stems, start=1):
        parameters = notebook_parameters(preset[stem], overrides, preset_root / stem)
        executed = preset_root / "executed" / f"{stem}.ipynb"
        print(f"[{position}/{len(stems)}] {stem} -> {parameters['output_dir']}", flush=True)
        started = time.perf_counter()
        try:
            run_notebook(notebooks_dir / f"{stem}.ipynb", executed, parameters, notebooks_dir)
        except Exception as error:  # report any kernel or cell failure per notebook, then stop
            print(describe_failure(stem, error, executed), file=sys.stderr)
            if finished:
                print(f"finished notebooks kept: {', '.join(finished)}", file=sys.stderr)
            return 1
        print(f"    done in {time.perf_counter() - started:.1f} s; executed copy: {executed}", flush=True)
        finished.append(stem)
    print(f"all {len(finished)} notebooks finished; reports under {preset_root}")
    return 0


# ------------------------------------------------------------------------------------------------- interface


def add_reproduce_parser(subparsers) -> argparse.ArgumentParser:
    """``reproduce``: run the notebooks of a preset."""
    parser = subparsers.add_parser(
        "reproduce",
        help="run the notebooks headless with a preset's parameters",
        description="Run notebooks/0N_*.ipynb in order with papermill, writing reports/<preset>/<notebook>/.",
    )
    parser.add_argument("--preset", required=True, help=f"one of: {', '.join(available_presets())}")
    parser.add_argument("--only", nargs="+", metavar="NOTEBOOK", help="run only these (e.g. 01 03)")
    parser.add_argument("--device", help="override the preset's device (cpu, cuda, cuda:1, ...)")
    parser.add_argument("--model-path", help="local diffusers folder of Stable Diffusion v1.4 (paper world)")
    parser.add_argument("--data-dir", help="folder with the prompt CSVs (I2P, COCO-30k, Imagenette)")
    parser.add_argument("--output-dir", default="reports", help="reports root (default: reports)")
    parser.add_argument("--notebooks-dir", help="folder of the notebooks (default: the checkout's notebooks/)")
    parser.set_defaults(handler=reproduce)
    return parser


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser and its subcommand parsers by name."""
    parser = argparse.ArgumentParser(prog="unlearnkit", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands = {"reproduce": add_reproduce_parser(subparsers)}
    return parser, commands


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``unlearnkit`` console script; returns the exit status.

    Usage errors exit with status 2 (argparse convention); a failing notebook returns 1.
    """
    parser, commands = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except UsageError as error:
        commands[args.command].error(str(error))


if __name__ == "__main__":
    sys.exit(main())
