from __future__ import annotations

import polars as pl
import pytest

from sparsearch.errors import SpecError
from sparsearch.features import cached_rank_features, make_click_log, plot_ranking, rank_features


def test_plot_png_and_html(tmp_path):
    r = rank_features(make_click_log(3_000, n_noise=5, seed=0), "click")
    png = plot_ranking(r, tmp_path / "r.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = plot_ranking(r, tmp_path / "r.html", top=5)
    text = html.read_text()
    assert "chance baseline" in text and r["feature"][0] in text
    with pytest.raises(SpecError, match="must end in one of"):
        plot_ranking(r, tmp_path / "r.svg")


def test_cache_per_fingerprint(tmp_path):
    df = make_click_log(2_000, n_noise=3, seed=0)
    r1, hit1 = cached_rank_features(df, "click", cache_dir=tmp_path)
    r2, hit2 = cached_rank_features(df.clone(), "click", cache_dir=tmp_path)
    assert (hit1, hit2) == (False, True) and r1.equals(r2)
    _, hit3 = cached_rank_features(df.head(1_999), "click", cache_dir=tmp_path)
    _, hit4 = cached_rank_features(df, "click", method="g-test", cache_dir=tmp_path)
    assert not hit3 and not hit4
    assert len(list(tmp_path.glob("ranking-*.parquet"))) == 3
    assert isinstance(r1, pl.DataFrame)
