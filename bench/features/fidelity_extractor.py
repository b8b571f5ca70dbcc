"""The domain evaluator as a torch-fidelity feature extractor (`bench-domain`), registered on import.

torch-fidelity instantiates extractors by name with a weights path; this adapter reads the
evaluator's weights-only file and returns its 128-d penultimate features (and logits).
"""

from __future__ import annotations

import torch
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

from bench.features.evaluator import FIDELITY_EXTRACTOR, read_evaluator


class DomainFeatureExtractor(FeatureExtractorBase):
    """torch-fidelity wrapper of a trained domain evaluator checkpoint (`feature_extractor_weights_path`)."""

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            raise ValueError(
                f"{FIDELITY_EXTRACTOR} needs feature_extractor_weights_path (a domain evaluator weights file)"
            )
        self.model, _ = read_evaluator(feature_extractor_weights_path)

    @staticmethod
    def get_provided_features_list():
        return ("features", "logits")

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return "features"

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return None

    def forward(self, x):
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        features, logits = self.model(x)
        provided = {"features": features, "logits": logits}
        return tuple(provided[name] for name in self.features_list)


if FIDELITY_EXTRACTOR not in FEATURE_EXTRACTORS_REGISTRY:
    register_feature_extractor(FIDELITY_EXTRACTOR, DomainFeatureExtractor)
