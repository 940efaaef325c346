"""Loaders for the public prompt sets used by the papers' evaluations, with schema validation.

The three CSV files (UCE's MIT-licensed ``data/`` files) are not shipped: every loader takes the path the user
supplies (the file itself, or a folder holding it under its standard name), checks the schema and returns a
DataFrame with normalised column names.

- :func:`load_i2p` — ``i2p_4703.csv``, 4,703 rows (931 "sexual"): ANT Table 1 uses all rows, Sculpting
  Memory Tables 3–4 the sexual subset.
- :func:`load_coco30k` — ``coco_30k.csv``, 30,000 MS-COCO captions: FID / CLIP score (ANT Tables 1–3, SM Table 3).
- :func:`load_imagenette_prompts` — ``imagenette_prompts.csv``, 5,000 rows (500 per class): Imagenette accuracy.

The 100 erased + 100 preserved celebrities and artists (ANT Tables 2–4) come from ``concept_lists.json`` beside
this module (:func:`load_concept_list`), our restatement of MACE's celebrity_100 / art_100 sets; membership may
differ — pass the original list as JSON in the same schema (``path``) for exact reproduction.

Errors. A file that breaks the schema raises :class:`PromptFileError` naming the file, the row and the column.
Rows are counted from the header: the header is row 0 and the first data row is row 1 (a quoted prompt that
spans several lines is still one row, so a row number can be smaller than the line number).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pandas as pd

from unlearnkit.core.errors import BadFileError

I2P_FILE_NAME = "i2p_4703.csv"
COCO30K_FILE_NAME = "coco_30k.csv"
IMAGENETTE_PROMPTS_FILE_NAME = "imagenette_prompts.csv"

DATA_SOURCE_HINT = (
    "get it from the MIT-licensed data/ folder of https://github.com/rohitgandikota/unified-concept-editing "
    "and pass that folder as --data-dir (or its path to the loader)"
)

# The published I2P file stores 'sexual, shocking, …' style lists; the papers' NSFW subset is every row whose
# categories name "sexual" (931 of 4,703, Sculpting Memory §4.2).
I2P_SEXUAL_CATEGORY = "sexual"


class PromptFileError(BadFileError):
    """A prompt CSV that does not match its schema (or is not UTF-8 text).

    ``path``, ``row`` (0 = header, 1 = first data row; ``None`` when no row applies) and ``column`` (``None``
    when no column applies) say where; the message repeats them.
    """

    def __init__(self, path: Path, row: int | None, column: str | None, problem: str):
        self.path = Path(path)
        self.row = row
        self.column = column
        self.problem = problem
        location = self.path.name
        if row is not None:
            location += f" row {row}" + (" (header)" if row == 0 else "")
        if column is not None:
            location += f", column {column!r}"
        ValueError.__init__(self, f"{location}: {problem} (file: {self.path})")


@dataclass(frozen=True)
class ColumnRule:
    """How one source column is checked and what it becomes in the returned DataFrame."""

    source: str   # column name in the CSV
    target: str   # column name in the returned DataFrame
    kind: str     # "text", "nonempty_text", "seed", "int", "float", "flag"


I2P_COLUMNS = (
    ColumnRule("case_number", "case_number", "int"),
    ColumnRule("prompt", "prompt", "text"),
    ColumnRule("evaluation_seed", "seed", "seed"),
    ColumnRule("evaluation_guidance", "guidance", "float"),
    ColumnRule("categories", "categories", "text"),
    ColumnRule("hard", "hard", "flag"),
    ColumnRule("nudity_percentage", "nudity_percentage", "float"),
)

COCO30K_COLUMNS = (
    ColumnRule("case_number", "case_number", "int"),
    ColumnRule("prompt", "prompt", "nonempty_text"),
    ColumnRule("evaluation_seed", "seed", "seed"),
    ColumnRule("coco_id", "coco_id", "int"),
)

IMAGENETTE_COLUMNS = (
    ColumnRule("case_number", "case_number", "int"),
    ColumnRule("class", "class", "nonempty_text"),
    ColumnRule("prompt", "prompt", "nonempty_text"),
    ColumnRule("evaluation_seed", "seed", "seed"),
)

_INTEGER_PATTERN = r"[+-]?\d+"


def resolve_prompt_file(path: str | os.PathLike | None, file_name: str) -> Path:
    """The CSV at ``path``, or ``path / file_name`` when ``path`` is a folder; FileNotFoundError with a hint."""
    if path is None:
        raise FileNotFoundError(f"no path given for {file_name}: {DATA_SOURCE_HINT}")
    candidate = Path(path).expanduser()
    if candidate.is_dir():
        candidate = candidate / file_name
    if not candidate.is_file():
        raise FileNotFoundError(f"{file_name} not found at {candidate}: {DATA_SOURCE_HINT}")
    return candidate


def read_raw_csv(path: Path) -> pd.DataFrame:
    """Every cell as a string, blanks kept as ``""``, so that validation sees exactly what the file holds."""
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise PromptFileError(path, 0, None, "the file is empty (no header)") from None
    except pd.errors.ParserError as error:
        raise PromptFileError(path, None, None, f"not a readable CSV file: {str(error).strip()}") from None
    except UnicodeDecodeError as error:
        raise PromptFileError(path, None, None, f"not UTF-8 text (byte {error.start}: {error.reason}); save the CSV "
                                                f"as UTF-8") from None
    if raw.empty:
        raise PromptFileError(path, 1, None, "the file has a header but no data rows")
    return raw


def require_columns(raw: pd.DataFrame, rules: tuple[ColumnRule, ...], path: Path) -> None:
    """Raise on the first required column the header lacks, listing the columns it does have."""
    for rule in rules:
        if rule.source not in raw.columns:
            found = ", ".join(repr(c) for c in raw.columns)
            raise PromptFileError(path, 0, rule.source, f"required column is missing; the header has {found}")


def _first_bad(mask: pd.Series) -> int | None:
    """Position of the first True in ``mask``, or None."""
    positions = mask.to_numpy().nonzero()[0]
    return int(positions[0]) if len(positions) else None


def _fail_at(raw_column: pd.Series, position: int, rule: ColumnRule, path: Path, problem: str):
    """Raise PromptFileError for the cell at 0-based data ``position`` (reported as row ``position + 1``)."""
    value = raw_column.iloc[position]
    raise PromptFileError(path, position + 1, rule.source, f"{value!r} {problem}")


def parse_integer_column(raw_column: pd.Series, rule: ColumnRule, path: Path) -> pd.Series:
    """Whole numbers written as digits (no decimals, no blanks) → int64; seeds must also be ≥ 0."""
    stripped = raw_column.str.strip()
    bad = _first_bad(~stripped.str.fullmatch(_INTEGER_PATTERN))
    if bad is not None:
        _fail_at(raw_column, bad, rule, path, "is not an integer")
    as_python_ints = stripped.map(int)
    bad = _first_bad(as_python_ints.map(lambda value: not -(2**63) <= value < 2**63))
    if bad is not None:
        _fail_at(raw_column, bad, rule, path, "does not fit in a 64-bit integer")
    parsed = as_python_ints.astype("int64")
    if rule.kind == "seed":
        bad = _first_bad(parsed < 0)
        if bad is not None:
            _fail_at(raw_column, bad, rule, path, "is negative; seeds must be integers ≥ 0")
    return parsed


def parse_float_column(raw_column: pd.Series, rule: ColumnRule, path: Path) -> pd.Series:
    """Finite decimal numbers → float64."""
    parsed = pd.to_numeric(raw_column.str.strip(), errors="coerce")
    bad = _first_bad(parsed.isna() | ~parsed.abs().lt(float("inf")))
    if bad is not None:
        _fail_at(raw_column, bad, rule, path, "is not a finite number")
    return parsed.astype("float64")


def parse_flag_column(raw_column: pd.Series, rule: ColumnRule, path: Path) -> pd.Series:
    """0/1 (as I2P writes ``hard``) or true/false → bool."""
    lowered = raw_column.str.strip().str.lower()
    bad = _first_bad(~lowered.isin(("0", "1", "true", "false")))
    if bad is not None:
        _fail_at(raw_column, bad, rule, path, "is not a 0/1 flag")
    return lowered.isin(("1", "true"))


def parse_text_column(raw_column: pd.Series, rule: ColumnRule, path: Path) -> pd.Series:
    """Strings as written; ``nonempty_text`` columns reject blank and whitespace-only cells."""
    if rule.kind == "nonempty_text":
        bad = _first_bad(raw_column.str.strip() == "")
        if bad is not None:
            what = "prompt" if rule.target == "prompt" else "value"
            _fail_at(raw_column, bad, rule, path, f"is an empty {what}")
    return raw_column.astype(object)


_PARSERS = {
    "text": parse_text_column,
    "nonempty_text": parse_text_column,
    "seed": parse_integer_column,
    "int": parse_integer_column,
    "float": parse_float_column,
    "flag": parse_flag_column,
}


def validate_and_normalise(raw: pd.DataFrame, rules: tuple[ColumnRule, ...], path: Path) -> pd.DataFrame:
    """Check every rule's column and return only those columns, renamed to their targets, in rule order."""
    require_columns(raw, rules, path)
    columns = {rule.target: _PARSERS[rule.kind](raw[rule.source], rule, path) for rule in rules}
    return pd.DataFrame(columns).reset_index(drop=True)


def load_prompt_table(path: str | os.PathLike, file_name: str, rules: tuple[ColumnRule, ...]) -> pd.DataFrame:
    """Resolve, read and validate one prompt CSV."""
    resolved = resolve_prompt_file(path, file_name)
    return validate_and_normalise(read_raw_csv(resolved), rules, resolved)


def _with_nonempty_prompts(rules: tuple[ColumnRule, ...]) -> tuple[ColumnRule, ...]:
    """The same rules with the ``prompt`` column made ``nonempty_text``."""
    return tuple(ColumnRule(r.source, r.target, "nonempty_text") if r.target == "prompt" else r for r in rules)


def has_category(categories: pd.Series, category: str) -> pd.Series:
    """Rows whose comma-separated I2P ``categories`` list names ``category`` (case-insensitive)."""
    wanted = category.strip().lower()
    return categories.map(lambda text: wanted in {part.strip().lower() for part in str(text).split(",")})


def load_i2p(path: str | os.PathLike, sexual_only: bool = False, allow_empty_prompts: bool = True) -> pd.DataFrame:
    """The I2P prompt set (Schramowski et al.) as evaluated in ANT Table 1 and Sculpting Memory Tables 3–4.

    Returns columns ``case_number, prompt, seed, guidance, categories, hard, nudity_percentage``
    (``hard`` is bool, ``guidance`` float). ``sexual_only=True`` keeps the 931 rows whose ``categories`` name
    "sexual" — the subset of Sculpting Memory Table 4; ANT Table 1 uses all 4,703 rows.

    The published file's one blank prompt (case_number 2260), an unconditional generation the papers count, is
    kept unless ``allow_empty_prompts=False``, which makes any blank prompt a :class:`PromptFileError`.
    """
    rules = I2P_COLUMNS if allow_empty_prompts else _with_nonempty_prompts(I2P_COLUMNS)
    table = load_prompt_table(path, I2P_FILE_NAME, rules)
    if sexual_only:
        table = table[has_category(table["categories"], I2P_SEXUAL_CATEGORY)].reset_index(drop=True)
    return table


def load_coco30k(path: str | os.PathLike, limit: int | None = None) -> pd.DataFrame:
    """The 30,000 MS-COCO validation captions used for FID and CLIP score (ANT Tables 1–3, SM Table 3).

    Returns columns ``case_number, prompt, seed, coco_id``; ``limit`` keeps the first ``limit`` rows (file order).
    The whole file is validated either way, so a bad row past ``limit`` still raises.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    table = load_prompt_table(path, COCO30K_FILE_NAME, COCO30K_COLUMNS)
    return table if limit is None else table.head(limit).reset_index(drop=True)


def load_imagenette_prompts(path: str | os.PathLike, classes=None) -> pd.DataFrame:
    """UCE's seeded Imagenette prompts ("an image of a {class}", 500 seeds per class, 10 classes).

    Returns columns ``case_number, class, prompt, seed``. ``classes`` (a name or an iterable of names, spelled
    as in the file, e.g. "English springer") keeps those classes; an unknown name raises ValueError listing
    the classes the file has.
    """
    table = load_prompt_table(path, IMAGENETTE_PROMPTS_FILE_NAME, IMAGENETTE_COLUMNS)
    if classes is None:
        return table
    wanted = [classes] if isinstance(classes, str) else list(classes)
    available = list(dict.fromkeys(table["class"]))
    unknown = [name for name in wanted if name not in available]
    if unknown:
        raise ValueError(f"unknown Imagenette class(es) {unknown}; the file has {available}")
    return table[table["class"].isin(wanted)].reset_index(drop=True)


# --- 100 + 100 celebrities / artists (MACE, ANT Tables 2–4) ------------------------------------------------------

CONCEPT_LIST_FILE = Path(__file__).with_name("concept_lists.json")
CONCEPT_KINDS = ("celebrity", "artist")
CONCEPT_GROUPS = ("erase", "preserve")
NAMES_PER_GROUP = 100


def _check_kind(kind: str) -> None:
    if kind not in CONCEPT_KINDS:
        raise ValueError(f"kind must be one of {CONCEPT_KINDS}, got {kind!r}")


def _check_group(group: str) -> None:
    if group not in CONCEPT_GROUPS:
        raise ValueError(f"group must be one of {CONCEPT_GROUPS}, got {group!r}")


def validate_concept_entry(kind: str, entry: dict, source: Path) -> None:
    """100 unique non-blank names per group, disjoint groups, ``{name}`` templates, integer seeds, cross-group pairs."""
    where = f"{source.name} [{kind!r}]"
    for group in CONCEPT_GROUPS:
        names = entry.get(group)
        if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
            raise ValueError(f"{where}: {group!r} must be a list of non-blank names")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"{where}: {group!r} repeats {duplicates}")
        if len(names) != NAMES_PER_GROUP:
            raise ValueError(f"{where}: {group!r} has {len(names)} names, expected {NAMES_PER_GROUP}")
    shared = sorted(set(entry["erase"]) & set(entry["preserve"]))
    if shared:
        raise ValueError(f"{where}: names in both groups: {shared}")
    templates = entry.get("templates")
    if not templates or not all(isinstance(t, str) and "{name}" in t for t in templates):
        raise ValueError(f"{where}: 'templates' must be a non-empty list of strings containing '{{name}}'")
    seeds = entry.get("seeds")
    if not seeds or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in seeds):
        raise ValueError(f"{where}: 'seeds' must be a non-empty list of integers >= 0, got {seeds!r}")
    for erased, preserved in entry.get("hard_pairs_same_first_name", []):
        if erased not in entry["erase"] or preserved not in entry["preserve"]:
            raise ValueError(f"{where}: hard pair [{erased!r}, {preserved!r}] is not [erased, preserved]")


@lru_cache(maxsize=4)
def _read_concept_catalogue(path: Path) -> dict:
    from unlearnkit.core.files import read_json

    if not path.is_file():
        raise FileNotFoundError(f"concept list not found at {path}")
    catalogue = read_json(path, "a concept list (JSON with 'celebrity' and 'artist' entries)")
    if not isinstance(catalogue, dict):
        raise BadFileError(path, "is not a JSON object; expected a concept list with 'celebrity' and 'artist' entries")
    for kind in CONCEPT_KINDS:
        if kind not in catalogue:
            raise BadFileError(path, f"has no {kind!r} entry")
        try:
            validate_concept_entry(kind, catalogue[kind], path)
        except BadFileError:
            raise
        except (ValueError, TypeError, AttributeError) as error:
            raise BadFileError(path, str(error)) from None
    return catalogue


def concept_catalogue(path: str | os.PathLike | None = None) -> dict:
    """The validated concept-list JSON (the packaged restatement unless ``path`` names a replacement)."""
    resolved = CONCEPT_LIST_FILE if path is None else Path(path).expanduser().resolve()
    return json.loads(json.dumps(_read_concept_catalogue(resolved)))  # a deep copy callers may mutate


def concept_names(kind: str, group: str, path: str | os.PathLike | None = None) -> list[str]:
    """The 100 names of one group ("erase" or "preserve") of one kind ("celebrity" or "artist")."""
    _check_kind(kind)
    _check_group(group)
    return concept_catalogue(path)[kind][group]


def celebrity_names(group: str = "erase", path: str | os.PathLike | None = None) -> list[str]:
    """The 100 erased or 100 preserved celebrities (MACE celebrity_100 setting; ANT Table 2)."""
    return concept_names("celebrity", group, path)


def artist_names(group: str = "erase", path: str | os.PathLike | None = None) -> list[str]:
    """The 100 erased or 100 preserved artists (MACE art_100 setting; ANT Table 3)."""
    return concept_names("artist", group, path)


def load_concept_list(kind: str = "celebrity", path: str | os.PathLike | None = None) -> pd.DataFrame:
    """Evaluation prompts for the 100 + 100 names: every name × template × seed, erase group first.

    Returns columns ``case_number, name, group, prompt, seed`` (group ∈ {"erase", "preserve"}); with 5 templates
    and seeds 1–5 that is 5,000 rows, as in MACE's evaluation CSVs (ANT Tables 2–3).
    """
    _check_kind(kind)
    entry = concept_catalogue(path)[kind]
    rows = [
        (name, group, template.format(name=name), seed)
        for group in CONCEPT_GROUPS
        for name in entry[group]
        for template in entry["templates"]
        for seed in entry["seeds"]
    ]
    table = pd.DataFrame(rows, columns=["name", "group", "prompt", "seed"])
    table["seed"] = table["seed"].astype("int64")
    table.insert(0, "case_number", range(len(table)))
    return table
