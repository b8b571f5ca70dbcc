import numpy as np
import pytest
import torch

from bench.splits import load_dataset, make_split
from conftest import requires_data

pytestmark = requires_data("fashion-mnist")


def _rows(images: torch.Tensor) -> set[bytes]:
    return {bytes(row) for row in (images * 255).round().to(torch.uint8).flatten(1).numpy()}


def test_split_follows_the_protocol(fashion_split):
    _, data = load_dataset("fashion-mnist")
    task, info = fashion_split.task, fashion_split.info
    assert info.split_id == "fashion-mnist/novel9-4shot.v1" and info.novel_class == 9
    # Support: train images of the novel class, the ones named by the recorded indices.
    assert all(data.train_labels[i] == 9 for i in info.support_indices)
    np.testing.assert_array_equal((task.support * 255).round().to(torch.uint8).numpy(), data.train_images[list(info.support_indices)])
    # Reference: exactly the novel class's test images.
    assert fashion_split.reference.shape[0] == 1000 == int((data.test_labels == 9).sum())
    np.testing.assert_array_equal((fashion_split.reference * 255).round().to(torch.uint8).numpy(), data.test_images[data.test_labels == 9])
    # Base set: every other train image, and no novel-class image.
    assert task.base_images.shape[0] == 54000 and not (task.base_labels == 9).any()
    assert set(task.base_labels.tolist()) == set(range(9))
    # No support image appears among the reference images.
    assert not _rows(task.support) & _rows(fashion_split.reference)


def test_support_draw_is_seeded_and_seeds_differ():
    a, b, c = (make_split("fashion-mnist", 4, s) for s in (0, 0, 1))
    assert a.info.support_indices == b.info.support_indices and a.info.sha256 == b.info.sha256
    assert a.info.support_indices != c.info.support_indices and a.info.sha256 != c.info.sha256


def test_support_indices_are_an_independent_numpy_draw():
    _, data = load_dataset("fashion-mnist")
    expected = np.random.default_rng(3).choice(np.flatnonzero(data.train_labels == 9), 5, replace=False)
    assert make_split("fashion-mnist", 5, 3).info.support_indices == tuple(expected.tolist())


def test_novel_class_by_name_and_shots_in_split_id():
    split = make_split("fashion-mnist", 10, 0, novel_class="sandal")
    assert split.info.split_id == "fashion-mnist/novel5-10shot.v1"
    assert not (split.task.base_labels == 5).any() and split.task.support.shape == (10, 1, 28, 28)


@pytest.mark.parametrize("shots", [0, -1, 6001, 100000])
def test_bad_shots_are_refused(shots):
    with pytest.raises(ValueError, match="shots"):
        make_split("fashion-mnist", shots, 0)
