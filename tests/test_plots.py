"""The latent-space projection: principal components, and which images the runner embeds for it."""

import numpy as np
import torch
from conftest import requires_data

from bench.harness.plots import LATENT_PLOT_BASE_PER_CLASS, project_2d


def test_projection_is_the_top_two_principal_components():
    generator = torch.Generator().manual_seed(0)
    points = torch.randn(300, 5, generator=generator) * torch.tensor([5.0, 3.0, 1.0, 0.5, 0.1]) + 7
    projected, explained = project_2d(points)
    # Independent computation: eigenvectors of the covariance matrix (numpy), signs aligned.
    centred = points.double().numpy() - points.double().numpy().mean(0)
    values, vectors = np.linalg.eigh(np.cov(centred.T))
    top = vectors[:, ::-1][:, :2]
    expected = centred @ top
    signs = np.sign((expected * projected.double().numpy()).sum(0))
    assert np.allclose(projected.double().numpy(), expected * signs, atol=1e-4)
    assert np.allclose(explained.numpy(), values[::-1][:2] / values.sum(), atol=1e-5)
    assert explained[0] > explained[1]


@requires_data("fashion-mnist")
def test_latent_groups_embed_base_support_and_query_images(fashion_split):
    from bench.harness.artifacts import latent_groups

    class Flatten:
        def embed(self, x):
            return x.flatten(1)

    groups = latent_groups(Flatten(), fashion_split)
    roles = [role for _, role, _ in groups]
    assert roles.count("base") == 9 and roles[-2:] == ["support", "query"]
    assert all(len(points) == LATENT_PLOT_BASE_PER_CLASS for _, role, points in groups if role == "base")
    assert torch.equal(groups[-2][2], fashion_split.task.support.flatten(1))
    assert groups[-1][0] == "Ankle boot (query)"
