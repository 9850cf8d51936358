"""E2LSH and cluster ids: the hash formula, collision-free keys, limits, determinism, bad input."""
import math

import pytest
import torch

from ccoat.hashing import (
    E2LSH,
    Clusters,
    clusters_from_codes,
    dense_rank,
    draw_projections,
    e2lsh_codes,
)


def _unique_reference(codes: torch.Tensor) -> torch.Tensor:
    """Per-row cluster ids from torch.unique over (row, code tuple): the independent reference."""
    B, h, N, n = codes.shape
    rows = torch.arange(B * h).repeat_interleave(N)[:, None]
    table = torch.cat([rows, codes.reshape(-1, n).long()], dim=1)
    _, inverse = torch.unique(table, dim=0, return_inverse=True)
    inverse = inverse.view(B * h, N)
    return (inverse - inverse.amin(1, keepdim=True)).view(B, h, N)


def test_codes_are_floor_of_shifted_projection():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 10, 8, generator=g)
    a, b = draw_projections(8, 5, 0.7, g)
    expected = torch.stack([torch.floor((x @ a[:, j] + b[j]) / 0.7) for j in range(5)], dim=-1)
    torch.testing.assert_close(e2lsh_codes(x, a, b, 0.7), expected)


def test_offsets_lie_in_zero_to_bucket_width():
    _, b = draw_projections(8, 1000, 2.5, torch.Generator().manual_seed(0))
    assert b.min() >= 0 and b.max() < 2.5


@pytest.mark.parametrize("low, high, n", [(-3, 3, 4), (-1000, 1000, 40), (0, 2, 70),
                                          (-2 ** 40, 2 ** 40, 3)])
def test_cluster_ids_equal_torch_unique_over_tuples(low, high, n):
    # Many hashes and wide code ranges make the packing re-rank its key several times.
    g = torch.Generator().manual_seed(n)
    codes = torch.randint(low, high, (2, 3, 60, n), generator=g)
    codes[:, :, :20] = codes[:, :, 20:40]  # some repeated tuples
    clusters = clusters_from_codes(codes)
    assert torch.equal(clusters.ids, _unique_reference(codes))


def test_tuples_that_collide_under_shifted_sum_packing_stay_apart():
    # ACT's code packs a tuple into one integer as a sum of shifted codes,
    # key = sum_j code_j * 2**(shift*j). With shift 1, (2, 0) and (0, 1) both give 2, and the
    # negative code in (-1, 1) gives 1, the key of (1, 0).
    def shifted_sum(t, shift=1):
        return sum(c * 2 ** (shift * j) for j, c in enumerate(t))

    tuples = [(2, 0), (0, 1), (-1, 1), (1, 0)]
    assert shifted_sum(tuples[0]) == shifted_sum(tuples[1])
    assert shifted_sum(tuples[2]) == shifted_sum(tuples[3])
    codes = torch.tensor(tuples, dtype=torch.float32).view(1, 1, 4, 2)
    clusters = clusters_from_codes(codes)
    assert clusters.ids.flatten().unique().numel() == 4
    assert clusters.num_clusters.item() == 4


def test_equal_tuples_share_and_distinct_tuples_never_share_a_cluster():
    g = torch.Generator().manual_seed(1)
    codes = torch.randint(-2, 2, (3, 2, 200, 6), generator=g).float()
    ids = clusters_from_codes(codes).ids
    for b in range(3):
        for h in range(2):
            same_tuple = (codes[b, h, :, None] == codes[b, h, None, :]).all(-1)
            same_id = ids[b, h, :, None] == ids[b, h, None, :]
            assert torch.equal(same_tuple, same_id)


def test_ids_are_contiguous_per_row_and_counts_add_up():
    g = torch.Generator().manual_seed(2)
    codes = torch.randint(-3, 3, (2, 4, 50, 3), generator=g)
    codes[1, 2] = 0  # a row with a single cluster
    c = clusters_from_codes(codes)
    assert c.counts.shape == (2, 4, c.num_clusters.max())
    assert torch.equal(c.counts.sum(-1), torch.full((2, 4), 50))
    for b in range(2):
        for h in range(4):
            k = c.num_clusters[b, h].item()
            assert set(c.ids[b, h].tolist()) == set(range(k))
            assert (c.counts[b, h, :k] > 0).all() and (c.counts[b, h, k:] == 0).all()
    assert c.num_clusters[1, 2] == 1


def test_rows_are_clustered_independently():
    # A batch of rows equals hashing each row alone: no Python loop, no leakage between rows.
    lsh = E2LSH(8, n_hashes=6, bucket_width=0.5, seed=0)
    x = torch.randn(3, 2, 40, 8)
    x[1] = x[0]  # identical rows must get identical ids, not shared clusters
    batch = lsh(x)
    for b in range(3):
        alone = lsh(x[b:b + 1])
        assert torch.equal(batch.ids[b], alone.ids[0])
        assert torch.equal(batch.num_clusters[b], alone.num_clusters[0])


def test_tiny_bucket_width_gives_singletons_and_huge_width_one_cluster():
    x = torch.randn(2, 2, 100, 8)
    tiny = E2LSH(8, n_hashes=4, bucket_width=1e-6, seed=0)(x)
    assert torch.equal(tiny.num_clusters, torch.full((2, 2), 100))
    huge = E2LSH(8, n_hashes=4, bucket_width=1e6, seed=0)(x)
    # Every projection lies within one bucket unless an offset puts a border in between.
    assert (huge.num_clusters <= 2).all()
    same = E2LSH(8, n_hashes=32, bucket_width=0.1, seed=0)(x[:, :, :1].expand(-1, -1, 50, -1))
    assert torch.equal(same.num_clusters, torch.ones(2, 2, dtype=torch.long))


def test_more_hashes_or_narrower_buckets_never_give_fewer_clusters():
    # Adding a hash refines the partition; it can only split clusters.
    x = torch.randn(1, 4, 500, 8)
    lsh = E2LSH(8, n_hashes=16, bucket_width=1.0, seed=3)
    codes = lsh.codes(x)
    counts = [clusters_from_codes(codes[..., :j]).num_clusters for j in range(1, 17)]
    for fewer, more in zip(counts, counts[1:]):
        assert (more >= fewer).all()


def test_dense_rank_keeps_order():
    key = torch.tensor([50, -3, 50, 7, -3, 1000])
    ranks, n = dense_rank(key)
    assert ranks.tolist() == [2, 0, 2, 1, 0, 3] and n == 4


def test_fixed_projections_are_buffers_and_seeded():
    a, b = E2LSH(8, 16, 1.0, seed=5), E2LSH(8, 16, 1.0, seed=5)
    assert torch.equal(a.projections, b.projections) and torch.equal(a.offsets, b.offsets)
    assert set(a.state_dict()) == {"projections", "offsets"}
    torch.manual_seed(0)
    c = E2LSH(8, 16, 1.0)
    torch.manual_seed(0)
    d = E2LSH(8, 16, 1.0)
    assert torch.equal(c.projections, d.projections)
    x = torch.randn(1, 1, 30, 8)
    assert torch.equal(a.codes(x), a.codes(x))  # fixed: same codes every call


def test_redraw_draws_new_projections_every_call_repeatably():
    x = torch.randn(1, 2, 300, 8)
    a = E2LSH(8, 8, 0.5, redraw=True, seed=0)
    first, second = a.codes(x), a.codes(x)
    assert not torch.equal(first, second)
    b = E2LSH(8, 8, 0.5, redraw=True, seed=0)
    assert torch.equal(b.codes(x), first) and torch.equal(b.codes(x), second)


def test_hashing_runs_in_float32_for_low_precision_queries():
    x = torch.randn(1, 2, 64, 8)
    lsh = E2LSH(8, 8, 0.5, seed=0)
    expected = lsh.codes(x.bfloat16().float())
    assert torch.equal(lsh.codes(x.bfloat16()), expected)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(lsh.codes(x.bfloat16()), expected)


@pytest.mark.parametrize("n_hashes", [0, -1, 1.5, True, "8"])
def test_bad_n_hashes(n_hashes):
    with pytest.raises(ValueError, match="n_hashes must be an integer >= 1"):
        E2LSH(8, n_hashes=n_hashes)


@pytest.mark.parametrize("width", [0, -1.0, math.nan, math.inf, "wide"])
def test_bad_bucket_width(width):
    with pytest.raises(ValueError, match="bucket_width must be"):
        E2LSH(8, bucket_width=width)


def test_bad_shapes():
    lsh = E2LSH(8, 4, 1.0)
    with pytest.raises(ValueError, match=r"expected queries of shape \(B, heads, N, 8\)"):
        lsh(torch.randn(10, 8))
    with pytest.raises(ValueError, match="expected vectors of dimension 8"):
        lsh(torch.randn(1, 2, 10, 16))
    with pytest.raises(ValueError, match="expected codes of shape"):
        clusters_from_codes(torch.zeros(10, 3))


def test_non_finite_queries_are_refused_with_their_count():
    x = torch.randn(1, 2, 20, 8)
    x[0, 0, 3, 1] = float("nan")
    x[0, 1, 5, 0] = float("inf")
    with pytest.raises(ValueError, match="2 NaN/inf values"):
        E2LSH(8, 4, 1.0)(x)


def test_bucket_width_too_small_for_float32_codes_is_refused():
    with pytest.raises(ValueError, match="bucket_width is too small"):
        E2LSH(8, 4, 1e-38, seed=0)(torch.randn(1, 1, 10, 8) * 100)


def test_huge_codes_keep_tuples_apart():
    # Codes near 1e20 (float32 spacing 2**43) stay exact integers; ranks keep them apart.
    x = torch.randn(1, 1, 200, 8)
    tiny = E2LSH(8, 4, 1e-20, seed=0)(x)
    assert tiny.num_clusters.item() == 200
    codes = torch.tensor([[1e20, 0.0], [1e20 + 2 ** 43, 0.0], [1e20, 1.0], [1e20, 0.0]]).view(1, 1, 4, 2)
    assert clusters_from_codes(codes).ids.flatten().tolist() == [0, 2, 1, 0]


def test_clusters_dataclass_reports_its_width():
    c = clusters_from_codes(torch.tensor([[[[0], [1], [1]]]]))
    assert isinstance(c, Clusters) and c.max_clusters == 2
    assert c.counts.tolist() == [[[1, 2]]]
