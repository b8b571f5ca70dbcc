"""MNIST (LeCun, Cortes and Burges): 70,000 28x28 grey-scale hand-written digits."""

from bench.data.datasets import DATASETS
from bench.data.datasets._base import ArraySlot, DataFile, ImageDataset, npz_member, read_idx

_URLS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")


def _idx(filename: str, file_sha256: str, content_sha256: str | None = None) -> DataFile:
    return DataFile(
        filename,
        read_idx,
        file_sha256=frozenset({file_sha256}),
        content_sha256=frozenset({content_sha256} if content_sha256 else ()),
        urls=tuple(base + filename for base in _URLS),
    )


# The staged copy of the train images is a reconstruction from a PNG copy of MNIST: within +-1
# grey level of the canonical pixels (97% exact). It is accepted, and the record says so.
_RECONSTRUCTED_TRAIN = DataFile(
    "train-reconstructed.npz",
    npz_member("x_train"),
    content_sha256=frozenset({"72e3d52f01b3aee582d52408819d7ab144be1060a3bf679d866e47ef4e71ed7e"}),
    exact=False,
    note="train images reconstructed from a PNG copy of MNIST; within +-1 grey level of the canonical pixels",
)

DATASET = DATASETS.register(
    ImageDataset(
        name="mnist",
        title="MNIST",
        class_names=tuple(str(d) for d in range(10)),
        image_shape=(1, 28, 28),
        slots=(
            ArraySlot(
                "train_images",
                (
                    _idx(
                        "train-images-idx3-ubyte.gz", "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"
                    ),
                    _RECONSTRUCTED_TRAIN,
                ),
            ),
            ArraySlot(
                "train_labels",
                (
                    _idx(
                        "train-labels-idx1-ubyte.gz",
                        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
                    ),
                ),
            ),
            ArraySlot(
                "test_images",
                (
                    _idx(
                        "t10k-images-idx3-ubyte.gz",
                        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                    ),
                ),
            ),
            ArraySlot(
                "test_labels",
                (
                    _idx(
                        "t10k-labels-idx1-ubyte.gz",
                        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
                    ),
                ),
            ),
        ),
        citation="LeCun, Cortes and Burges, The MNIST database of handwritten digits, 1998",
        license="CC BY-SA 3.0 (as distributed by its authors)",
        default_novel_class=9,
        allows_hflip=False,
        evaluator_min_accuracy=0.99,
        notes="Reference (test) images are always the canonical t10k files.",
        # The pen strokes of each hand-written digit.
        class_descriptions=(
            "the digit zero: one closed oval loop, taller than wide, with an empty middle",
            "the digit one: a single straight vertical stroke, often slanted, sometimes with a small flag at the top",
            "the digit two: a curved hook at the top sweeping down diagonally to the left into a flat horizontal base",
            "the digit three: two open curves stacked on top of each other, bulging to the right and meeting in the middle",
            "the digit four: a short vertical or slanted stroke and a horizontal bar forming a corner, crossed by a long vertical stroke on the right",
            "the digit five: a flat bar at the top, a short vertical stroke down the left, then a round belly curving right and back at the bottom",
            "the digit six: a long curved stroke coming down from the top right into a closed round loop at the bottom",
            "the digit seven: a horizontal bar at the top joined at its right end to a long straight stroke slanting down to the left",
            "the digit eight: two closed loops stacked on top of each other, crossing in the middle like an hourglass",
            "the digit nine: a closed round loop at the top with a straight tail going down from its right side",
        ),
    ),
    __name__,
)
