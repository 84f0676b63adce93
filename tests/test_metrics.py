"""Dependence metrics against sources with known answers."""

import math

import pytest
import torch

from mmdtok import IndependenceLoss, metrics
from mmdtok.metrics import stream_independence


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


def test_usage_of_a_known_code_distribution():
    codes = torch.tensor([[[0, 0, 1, 1], [3, 3, 3, 3]]])  # [1, 2, 4], codebook size 4
    usage = metrics.codebook_usage(codes, 4)
    torch.testing.assert_close(usage.entropy, torch.tensor([math.log(2), 0.0],
                                                           dtype=torch.float64))
    torch.testing.assert_close(usage.perplexity, torch.tensor([2.0, 1.0],
                                                              dtype=torch.float64))
    torch.testing.assert_close(usage.utilization, torch.tensor([0.5, 0.25],
                                                               dtype=torch.float64))


def test_miller_madow_removes_most_of_the_bias_on_independent_codes():
    codes = torch.randint(0, 64, (1, 3, 20_000), generator=torch.Generator().manual_seed(0))
    plug_in = metrics.pairwise_mutual_information(codes, 64, "parallel", "none")
    corrected = metrics.pairwise_mutual_information(codes, 64, "parallel")
    off = ~torch.eye(3, dtype=torch.bool)
    assert plug_in[off].min() > 0.05  # (64 - 1)^2 / (2 * 20,000) ~ 0.1 nats of bias
    assert corrected[off].abs().max() < 0.2 * plug_in[off].min()


def test_a_copied_codebook_has_normalized_mutual_information_one():
    base = torch.randint(0, 16, (2, 1, 20_000))
    other = torch.randint(0, 16, (2, 1, 20_000))
    codes = torch.cat([base, base, other], dim=1)
    table = metrics.pairwise_mutual_information(codes, 16, "parallel", normalized=True)
    assert float(table[0, 1]) == pytest.approx(1.0, abs=1e-3)
    assert abs(float(table[0, 2])) < 5e-3
    torch.testing.assert_close(table, table.T)


def test_total_correlation_of_copies_and_of_a_known_joint():
    base = torch.randint(0, 8, (1, 1, 50_000))
    copies = torch.cat([base] * 3, dim=1)
    assert float(metrics.total_correlation(copies, 8, "parallel")) == pytest.approx(2 / 3,
                                                                                     abs=1e-3)
    # Z_2 = Z_0 xor Z_1 on bits: pairwise independent, jointly dependent: TC = log 2
    bits = torch.randint(0, 2, (1, 2, 200_000))
    xor = torch.cat([bits, bits[:, :1] ^ bits[:, 1:]], dim=1)
    assert float(metrics.total_correlation(xor, 2, "parallel", normalized=False)) == (
        pytest.approx(math.log(2), abs=2e-3))
    assert metrics.pairwise_mutual_information(xor, 2, "parallel")[0, 2].abs() < 1e-3


def test_the_report_gathers_the_measures_under_the_delay_pattern():
    base = torch.randint(0, 8, (2, 1, 5_001))
    codes = torch.cat([base[..., :-1], base[..., 1:]], dim=1)  # z_1[t] = z_0[t + 1]
    report = metrics.dependence_report(codes, 8, "delay")
    assert report.rows == 2 * 4_999
    assert float(report.normalized_mutual_information[0, 1]) == pytest.approx(1, abs=1e-3)
    assert report.pairwise_dependence == pytest.approx(0.5, abs=1e-3)
    assert report.normalized_total_correlation == pytest.approx(0.5, abs=1e-3)
    assert report.usage.perplexity.shape == (2,)


def test_stream_independence_is_the_loss_value_and_sees_the_delayed_copy():
    torch.manual_seed(0)
    streams = torch.randn(64, 2, 8, 40)
    anticipating = streams.clone()  # codebook 1 at frame t - 1 copies codebook 0 at t:
    anticipating[:, 1, :, :-1] = streams[:, 0, :, 1:]  # dependent at the delayed steps
    independent = stream_independence(streams)
    assert abs(independent) < 0.01 * stream_independence(anticipating)
    loss = IndependenceLoss.from_preset("median", pattern="parallel")
    same_frame = streams.clone()
    same_frame[:, 1] = streams[:, 0]
    expected = float(IndependenceLoss.from_preset("median", pattern="parallel")(same_frame))
    assert stream_independence(same_frame, loss) == pytest.approx(expected)
    assert int(loss.num_calls) == 1


def test_stream_independence_needs_no_gradient_and_leaves_the_streams_untouched():
    streams = torch.randn(16, 3, 4, 20, requires_grad=True)
    before = streams.detach().clone()
    value = stream_independence(streams)
    assert isinstance(value, float) and streams.grad is None
    assert torch.equal(streams.detach(), before)
