import numpy as np
import pytest
import torch
from conftest import requires_data

from bench.data.splits import load_dataset, make_split


def _rows(images: torch.Tensor) -> set[bytes]:
    return {bytes(row) for row in (images * 255).round().to(torch.uint8).flatten(1).numpy()}


# (dataset, novel class, train images of the novel class, test images of the novel class, classes)
DATASET_SPLITS = [
    pytest.param("fashion-mnist", 9, 6000, 1000, 10, marks=requires_data("fashion-mnist")),
    pytest.param("mnist", 9, 5949, 1009, 10, marks=requires_data("mnist")),
    pytest.param("cifar10", 9, 5000, 1000, 10, marks=requires_data("cifar10")),
]


@pytest.mark.parametrize("name, novel, n_train, n_test, n_classes", DATASET_SPLITS)
def test_split_follows_the_protocol(name, novel, n_train, n_test, n_classes):
    _, data = load_dataset(name)
    split = make_split(name, shots=4, seed=0)
    task, info = split.task, split.info
    assert info.split_id == f"{name}/novel{novel}-4shot.v1" and info.novel_class == novel
    # Support: train images of the novel class, the ones named by the recorded indices.
    assert all(data.train_labels[i] == novel for i in info.support_indices)
    np.testing.assert_array_equal(
        (task.support * 255).round().to(torch.uint8).numpy(), data.train_images[list(info.support_indices)]
    )
    # Reference: exactly the novel class's test images.
    assert split.reference.shape[0] == n_test == int((data.test_labels == novel).sum())
    np.testing.assert_array_equal(
        (split.reference * 255).round().to(torch.uint8).numpy(), data.test_images[data.test_labels == novel]
    )
    # Base set: every other train image, and no novel-class image.
    assert task.base_images.shape[0] == len(data.train_labels) - n_train and not (task.base_labels == novel).any()
    assert set(task.base_labels.tolist()) == set(range(n_classes)) - {novel}
    # No support image appears among the reference images; the oracle's pool excludes the support set.
    assert not _rows(task.support) & _rows(split.reference)
    assert len(split.unseen_novel_indices) == n_train - 4
    assert not set(split.unseen_novel_indices) & set(info.support_indices)


@pytest.mark.parametrize("name, novel, n_train, n_test, n_classes", DATASET_SPLITS)
def test_support_draw_is_seeded_and_seeds_differ(name, novel, n_train, n_test, n_classes):
    a, b, c = (make_split(name, 4, s) for s in (0, 0, 1))
    assert a.info.support_indices == b.info.support_indices and a.info.sha256 == b.info.sha256
    assert a.info.support_indices != c.info.support_indices and a.info.sha256 != c.info.sha256


@requires_data("fashion-mnist")
def test_support_indices_are_an_independent_numpy_draw():
    _, data = load_dataset("fashion-mnist")
    expected = np.random.default_rng(3).choice(np.flatnonzero(data.train_labels == 9), 5, replace=False)
    assert make_split("fashion-mnist", 5, 3).info.support_indices == tuple(expected.tolist())


@requires_data("fashion-mnist")
def test_novel_class_by_name_and_shots_in_split_id():
    split = make_split("fashion-mnist", 10, 0, novel_class="sandal")
    assert split.info.split_id == "fashion-mnist/novel5-10shot.v1"
    assert not (split.task.base_labels == 5).any() and split.task.support.shape == (10, 1, 28, 28)


@requires_data("fashion-mnist")
@pytest.mark.parametrize("shots", [0, -1, 6001, 100000])
def test_bad_shots_are_refused(shots):
    with pytest.raises(ValueError, match="shots"):
        make_split("fashion-mnist", shots, 0)
