"""The three papers' own result tables as package data, and a helper to show our numbers beside them.

The numbers live in ``paper_values.json`` next to this module, transcribed from the papers (ANT, Sculpting
Memory, SepME). Every table is stored as::

    {"caption": ..., "columns": [...], "rows": [{"method": ..., "<column>": value, ...}], "source": "<file> L..-L.."}

with ``null`` for cells the paper leaves empty ("-") or that could not be read. The other top-level keys
(``unreadable``, ``reconstructed``, ``inconsistencies``, ``notes``) say how cells were read and where a paper
disagrees with itself; :func:`transcription_notes` returns them.

Example (``ours`` indexed by method, with columns named like the paper's, e.g. "Acc_e", "Acc_p", "H_c")::

    paper_table("ant", "table2").loc["Ours", "H_c"]      # 0.9173
    side_by_side(ours, "ant", "table2")                   # "Acc_e (ours)", "Acc_e (paper)", ...
"""
from __future__ import annotations

import functools
import json
import re
from importlib import resources

import numpy as np
import pandas as pd

__all__ = [
    "PAPERS",
    "available_tables",
    "paper_table",
    "paper_value",
    "side_by_side",
    "method_key",
    "transcription_notes",
]

#: Paper keys in the JSON file, each with the names accepted for it (compared case-insensitively).
PAPERS: dict[str, tuple[str, ...]] = {
    "ant": ("ant", "ant-auto-steering-trajectories"),
    "sculpting_memory": ("sculpting_memory", "sculpting-memory", "sculpting memory", "sculpting",
                         "sculpting-memory-dynamic-mask", "dynamic-mask", "dynamic mask"),
    "sepme": ("sepme", "sepme-separable-multi-concept-erasure", "separable multi-concept erasure"),
}

_NOTE_KEYS = ("unreadable", "reconstructed", "inconsistencies", "notes")

# Method-name aliases: every name of a group matches every other name of the group (after method_key()).
_ALIASES: tuple[tuple[str, ...], ...] = (
    ("SD v1.4", "SD1.4", "SD 1.4", "SD14", "SD-v1-4", "Stable Diffusion v1.4", "Stable Diffusion 1.4",
     "CompVis/stable-diffusion-v1-4", "original", "ORI", "base", "base model", "none"),
    ("SD v2.1", "SD2.1", "SD 2.1", "SD21", "SD-v2-1", "Stable Diffusion v2.1"),
    ("AC", "AbConcept", "Ablating", "Ablating Concepts", "Concept Ablation"),
    ("FMN", "Forget-Me-Not"),
    ("SLD-M", "SLD-Medium", "SLD"),
)
# The papers call their own method "Ours"; these names also match it, per paper.
_OURS_ALIASES: dict[str, tuple[str, ...]] = {
    "ant": ("Ours", "ANT"),
    "sculpting_memory": ("Ours", "Sculpting Memory", "Sculpting", "Dynamic Mask", "Ours (dynamic mask)"),
    "sepme": ("Ours-G-CiRs", "G-CiRs", "GCiRs", "Ours (G-CiRs)", "Ours"),
}

_SUBSCRIPTS = str.maketrans("₀₁₂₃₄₅₆₇₈₉", "0123456789")


def method_key(name) -> str:
    """Normalised method name used for matching: case-, space-, '_'- and '-'-insensitive, citations and daggers dropped.

    ``"ESD-x [19]"``, ``"esd_x"`` and ``"ESD x"`` all give ``"esdx"``; a minus sign after ``=`` (``tau=-5e-4``) is kept.
    """
    s = str(name).translate(_SUBSCRIPTS).lower()
    s = re.sub(r"\s*\[[\d,\s–-]+\]", "", s).replace("†", "").replace("*", "").strip()
    s = re.sub(r"(?<=[0-9a-z)])[-_\s]+", "", s)
    return re.sub(r"\s+", "", s)


def _group_map(paper: str) -> dict[str, str]:
    groups = list(_ALIASES) + [_OURS_ALIASES.get(paper, ())]
    out: dict[str, str] = {}
    for group in groups:
        if group:
            canonical = method_key(group[0])
            out.update({method_key(alias): canonical for alias in group})
    return out


@functools.lru_cache(maxsize=1)
def _load() -> dict:
    text = resources.files("unlearnkit.reports").joinpath("paper_values.json").read_text(encoding="utf-8")
    return json.loads(text)


def _paper_key(paper: str) -> str:
    wanted = str(paper).strip().lower()
    for key, names in PAPERS.items():
        if wanted in {n.lower() for n in names}:
            return key
    raise ValueError(f"unknown paper {paper!r}; papers: {sorted(PAPERS)} (also accepted: "
                     f"{sorted({n for names in PAPERS.values() for n in names} - set(PAPERS))})")


def _table_key(paper_key: str, table) -> str:
    tables = _load()[paper_key]
    wanted = str(table).strip().lower()
    match = re.fullmatch(r"(?:table|tab\.?|t)?\s*(\d+)", wanted)
    if match:
        wanted = f"table{match.group(1)}"
    if wanted not in tables:
        raise ValueError(f"unknown table {table!r} for paper {paper_key!r}; tables: {list(tables)}")
    return wanted


def available_tables() -> list[tuple[str, str, str]]:
    """Every transcribed table as ``(paper, table, caption)``."""
    data = _load()
    return [(paper, table, spec["caption"]) for paper in PAPERS for table, spec in data[paper].items()]


def paper_table(paper: str, table) -> pd.DataFrame:
    """One table of one paper as a DataFrame (index ``method``, columns in the paper's order; missing cells NaN).

    ``paper`` is ``"ant"``, ``"sculpting_memory"`` or ``"sepme"`` (or a name in :data:`PAPERS`); ``table`` is e.g.
    ``"table2"``, ``"Table 2"`` or ``2``. Unknown names raise ``ValueError`` listing what exists.
    """
    paper_key = _paper_key(paper)
    spec = _load()[paper_key][_table_key(paper_key, table)]
    records = [{column: row.get(column) for column in spec["columns"]} for row in spec["rows"]]
    frame = pd.DataFrame.from_records(records, columns=spec["columns"])
    frame.index = pd.Index([row["method"] for row in spec["rows"]], name="method")
    frame.attrs.update(paper=paper_key, table=_table_key(paper_key, table), caption=spec["caption"],
                       source=spec["source"])
    return frame


def paper_value(paper: str, table, method: str, column: str):
    """A single cell, with the method matched like :func:`side_by_side` does (aliases, case-insensitive)."""
    frame = paper_table(paper, table)
    row = _match_methods([method], list(frame.index), frame.attrs["paper"]).get(method)
    if row is None:
        raise ValueError(f"no method matching {method!r} in {paper}/{table}; methods: {list(frame.index)}")
    return frame.loc[row, _match_column(column, list(frame.columns), f"{paper}/{table}")]


def transcription_notes(kind: str | None = None):
    """How the tables were read: ``unreadable`` cells (stored as null), ``reconstructed`` cells, ``inconsistencies``
    found inside the papers, free-form ``notes``. With ``kind=None`` a dict of all four."""
    data = _load()
    if kind is None:
        return {key: list(data.get(key, [])) for key in _NOTE_KEYS}
    if kind not in _NOTE_KEYS:
        raise ValueError(f"unknown kind {kind!r}; kinds: {list(_NOTE_KEYS)}")
    return list(data.get(kind, []))


def _column_key(name) -> str:
    return re.sub(r"\s+", " ", str(name)).strip().lower()


def _match_column(column, available: list, where: str):
    by_key = {_column_key(c): c for c in available}
    try:
        return by_key[_column_key(column)]
    except KeyError:
        raise ValueError(f"unknown column {column!r} in {where}; columns: {available}") from None


def _match_methods(ours: list, theirs: list, paper_key: str) -> dict:
    """Map each of our method labels to the paper's label it matches (or None)."""
    groups = _group_map(paper_key)

    def group(name):
        key = method_key(name)
        return groups.get(key, key)

    theirs_by_group: dict[str, object] = {}
    for name in theirs:
        theirs_by_group.setdefault(group(name), name)
    exact = {method_key(name): name for name in theirs}
    return {name: exact.get(method_key(name), theirs_by_group.get(group(name))) for name in ours}


def side_by_side(ours: pd.DataFrame, paper: str, table, columns=None,
                 suffixes: tuple[str, str] = (" (ours)", " (paper)")) -> pd.DataFrame:
    """Our results beside the paper's, row by method, column by column.

    ``ours`` is indexed by method (or has a ``method`` column). Methods are matched case-insensitively and through a
    small alias map (``"esd_x"`` ~ ``"ESD-x"``, ``"original"``/``"SD1.4"`` ~ ``"SD v1.4"``, ``"AbConcept"`` ~ ``"AC"``,
    and the paper's own method: ``"ANT"``, ``"Sculpting Memory"``, ``"G-CiRs"`` ~ ``"Ours"``). The result keeps the
    paper's row order (paper's labels), then our unmatched rows; a row missing on one side shows NaN there.
    ``columns`` (default: the paper's columns that ``ours`` also has) are matched case-insensitively; for each one the
    output has ``<column><suffixes[0]>`` then ``<column><suffixes[1]>``.
    """
    theirs = paper_table(paper, table)
    where = f"{theirs.attrs['paper']}/{theirs.attrs['table']}"
    ours = ours.copy()
    if "method" in ours.columns and (ours.index.name != "method"):
        ours = ours.set_index("method")
    our_keys = [method_key(m) for m in ours.index]
    if len(set(our_keys)) != len(our_keys):
        raise ValueError(f"our methods are not distinct after normalisation: {list(ours.index)}")
    our_columns = {_column_key(c): c for c in ours.columns}
    if columns is None:
        columns = [c for c in theirs.columns if _column_key(c) in our_columns]
        if not columns:
            raise ValueError(f"none of our columns {list(ours.columns)} is in {where}; columns: {list(theirs.columns)}")
    else:
        columns = [_match_column(c, list(theirs.columns), where) for c in ([columns] if isinstance(columns, str)
                                                                          else columns)]
    if len(set(suffixes)) != 2:
        raise ValueError(f"suffixes must be two different strings, got {suffixes!r}")

    matches = _match_methods(list(ours.index), list(theirs.index), theirs.attrs["paper"])
    used = [m for m in matches.values() if m is not None]
    if len(set(used)) != len(used):
        raise ValueError(f"several of our methods match the same paper row: {matches}")
    paper_to_ours = {paper_name: our_name for our_name, paper_name in matches.items() if paper_name is not None}
    index = list(theirs.index) + [m for m, p in matches.items() if p is None]

    out = pd.DataFrame(index=pd.Index(index, name="method"))
    for column in columns:
        ours_column = our_columns.get(_column_key(column))
        ours_values = []
        for label in index:
            our_name = paper_to_ours.get(label, label if label in matches and matches[label] is None else None)
            ours_values.append(ours.at[our_name, ours_column] if (our_name is not None and ours_column is not None)
                               else np.nan)
        out[f"{column}{suffixes[0]}"] = ours_values
        out[f"{column}{suffixes[1]}"] = theirs[column].reindex(index).tolist()
    out = out.infer_objects()
    out.attrs.update(theirs.attrs)
    return out
