"""Registered datasets: one module per dataset, registry key = module name (hyphenated)."""

from bench.datasets._base import (
    DataIntegrityError,
    DataNotFoundError,
    ImageDataset,
    LoadedData,
)
from bench.registry import Registry

DATASETS: Registry[ImageDataset] = Registry("dataset", "bench.datasets")

__all__ = ["DATASETS", "DataIntegrityError", "DataNotFoundError", "ImageDataset", "LoadedData"]
