"""Tables, figures and provenance records that notebooks write under ``reports/<preset>/<notebook>/``.

Everything here is world- and method-agnostic: a notebook computes a ``pandas.DataFrame`` or a matplotlib
figure and hands it over; this module decides file names and formats and records what produced them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path, PurePath

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

PACKAGE_DIR = Path(__file__).resolve().parent.parent

# Distribution names whose versions every run record carries.
RECORDED_DISTRIBUTIONS = (
    "torch",
    "torchvision",
    "diffusers",
    "transformers",
    "peft",
    "numpy",
    "pandas",
    "unlearnkit",
)

MISSING_CELL = "—"


# ----------------------------------------------------------------------------------------------- directories


def report_dir(preset: str, notebook: str, root: str | Path = "reports") -> Path:
    """Create and return ``<root>/<preset>/<notebook>/``."""
    out_dir = Path(root) / preset / notebook
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


# ---------------------------------------------------------------------------------------------------- tables


def format_cell(value) -> str:
    """Render one table cell: floats to 4 significant digits, missing values as an em dash."""
    if value is None:
        return MISSING_CELL
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return format_float(float(value))
    if isinstance(value, tuple):
        return " / ".join(format_cell(part) for part in value)
    if not isinstance(value, str) and pd.api.types.is_scalar(value) and pd.isna(value):
        return MISSING_CELL
    text = str(value)
    return text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def format_float(value: float) -> str:
    """4 significant digits; large magnitudes keep their integer digits instead of switching to exponents."""
    if math.isnan(value):
        return MISSING_CELL
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if 1e4 <= abs(value) < 1e15:
        return f"{value:.0f}"
    return f"{value:.4g}"


def _has_meaningful_index(df: pd.DataFrame) -> bool:
    """A default 0..n-1 RangeIndex carries no information and is left out of written tables."""
    index = df.index
    is_default_range = (
        isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1 and index.name is None
    )
    return not is_default_range


def _column_header(column) -> str:
    if isinstance(column, tuple):
        return " / ".join(str(part) for part in column if str(part))
    return str(column)


def _is_number_column(column: pd.Series) -> bool:
    dtype = column.dtype
    return pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)


def format_markdown_table(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of ``df``; numeric columns right-aligned, index kept if meaningful."""
    headers = [_column_header(column) for column in df.columns]
    series = [df.iloc[:, position] for position in range(df.shape[1])]  # by position: names may repeat
    columns = [[format_cell(value) for value in column.tolist()] for column in series]
    right_aligned = [_is_number_column(column) for column in series]
    if _has_meaningful_index(df):
        index_names = [name for name in df.index.names if name is not None]
        headers.insert(0, " / ".join(str(name) for name in index_names))
        columns.insert(0, [format_cell(label) for label in df.index.tolist()])
        right_aligned.insert(0, False)

    headers = [format_cell(header) if header else "" for header in headers]
    widths = [
        max([len(header), 3, *(len(cell) for cell in column)]) for header, column in zip(headers, columns)
    ]

    def row(cells: list[str]) -> str:
        padded = [
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(cells, widths, right_aligned)
        ]
        return "| " + " | ".join(padded) + " |"

    separator = "| " + " | ".join(
        "-" * (width - 1) + ":" if right else "-" * width for width, right in zip(widths, right_aligned)
    ) + " |"
    body = [row([column[i] for column in columns]) for i in range(len(df))]
    return "\n".join([row(headers), separator, *body]) + "\n"


MANIFEST_FILE = "manifest.json"
CLAIMS_FILE = "claims.json"
#: this process's run: claims recorded by an earlier run (another process) are dropped when this one records its own
RUN_ID = f"{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S.%f')}-{__import__('os').getpid()}"


def _read_json_list_or_dict(path: Path, empty):
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else empty


def _register(out_dir: Path, name: str, entry: dict) -> None:
    """Record an output in ``<out_dir>/manifest.json`` (what it is and which paper table/figure it regenerates)."""
    path = out_dir / MANIFEST_FILE
    manifest = _read_json_list_or_dict(path, {})
    manifest[name] = entry
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")


def record_claim(out_dir: str | Path, claim: str, holds: bool, evidence: str, paper: str | None = None,
                 verdict=None, concepts: str | None = None) -> dict:
    """Record a verdict on a paper's claim, as measured in this run, in ``<out_dir>/claims.json``.

    ``claim`` states what the paper says (e.g. "ANT lowers total NSFW detections below every baseline"),
    ``holds`` whether this run's numbers agree, ``evidence`` the numbers, ``paper`` where the claim is made;
    ``verdict`` (a :class:`unlearnkit.reports.verdicts.Verdict`) adds its outcome (holds / fails / inconclusive)
    and interval, ``concepts`` which concepts it was measured on (held-out or tuning).
    Re-recording the same claim replaces its verdict; the first claim a run records drops an earlier run's
    (:data:`RUN_ID`), so a claim no longer made does not linger. :mod:`unlearnkit.reports.index` collects these.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / CLAIMS_FILE
    claims = [c for c in _read_json_list_or_dict(path, []) if c["claim"] != claim and c.get("run") == RUN_ID]
    entry = {"claim": claim, "holds": bool(holds), "evidence": evidence, "paper": paper, "run": RUN_ID}
    if verdict is not None:
        entry.update(outcome=verdict.outcome, interval=verdict.interval_text(), estimate=verdict.estimate,
                     low=verdict.low, high=verdict.high, threshold=verdict.threshold, direction=verdict.direction,
                     draws=verdict.draws, images=verdict.images)
    if concepts is not None:
        entry["concepts"] = concepts
    claims.append(entry)
    path.write_text(json.dumps(claims, indent=2), encoding="utf-8")
    return entry


def check_claims(out_dir: str | Path, checks: dict, required=None, enforce: bool = True,
                 paper: str | None = None, concepts: str | None = None) -> dict:
    """Record every claim of ``checks`` (:func:`record_claim`), print its verdict, then — when ``enforce`` — raise
    ``AssertionError`` naming each ``required`` claim (default: all of them) that does not hold.

    A value of ``checks`` is a :class:`~unlearnkit.reports.verdicts.Verdict` (holds / fails / inconclusive with its
    interval; a required one must not *fail*: inconclusive is recorded, not raised) or a ``(holds, evidence)`` pair
    (a single measurement, no interval). ``enforce=False`` (a smoke-scale run on random weights) records the
    verdicts without asserting them.
    """
    from unlearnkit.reports.verdicts import Verdict

    outcomes = {}
    for claim, value in checks.items():
        if isinstance(value, Verdict):
            record_claim(out_dir, claim, value.holds, value.evidence, paper=paper, verdict=value, concepts=concepts)
            outcomes[claim] = value.outcome
            print(f"{value.outcome.upper()} {claim}: {value.interval_text()}; {value.evidence}")
        else:
            holds, evidence = value
            record_claim(out_dir, claim, bool(holds), evidence, paper=paper, concepts=concepts)
            outcomes[claim] = "holds" if holds else "fails"
            print(("PASS " if holds else "FAIL ") + claim + ": " + evidence)
    required = list(checks) if required is None else list(required)
    failed = [claim for claim in required if outcomes[claim] == "fails"]
    if enforce and failed:
        raise AssertionError("\n".join(f"{c}: {checks[c].interval_text() + '; ' if isinstance(checks[c], Verdict) else ''}"
                                       f"{checks[c].evidence if isinstance(checks[c], Verdict) else checks[c][1]}"
                                       for c in failed))
    return {claim: outcome == "holds" for claim, outcome in outcomes.items()}


def write_table(
    df: pd.DataFrame, out_dir: str | Path, name: str, caption: str | None = None, regenerates: str | None = None,
    resolution: str | None = None,
) -> tuple[Path, Path]:
    """Write ``df`` as ``<name>.csv`` and ``<name>.md`` (with ``caption`` above the table) in ``out_dir``.

    ``regenerates`` names the paper table it reproduces (e.g. "ANT Table 1"); it goes to the folder's manifest,
    from which ``reports/README.md`` is built. ``resolution``: what one cell rests on (e.g. "16 images a class
    and model: steps of 1/16"), appended to the caption as "resolution: …"; default ``df.attrs["resolution"]``,
    set by the experiment that measured the table.
    """
    resolution = df.attrs.get("resolution") if resolution is None else resolution
    if resolution is not None and (not isinstance(resolution, str) or not resolution.strip()):
        raise ValueError(f"resolution must be a non-empty text, got {resolution!r}")
    if resolution:
        caption = f"{caption}; resolution: {resolution}" if caption else f"resolution: {resolution}"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / f"{name}.csv"
    md_path = out_dir / f"{name}.md"
    df.to_csv(csv_path, index=_has_meaningful_index(df))
    markdown = format_markdown_table(df)
    if caption:
        markdown = f"*{caption}*\n\n{markdown}"
    md_path.write_text(markdown, encoding="utf-8")
    _register(out_dir, md_path.name, {"kind": "table", "caption": caption, "regenerates": regenerates})
    return csv_path, md_path


# --------------------------------------------------------------------------------------------------- figures


def save_figure(fig: Figure, out_dir: str | Path, name: str, dpi: int = 120, caption: str | None = None,
                regenerates: str | None = None) -> Path:
    """Save ``fig`` as ``<out_dir>/<name>.png`` and return the path (``regenerates``: see :func:`write_table`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / (name if name.endswith(".png") else f"{name}.png")
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    _register(out_dir, path.name, {"kind": "figure", "caption": caption, "regenerates": regenerates})
    return path


def _as_rgb_array(image, row: int, col: int) -> np.ndarray:
    """An HxWx3 uint8 array from a PIL image or an array of that shape."""
    if hasattr(image, "convert"):  # PIL.Image.Image
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(
            f"image at row {row}, column {col} must be an HxWx3 uint8 array or a PIL image, "
            f"got dtype {array.dtype} and shape {array.shape}"
        )
    return array


def image_grid(
    images,
    row_labels: list[str],
    col_labels: list[str],
    title: str | None = None,
    cell_size: float = 1.2,
) -> Figure:
    """A rows × cols grid of images with row labels on the left and column labels on top.

    ``images[r][c]`` is an HxWx3 uint8 array or a PIL image. The figure is built without pyplot, so it is
    not shown automatically: make it a cell's last expression (or ``display`` it) in a notebook.
    """
    n_rows, n_cols = len(row_labels), len(col_labels)
    if n_rows == 0 or n_cols == 0:
        raise ValueError("image_grid needs at least one row label and one column label")
    if len(images) != n_rows:
        raise ValueError(f"got {len(images)} rows of images for {n_rows} row labels")
    for r, row_images in enumerate(images):
        if len(row_images) != n_cols:
            raise ValueError(f"row {r} has {len(row_images)} images for {n_cols} column labels")

    title_height = 0.4 if title else 0.0
    label_width = 0.07 * max(len(str(label)) for label in row_labels) + 0.2  # ~0.07 in per 8 pt character
    fig = Figure(
        figsize=(cell_size * n_cols + label_width, cell_size * n_rows + 0.3 + title_height),
        layout="constrained",
    )
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for r in range(n_rows):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.imshow(_as_rgb_array(images[r][c], r, c))
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if r == 0:
                ax.set_title(str(col_labels[c]), fontsize=8)
            if c == 0:
                ax.set_ylabel(str(row_labels[r]), fontsize=8, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


# ------------------------------------------------------------------------------------------------ provenance


def to_jsonable(value, key: str = "parameters"):
    """``value`` made JSON-serialisable, or a ``TypeError`` naming ``key`` (a dotted path) when it cannot be.

    Converted: paths → str, tuples → lists, numpy scalars → Python scalars, torch dtypes and devices → str,
    dataclass instances → dicts. Dict keys must be strings.
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [to_jsonable(item, f"{key}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict):
        converted = {}
        for item_key, item in value.items():
            if not isinstance(item_key, str):
                raise TypeError(f"{key} has a non-string key {item_key!r}; JSON keys must be strings")
            converted[item_key] = to_jsonable(item, f"{key}.{item_key}")
        return converted
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value), key)
    torch = sys.modules.get("torch")  # a torch object can only exist if torch was imported
    if torch is not None and isinstance(value, (torch.dtype, torch.device)):
        return str(value)
    raise TypeError(
        f"{key} is a {type(value).__module__}.{type(value).__qualname__}, which cannot be written to JSON; "
        "pass a str, number, bool, None, list, tuple, dict, Path, numpy scalar, torch dtype or device"
    )


def package_versions() -> dict[str, str]:
    """Versions of Python and of the distributions in ``RECORDED_DISTRIBUTIONS`` ("not installed" if absent)."""
    versions = {"python": platform.python_version()}
    for distribution in RECORDED_DISTRIBUTIONS:
        try:
            versions[distribution] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            versions[distribution] = "not installed"
    return versions


def _run_git(args: list[str], cwd: Path) -> str | None:
    """stdout of ``git <args>`` in ``cwd``, or None when git is missing or the command fails."""
    try:
        completed = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return completed.stdout if completed.returncode == 0 else None


def git_state(package_dir: Path = PACKAGE_DIR) -> dict:
    """``{"revision": sha or "unknown", "dirty": bool or None}`` of the checkout that holds the package.

    An installed copy that merely sits inside some other repository (a virtualenv in a checkout) is not
    that repository's code, so the checkout counts only if the package is its top-level ``unlearnkit/``.
    Untracked files count as dirty only inside the package: new outputs under ``reports/`` do not.
    """
    unknown = {"revision": "unknown", "dirty": None}
    toplevel = _run_git(["rev-parse", "--show-toplevel"], package_dir)
    if toplevel is None or Path(toplevel.strip()).resolve() / package_dir.name != package_dir.resolve():
        return unknown
    revision = _run_git(["rev-parse", "HEAD"], package_dir)
    status = _run_git(["status", "--porcelain"], package_dir)
    if revision is None or status is None:
        return unknown
    relevant_changes = [
        line
        for line in status.splitlines()
        if line.strip() and not (line.startswith("??") and not line[3:].startswith(f"{package_dir.name}/"))
    ]
    return {"revision": revision.strip(), "dirty": bool(relevant_changes)}


def provenance(parameters: dict, extra: dict | None = None) -> dict:
    """What produced a result: parameters, package versions, git state, platform and a UTC timestamp."""
    record = {
        "parameters": to_jsonable(parameters, "parameters"),
        "versions": package_versions(),
        "git": git_state(),
        "platform": platform.platform(),
        "timestamp_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if extra is not None:
        record["extra"] = to_jsonable(extra, "extra")
    return record


def _seconds_since(started_at: float | datetime) -> float:
    """Wall time since ``started_at``: a ``time.time()`` value or a datetime (naive means local time)."""
    if isinstance(started_at, datetime):
        now = datetime.now(started_at.tzinfo) if started_at.tzinfo else datetime.now()
        return (now - started_at).total_seconds()
    return time.time() - float(started_at)


def parameters_from(namespace, names: str, **derived) -> dict:
    """The ``parameters`` of a run record: ``namespace[name]`` for every name in ``names`` (whitespace-separated —
    a notebook passes ``globals()`` and the parameters it records), then the ``derived`` values (the sampler it built,
    the seeds it drew, configs) by keyword. A name missing from ``namespace`` raises a KeyError naming it."""
    names = names.split()
    missing = [name for name in names if name not in namespace]
    if missing:
        raise KeyError(f"no parameter named {missing} to record")
    clash = sorted(set(names) & set(derived))
    if clash:
        raise ValueError(f"{clash} given both by name and as derived values: record each once")
    return {**{name: namespace[name] for name in names}, **derived}


def write_run_record(
    out_dir: str | Path,
    parameters: dict,
    extra: dict | None = None,
    started_at: float | datetime | None = None,
    world=None,
) -> Path:
    """Write ``<out_dir>/run.json`` (see :func:`provenance`), adding ``wall_time_s`` when ``started_at`` is given
    and, with ``world``, the world, every file it read (with hashes) and the metrics it skipped (with why)."""
    extra = dict(extra or {})
    if world is not None:
        extra.update(world=world.describe(), world_files=world.files_record(), skipped_metrics=world.skipped_metrics())
    record = provenance(parameters, extra)
    if started_at is not None:
        record["wall_time_s"] = round(_seconds_since(started_at), 3)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "run.json"
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return path
