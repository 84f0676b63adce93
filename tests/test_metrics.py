"""Dependence metrics against sources with known answers."""

import math

import pytest
import torch

from mmdtok import metrics


def test_independent_uniform_codes_score_about_zero():
    codes = torch.randint(0, 8, (4, 3, 50_000))
    assert metrics.normalized_pairwise_dependence(codes, 8, "parallel") < 1e-3


def test_a_copied_codebook_scores_one_half_and_its_mi_is_its_entropy():
    base = torch.randint(0, 16, (2, 1, 20_000))
    codes = torch.cat([base, base], dim=1)
    assert metrics.normalized_pairwise_dependence(codes, 16, "parallel") == pytest.approx(0.5)
    torch.testing.assert_close(metrics.mutual_information(base, base, 16, 16),
                               metrics.entropy(base, 16))


def test_mutual_information_of_a_known_joint_table():
    table = torch.tensor([[0.4, 0.1], [0.1, 0.4]])
    counts = (table * 1000).long()
    a = torch.cat([torch.full((int(counts[i, j]),), i) for i in range(2) for j in range(2)])
    b = torch.cat([torch.full((int(counts[i, j]),), j) for i in range(2) for j in range(2)])
    expected = sum(float(p) * math.log(float(p) / 0.25) for p in table.flatten())
    assert float(metrics.mutual_information(a, b, 2, 2)) == pytest.approx(expected)


def test_the_delay_pattern_finds_a_lagged_copy():
    base = torch.randint(0, 8, (2, 1, 10_001))
    codes = torch.cat([base[..., :-1], base[..., 1:]], dim=1)  # z_1[t] = z_0[t + 1]
    assert metrics.normalized_pairwise_dependence(codes, 8, "delay") == pytest.approx(0.5)
    assert metrics.normalized_pairwise_dependence(codes, 8, "parallel") < 1e-2


def test_bad_codes_raise():
    with pytest.raises(ValueError, match="K >= 2"):
        metrics.normalized_pairwise_dependence(torch.zeros(2, 1, 5, dtype=torch.long), 4)
    with pytest.raises(ValueError, match="must align"):
        metrics.mutual_information(torch.zeros(3, dtype=torch.long),
                                   torch.zeros(4, dtype=torch.long), 2, 2)
