"""Registered datasets: one module per dataset, registry key = module name (hyphenated)."""

from bench.data.datasets._base import (
    DataIntegrityError,
    DataNotFoundError,
    ImageDataset,
    LoadedData,
)
from bench.data.datasets.folder import PREFIX, folder_dataset
from bench.sdk.registry import Registry


class DatasetRegistry(Registry[ImageDataset]):
    """The registered datasets, plus `folder:PATH[@SIZE]`: a folder of images made into a dataset on first use."""

    def get(self, name: str) -> ImageDataset:
        if name.strip().startswith(PREFIX):
            dataset = folder_dataset(name, lookup=super().get)
            self._entries.setdefault(dataset.name, dataset)
            return self._entries[dataset.name]
        return super().get(name)


DATASETS: DatasetRegistry = DatasetRegistry("dataset", "bench.data.datasets")

__all__ = ["DATASETS", "DataIntegrityError", "DataNotFoundError", "ImageDataset", "LoadedData"]
