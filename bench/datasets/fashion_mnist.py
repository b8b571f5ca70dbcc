"""Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017): 70,000 28x28 grey-scale images of 10 clothing classes."""

from bench.datasets import DATASETS
from bench.datasets._base import ArraySlot, DataFile, ImageDataset, read_idx

_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"


def _idx(filename: str, content_sha256: str) -> DataFile:
    # Content sums are of the decompressed IDX bytes: Debian's recompressed .gz files and the
    # upstream ones decompress to the same bytes.
    return DataFile(filename, read_idx, content_sha256=frozenset({content_sha256}), urls=(_URL + filename,))


DATASET = DATASETS.register(
    ImageDataset(
        name="fashion-mnist",
        title="Fashion-MNIST",
        class_names=(
            "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
            "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
        ),
        image_shape=(1, 28, 28),
        slots=(
            ArraySlot("train_images", (_idx("train-images-idx3-ubyte.gz", "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),)),
            ArraySlot("train_labels", (_idx("train-labels-idx1-ubyte.gz", "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),)),
            ArraySlot("test_images", (_idx("t10k-images-idx3-ubyte.gz", "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),)),
            ArraySlot("test_labels", (_idx("t10k-labels-idx1-ubyte.gz", "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),)),
        ),
        citation="Xiao, Rasul and Vollgraf, Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning Algorithms, 2017",
        license="MIT, (c) Zalando SE",
        default_novel_class=9,
        # Every shoe in Fashion-MNIST points left: the domain evaluator calls 96% of test ankle boots
        # ankle boots, and 0% of the same boots mirrored (sandals 98% -> 46%, sneakers 97% -> 40%).
        allows_hflip=False,
        evaluator_min_accuracy=0.90,
        notes="Debian package dataset-fashion-mnist ships the canonical files under /usr/share/datasets/fashion-mnist/.",
    ),
    __name__,
)
