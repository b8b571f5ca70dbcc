"""The feature layer: the domain evaluators (the fixed ruler) and their torch-fidelity adapter."""

from bench.features import fidelity_extractor  # noqa: F401 - registers `bench-domain` with torch-fidelity
