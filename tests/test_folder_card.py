"""A folder made from a dataset at hand (`bench folder`) is measured by that dataset's domain evaluator.

The written images are compared with the source arrays (PNG is lossless, so the folder must read
back exactly the drawn train images); the card's bad cases must each say what is wrong.
"""

import json
import re

import numpy as np
import pytest
import torch
from conftest import requires_data

from bench.data.datasets import DATASETS
from bench.data.datasets.folder import CARD, folder_dataset, write_folder
from bench.features.evaluator import load_domain_evaluator
from bench.harness.evaluation import evaluate
from bench.sdk.registry import UnknownNameError


@pytest.fixture(scope="module")
def nines(tmp_path_factory):
    out = tmp_path_factory.mktemp("folders") / "nines"
    card = write_folder(DATASETS.get("mnist"), "9", 30, seed=3, out=out)
    return out, card


@requires_data("mnist")
def test_the_folder_holds_exactly_the_drawn_train_images_and_its_card(nines):
    out, card = nines
    source = DATASETS.get("mnist").load()
    indices = card["source"]["indices"]
    assert len(indices) == 30 == len(set(indices)) and (source.train_labels[indices] == 9).all()
    assert sorted(p.name for p in out.iterdir() if p.name != CARD) == [f"mnist-train-{i:06d}.png" for i in indices]
    folder = folder_dataset(f"folder:{out}@28", DATASETS.get)
    loaded = folder.load()  # the card is not an image: nothing is skipped as unreadable
    assert loaded.provenance["train_images"]["unreadable_files"] == []
    read = np.concatenate([loaded.train_images, loaded.test_images])
    expected = source.train_images[indices]
    assert sorted(map(bytes, read)) == sorted(map(bytes, expected))
    # The same seed draws the same images; the card is what `bench folder --json` prints.
    assert json.loads((out / CARD).read_text()) == card


@requires_data("mnist")
def test_a_carded_folder_is_named_by_its_card_not_by_where_it_lies(nines, tmp_path):
    out, _ = nines
    elsewhere = tmp_path / "moved" / out.name
    write_folder(DATASETS.get("mnist"), "9", 30, seed=3, out=elsewhere)
    other_draw = tmp_path / "redrawn" / out.name
    write_folder(DATASETS.get("mnist"), "9", 30, seed=4, out=other_draw)
    name = folder_dataset(f"folder:{out}@28", DATASETS.get).name
    assert folder_dataset(f"folder:{elsewhere}@28", DATASETS.get).name == name  # same card: same split names
    assert folder_dataset(f"folder:{other_draw}@28", DATASETS.get).name != name


@requires_data("mnist")
def test_the_card_names_the_ruler_and_the_class_the_evaluator_should_see(nines):
    out, _ = nines
    folder = folder_dataset(f"folder:{out}@28", DATASETS.get)
    assert folder.feature_extractor == "domain" and folder.evaluator_dataset == "mnist" and folder.evaluator_class == 9
    name = DATASETS.get(f"folder:{out}@28").name
    evaluator = load_domain_evaluator(name)
    assert evaluator.card["weights_sha256"] == load_domain_evaluator("mnist").card["weights_sha256"]
    # Real nines score as nines under the mnist evaluator; the folder's own class 0 would not be the digit 0.
    images = np.concatenate([folder.load().train_images, folder.load().test_images])
    x = torch.from_numpy(images).float() / 255
    outcomes, _ = evaluate(x, reference=x, dataset=name, novel_class=0, metric_names=["class_consistency"])
    assert outcomes["class_consistency"]["status"] == "ok" and outcomes["class_consistency"]["value"] > 0.9


def _folder_with_card(tmp_path, card_text: str, size: int = 8):
    import cv2

    root = tmp_path / "images"
    root.mkdir(parents=True)
    for i in range(3):
        cv2.imwrite(str(root / f"{i}.png"), np.full((size, size), 40 * i, dtype=np.uint8))
    (root / CARD).write_text(card_text)
    return root


def test_a_card_that_is_not_json_or_names_no_evaluator_says_so(tmp_path):
    for i, text in enumerate(("{not json", json.dumps({"source": {}}), json.dumps([1]))):
        root = _folder_with_card(tmp_path / str(i), text)
        with pytest.raises(ValueError, match=f"{CARD} is not a folder card"):
            folder_dataset(f"folder:{root}@8", DATASETS.get)


def test_a_card_naming_an_unknown_dataset_lists_the_known_ones(tmp_path):
    root = _folder_with_card(tmp_path, json.dumps({"evaluator": "mnits"}))
    with pytest.raises(UnknownNameError, match="mnist"):
        folder_dataset(f"folder:{root}@8", DATASETS.get)


def test_a_card_whose_evaluator_measures_another_shape_names_the_size_to_pass(tmp_path):
    root = _folder_with_card(tmp_path, json.dumps({"evaluator": "mnist"}))
    with pytest.raises(ValueError, match="pass @28"):
        folder_dataset(f"folder:{root}@8", DATASETS.get)


@requires_data("mnist")
def test_a_folder_is_written_only_into_an_empty_folder_and_only_as_many_images_as_the_class_has(tmp_path, nines):
    out, _ = nines
    with pytest.raises(FileExistsError, match="not empty"):
        write_folder(DATASETS.get("mnist"), "9", 5, seed=0, out=out)
    with pytest.raises(ValueError, match="has .* train images; asked 100000"):
        write_folder(DATASETS.get("mnist"), "9", 100000, seed=0, out=tmp_path / "many")


def test_the_papers_cat_numbers_sit_beside_the_cats_folder_wherever_it_was_written(tmp_path):
    import cv2

    from bench.data.splits import unconditional_split_id
    from bench.harness.published import IMLE_CAT_TABLE, PUBLISHED_TABLES

    for parent in ("a", "b"):
        root = tmp_path / parent / "cifar10-cats"
        root.mkdir(parents=True)
        for i in range(3):
            cv2.imwrite(str(root / f"{i}.png"), np.full((32, 32, 3), (40 * i, 10, 200), dtype=np.uint8))
        split = unconditional_split_id(folder_dataset(f"folder:{root}@32", DATASETS.get).name, 100)
        assert [t for t in PUBLISHED_TABLES if re.fullmatch(t.split_pattern, split)] == [IMLE_CAT_TABLE]
        assert not re.fullmatch(IMLE_CAT_TABLE.split_pattern, split.replace("100shot", "90shot"))
