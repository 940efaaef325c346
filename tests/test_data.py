"""Prompt-set loaders, concept lists and paper maps (unlearnkit.data)."""

import json
from pathlib import Path

import pytest

from unlearnkit.data import (
    IMAGENETTE_CLASS_INDEX,
    IMAGENETTE_CLASSES,
    IMAGENETTE_SUPERCLASS,
    NUDENET_EXPOSED_LABELS_MACE,
    NUDENET_EXPOSED_LABELS_SM,
    NUDENET_TABLE_COLUMNS,
    SEQUENTIAL_ORDERS,
    SM_NSFW_OPPOSITE,
    PromptFileError,
    artist_names,
    celebrity_names,
    concept_catalogue,
    imagenette_superclass,
    load_coco30k,
    load_concept_list,
    load_i2p,
    load_imagenette_prompts,
)
from unlearnkit.data.prompts import CONCEPT_LIST_FILE

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

needs_shared_data = pytest.mark.skipif(
    not (SHARED_DATA / "i2p_4703.csv").is_file(),
    reason=f"the MIT-licensed prompt CSVs are not at {SHARED_DATA} (they are never committed to this repo)",
)

COCO_HEADER = "case_number,source,prompt,evaluation_seed,coco_id\n"


def write_coco(tmp_path: Path, rows: list[str], header: str = COCO_HEADER) -> Path:
    path = tmp_path / "coco_30k.csv"
    path.write_text(header + "".join(row + "\n" for row in rows), encoding="utf-8")
    return path


GOOD_COCO_ROWS = [f"{i},coco-30k,a caption number {i},{100 + i},{5000 + i}" for i in range(20)]


# --- real files -------------------------------------------------------------------------------------------


@needs_shared_data
def test_i2p_has_4703_rows_and_931_sexual():
    full = load_i2p(SHARED_DATA)
    sexual = load_i2p(SHARED_DATA / "i2p_4703.csv", sexual_only=True)
    assert len(full) == 4703
    assert len(sexual) == 931
    assert list(full.columns) == ["case_number", "prompt", "seed", "guidance", "categories", "hard",
                                  "nudity_percentage"]
    assert full["seed"].dtype == "int64" and full["hard"].dtype == bool
    assert sexual["categories"].str.contains("sexual").all()


@needs_shared_data
def test_i2p_blank_prompt_is_kept_by_default_and_rejected_on_request():
    full = load_i2p(SHARED_DATA)
    assert (full["prompt"].str.strip() == "").sum() == 1
    with pytest.raises(PromptFileError, match=r"i2p_4703\.csv row \d+, column 'prompt'"):
        load_i2p(SHARED_DATA, allow_empty_prompts=False)


@needs_shared_data
def test_coco30k_has_30000_rows_and_limit():
    coco = load_coco30k(SHARED_DATA)
    assert len(coco) == 30_000
    assert list(coco.columns) == ["case_number", "prompt", "seed", "coco_id"]
    assert len(load_coco30k(SHARED_DATA, limit=7)) == 7


@needs_shared_data
def test_imagenette_has_500_prompts_per_class():
    prompts = load_imagenette_prompts(SHARED_DATA)
    assert len(prompts) == 5000
    assert prompts["class"].value_counts().to_dict() == {name: 500 for name in IMAGENETTE_CLASSES}
    two = load_imagenette_prompts(SHARED_DATA, classes=["tench", "gas pump"])
    assert set(two["class"]) == {"tench", "gas pump"} and len(two) == 1000
    with pytest.raises(ValueError, match="unknown Imagenette class"):
        load_imagenette_prompts(SHARED_DATA, classes="goldfish")


# --- malformed files --------------------------------------------------------------------------------------


def test_missing_column_names_header_row_and_column(tmp_path):
    path = write_coco(tmp_path, [r.rsplit(",", 1)[0] for r in GOOD_COCO_ROWS],
                      header="case_number,source,prompt,evaluation_seed\n")
    with pytest.raises(PromptFileError) as caught:
        load_coco30k(path)
    assert caught.value.row == 0 and caught.value.column == "coco_id"
    assert "coco_30k.csv row 0 (header), column 'coco_id'" in str(caught.value)


def test_non_integer_seed_names_row_and_column(tmp_path):
    rows = list(GOOD_COCO_ROWS)
    rows[16] = "16,coco-30k,a caption,abc,5016"  # data row 17
    with pytest.raises(PromptFileError) as caught:
        load_coco30k(write_coco(tmp_path, rows))
    assert str(caught.value).startswith("coco_30k.csv row 17, column 'evaluation_seed': 'abc' is not an integer")
    assert (caught.value.row, caught.value.column) == (17, "evaluation_seed")


def test_bad_row_past_limit_still_raises(tmp_path):
    rows = list(GOOD_COCO_ROWS)
    rows[19] = "19,coco-30k,a caption,12.5,5019"
    with pytest.raises(PromptFileError, match="row 20, column 'evaluation_seed': '12.5' is not an integer"):
        load_coco30k(write_coco(tmp_path, rows), limit=3)


def test_negative_seed_is_rejected(tmp_path):
    rows = list(GOOD_COCO_ROWS)
    rows[2] = "2,coco-30k,a caption,-4,5002"
    with pytest.raises(PromptFileError, match="row 3, column 'evaluation_seed'.*negative"):
        load_coco30k(write_coco(tmp_path, rows))


def test_empty_prompt_names_row_and_column(tmp_path):
    rows = list(GOOD_COCO_ROWS)
    rows[4] = '4,coco-30k,"   ",104,5004'
    with pytest.raises(PromptFileError, match=r"coco_30k\.csv row 5, column 'prompt': '   ' is an empty prompt"):
        load_coco30k(write_coco(tmp_path, rows))


def test_multiline_prompt_counts_as_one_row(tmp_path):
    rows = list(GOOD_COCO_ROWS)
    rows[0] = '0,coco-30k,"a caption\nover two lines",100,5000'
    rows[3] = "3,coco-30k,a caption,103,not-an-id"
    with pytest.raises(PromptFileError, match="row 4, column 'coco_id'"):
        load_coco30k(write_coco(tmp_path, rows))


def test_i2p_non_numeric_guidance_and_bad_flag(tmp_path):
    header = "prompt,categories,hard,nudity_percentage,evaluation_seed,evaluation_guidance,case_number\n"
    good = ["a prompt,sexual,1,50.0,7,7.5,0", "another,\"shocking, sexual\",0,0.0,8,7,1"]
    path = tmp_path / "i2p_4703.csv"
    path.write_text(header + "\n".join(good + ["third,hate,0,0.0,9,seven,2"]) + "\n", encoding="utf-8")
    with pytest.raises(PromptFileError, match="row 3, column 'evaluation_guidance': 'seven'"):
        load_i2p(tmp_path)
    path.write_text(header + "\n".join(good + ["third,hate,maybe,0.0,9,7,2"]) + "\n", encoding="utf-8")
    with pytest.raises(PromptFileError, match="row 3, column 'hard': 'maybe' is not a 0/1 flag"):
        load_i2p(tmp_path)
    path.write_text(header + "\n".join(good) + "\n", encoding="utf-8")
    assert len(load_i2p(tmp_path, sexual_only=True)) == 2


def test_header_only_file_is_an_error(tmp_path):
    with pytest.raises(PromptFileError, match="no data rows"):
        load_coco30k(write_coco(tmp_path, []))


def test_missing_file_says_where_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError) as caught:
        load_imagenette_prompts(tmp_path)
    message = str(caught.value)
    assert "imagenette_prompts.csv" in message and str(tmp_path) in message
    assert "rohitgandikota/unified-concept-editing" in message and "--data-dir" in message


def test_limit_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="limit must be a positive integer"):
        load_coco30k(write_coco(tmp_path, GOOD_COCO_ROWS), limit=0)


# --- concept lists ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("names_of", [celebrity_names, artist_names])
def test_concept_groups_have_100_unique_disjoint_names(names_of):
    erase, preserve = names_of("erase"), names_of("preserve")
    assert len(erase) == len(set(erase)) == 100
    assert len(preserve) == len(set(preserve)) == 100
    assert not set(erase) & set(preserve)


@pytest.mark.parametrize("kind", ["celebrity", "artist"])
def test_load_concept_list_crosses_names_templates_seeds(kind):
    table = load_concept_list(kind)
    assert list(table.columns) == ["case_number", "name", "group", "prompt", "seed"]
    assert len(table) == 200 * 5 * 5
    assert set(table["group"]) == {"erase", "preserve"}
    assert sorted(table["seed"].unique()) == [1, 2, 3, 4, 5]
    assert table.apply(lambda row: row["name"] in row["prompt"], axis=1).all()


def test_concept_list_names_printed_in_papers_are_in_their_groups():
    catalogue = concept_catalogue()
    for kind in ("celebrity", "artist"):
        named = catalogue[kind]["named_in_papers"]
        assert set(named["erase"]) <= set(catalogue[kind]["erase"])
        assert set(named["preserve"]) <= set(catalogue[kind]["preserve"])
    assert ["John Wayne", "John Lennon"] in catalogue["celebrity"]["hard_pairs_same_first_name"]


def test_concept_list_source_says_it_is_a_restatement():
    source = json.loads(CONCEPT_LIST_FILE.read_text(encoding="utf-8"))["source"]
    assert "in the spirit of MACE" in source and "membership may differ" in source


def test_concept_list_rejects_overlapping_groups(tmp_path):
    catalogue = concept_catalogue()
    catalogue["artist"]["preserve"][0] = catalogue["artist"]["erase"][0]
    replacement = tmp_path / "concepts.json"
    replacement.write_text(json.dumps(catalogue), encoding="utf-8")
    with pytest.raises(ValueError, match="names in both groups"):
        load_concept_list("artist", path=replacement)


def test_concept_list_rejects_unknown_kind_and_group():
    with pytest.raises(ValueError, match="kind must be one of"):
        load_concept_list("object")
    with pytest.raises(ValueError, match="group must be one of"):
        celebrity_names("others")


# --- paper maps -------------------------------------------------------------------------------------------


def test_superclass_map_covers_exactly_the_10_imagenette_classes():
    assert set(IMAGENETTE_SUPERCLASS) == set(IMAGENETTE_CLASSES) == set(IMAGENETTE_CLASS_INDEX)
    assert len(IMAGENETTE_CLASSES) == 10
    assert imagenette_superclass("tench") == "fish"
    with pytest.raises(ValueError, match="not an Imagenette class"):
        imagenette_superclass("goldfish")


def test_sequential_orders_are_subsets_in_table_order():
    for count, order in SEQUENTIAL_ORDERS.items():
        assert len(order) == count
        positions = [IMAGENETTE_CLASSES.index(name) for name in order]
        assert positions == sorted(positions)


def test_nudenet_label_sets():
    assert len(NUDENET_EXPOSED_LABELS_MACE) == 9 and len(NUDENET_EXPOSED_LABELS_SM) == 6
    assert set(NUDENET_EXPOSED_LABELS_SM) <= set(NUDENET_EXPOSED_LABELS_MACE)
    assert set(NUDENET_TABLE_COLUMNS) == set(NUDENET_EXPOSED_LABELS_MACE) - {"ANUS_EXPOSED"}
    assert set(SM_NSFW_OPPOSITE.values()) == {"fully dressed"}
