"""Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017): 70,000 28x28 grey-scale images of 10 clothing classes."""

from bench.data.datasets import DATASETS
from bench.data.datasets._base import ArraySlot, DataFile, ImageDataset, read_idx

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
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        image_shape=(1, 28, 28),
        slots=(
            ArraySlot(
                "train_images",
                (
                    _idx(
                        "train-images-idx3-ubyte.gz", "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"
                    ),
                ),
            ),
            ArraySlot(
                "train_labels",
                (
                    _idx(
                        "train-labels-idx1-ubyte.gz", "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"
                    ),
                ),
            ),
            ArraySlot(
                "test_images",
                (
                    _idx(
                        "t10k-images-idx3-ubyte.gz", "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"
                    ),
                ),
            ),
            ArraySlot(
                "test_labels",
                (
                    _idx(
                        "t10k-labels-idx1-ubyte.gz", "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"
                    ),
                ),
            ),
        ),
        citation="Xiao, Rasul and Vollgraf, Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning Algorithms, 2017",
        license="MIT, (c) Zalando SE",
        default_novel_class=9,
        # Every shoe in Fashion-MNIST points left: the domain evaluator calls 96% of test ankle boots
        # ankle boots, and 0% of the same boots mirrored (sandals 98% -> 46%, sneakers 97% -> 40%).
        allows_hflip=False,
        evaluator_min_accuracy=0.90,
        notes="Debian package dataset-fashion-mnist ships the canonical files under /usr/share/datasets/fashion-mnist/.",
        # What each class looks like in these images (garments flat from the front, shoes from the side).
        class_descriptions=(
            "a T-shirt or top: a short-sleeved upper-body garment with a round neckline, seen flat from the front",
            "a pair of trousers: two long narrow legs side by side, joined at the waist, much taller than wide",
            "a pullover: a knitted sweater with long sleeves spread out to the sides and a ribbed hem and cuffs",
            "a dress: a one-piece garment that widens from a narrow top with straps or short sleeves to a long skirt",
            "a coat: a heavy long-sleeved outer garment with a collar and a front opening closed by buttons or a zip",
            "a sandal: an open flat shoe made of thin straps over a thin sole, with gaps between the straps",
            "a shirt: a long-sleeved garment with a pointed collar and a row of buttons down the front",
            "a sneaker: a low sports shoe with laces, a rounded toe and a flat rubber sole, seen from the side",
            "a bag: a boxy handbag or purse, wider than tall, with a handle or a strap on top",
            "an ankle boot: a shoe whose shaft covers the ankle, with a thick sole and a low heel",
        ),
    ),
    __name__,
)
