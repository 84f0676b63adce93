"""Laws of the codebook math: nearest search, k-means, EMA, exact resumption."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmdtok.quantizers import CodebookOptions, ResidualVQ, codebook
from tests.quantizers.mixtures import as_latent, gaussian_mixture


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 300), st.integers(1, 16), st.integers(1, 64), st.integers(0, 10_000))
def test_nearest_returns_a_code_at_minimal_euclidean_distance(rows, dim, codes, seed):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, dim, generator=generator, dtype=torch.float64)
    embed = torch.randn(codes, dim, generator=generator, dtype=torch.float64)
    distances = torch.cdist(x, embed)
    chosen = distances.gather(1, codebook.nearest(x, embed)[:, None])[:, 0]
    torch.testing.assert_close(chosen, distances.min(dim=1).values)


def test_blocked_search_equals_one_block(monkeypatch):
    x, embed = torch.randn(1000, 8), torch.randn(64, 8)
    whole = codebook.nearest(x, embed)
    monkeypatch.setattr(codebook, "SEARCH_BLOCK_ELEMENTS", 64 * 100)  # blocks of 100 rows
    assert torch.equal(codebook.nearest(x, embed), whole)


def test_kmeans_lowers_the_distortion_of_its_random_start():
    rows = gaussian_mixture(2000, 4, 32, spread=0.1)
    start = codebook.kmeans(rows, 32, 0, torch.Generator().manual_seed(1))
    fitted = codebook.kmeans(rows, 32, 20, torch.Generator().manual_seed(1))

    def distortion(centroids):
        return torch.cdist(rows, centroids).min(dim=1).values.square().mean()

    assert distortion(fitted) < 0.5 * distortion(start)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0, 1e4), min_size=1, max_size=50), st.floats(1e-6, 1.0))
def test_laplace_smoothing_keeps_the_total_and_makes_every_count_positive(counts, eps):
    counts = torch.tensor(counts, dtype=torch.float64)
    smoothed = codebook.laplace_smoothed(counts, eps)
    if counts.sum() > 0:
        assert (smoothed > 0).all()
        torch.testing.assert_close(smoothed.sum(), counts.sum())


def test_training_resumed_from_a_state_dict_continues_exactly():
    def batches():
        for step in range(6):
            yield as_latent(gaussian_mixture(2048, 8, 128, seed=step), batch=4)

    straight = ResidualVQ(8, 3, 64,
                          codebook=CodebookOptions(kmeans_iters=5, dead_code_threshold=0.5)).train()
    resumed = ResidualVQ(8, 3, 64,
                         codebook=CodebookOptions(kmeans_iters=5, dead_code_threshold=0.5)).train()
    for step, z in enumerate(batches()):
        straight(z)
        if step == 2:
            resumed.load_state_dict(straight.state_dict())
        elif step > 2:
            resumed(z)
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
