from __future__ import annotations

import polars as pl

from sparsearch.features import rank_features


def test_ray_sharded_counts_equal_single_process(features_ray, tmp_path, click20k):
    ref = rank_features(click20k, "click", batch_size=4_000)
    seen = []
    sharded = rank_features(click20k, "click", batch_size=4_000, use_ray=True, progress=lambda d, t: seen.append(d))
    assert sharded.equals(ref)
    assert seen[-1] == click20k.height
    assert features_ray.is_initialized()  # a Ray we did not start is left running
    path = tmp_path / "c.parquet"
    click20k.write_parquet(path, row_group_size=2_500)
    from_file = rank_features(path, "click", batch_size=5_000, use_ray=True)
    assert from_file.equals(ref)
    perm_local = rank_features(click20k, "click", method="adjusted-mi-permutation", batch_size=4_000)
    perm_ray = rank_features(click20k, "click", method="adjusted-mi-permutation", batch_size=4_000, use_ray=True)
    assert perm_ray.equals(perm_local)
    assert pl.Series(sharded["feature"]).n_unique() == click20k.width - 1


def test_unreachable_ray_address_fails_fast():
    import time

    import pytest

    from sparsearch._ray import check_ray_reachable
    from sparsearch.errors import ConnectionProblem

    t = time.perf_counter()
    with pytest.raises(ConnectionProblem, match="cannot connect to Ray at '127.0.0.1:1'"):
        check_ray_reachable("127.0.0.1:1")
    assert time.perf_counter() - t < 10
    check_ray_reachable("auto")  # left to ray.init
    check_ray_reachable("local")
