"""`sparsearch rank`: one count for ranking, pairs and the basic report; quiet on pipes; progress on a terminal."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from sparsearch.cli import RankProgress, main


@pytest.fixture()
def xor_file(tmp_path):
    rng = np.random.default_rng(0)
    n = 6_000
    a, b = rng.integers(0, 4, n), rng.integers(0, 2, n)
    y = ((a % 2) ^ b) ^ (rng.random(n) < 0.1)
    df = pl.DataFrame({"xa": a, "xb": b, "n1": rng.integers(0, 30, n), "n2": rng.integers(0, 500, n),
                       "copy": (b * 7 + 1).astype(np.int64), "y": y.astype(np.int64)})
    path = tmp_path / "d.parquet"
    df.write_parquet(path)
    return path


def test_json_holds_features_pairs_and_quality_and_stderr_stays_quiet(xor_file, capsys):
    assert main(["rank", str(xor_file), "--target", "y", "--interactions", "3", "--json"]) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert captured.err == ""
    assert set(doc) == {"target", "method", "features", "pairs", "quality", "seconds"}
    assert len(doc["features"]) == 5 and len(doc["pairs"]) == 3
    assert (doc["pairs"][0]["feature_a"], doc["pairs"][0]["feature_b"]) == ("xa", "xb")
    assert doc["pairs"][0]["score"] > 0.3 and doc["pairs"][0]["rank"] == 1
    assert set(doc["seconds"]) == {"count", "pairs", "report"}
    # the basic report needs no extra pass, so it has no duplicate findings; --report full finds the copy of xb
    assert not any(r["issue"] == "duplicate" for r in doc["quality"])
    assert main(["rank", str(xor_file), "--target", "y", "--report", "full", "--json"]) == 0
    full = json.loads(capsys.readouterr().out)
    assert full["pairs"] == [] and any(r["issue"] == "duplicate" for r in full["quality"])
    assert main(["rank", str(xor_file), "--target", "y", "--no-report", "--report", "full", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["quality"] == []


def test_text_output_lists_pairs_and_names_the_full_report(xor_file, capsys):
    assert main(["rank", str(xor_file), "--target", "y", "--interactions", "2"]) == 0
    captured = capsys.readouterr()
    assert "best 2 pairs: low-rank interactions of two high-cardinality features first" in captured.out
    assert "then by chance-corrected interaction information" in captured.out
    assert "duplicate checks: --report full" in captured.out
    assert captured.err == ""  # not a terminal: no progress lines


def test_progress_shows_rate_and_eta_on_a_terminal(capsys):
    progress = RankProgress(enabled=True)
    progress(500_000, 2_000_000)
    progress(1_000_000, 2_000_000)
    progress.close()
    err = capsys.readouterr().err
    assert "counted 1,000,000 of 2,000,000 rows (" in err and "rows/s, ETA " in err and err.endswith("\n")
    quiet = RankProgress(enabled=False)
    quiet(1, 2)
    quiet.close()
    assert capsys.readouterr().err == ""


def test_bad_interactions_flag(xor_file, capsys):
    assert main(["rank", str(xor_file), "--target", "y", "--interactions", "-1"]) == 2
    assert "--interactions must be >= 0" in capsys.readouterr().err


def test_cache_reuses_the_same_ranking_and_keys_on_options(xor_file, tmp_path, capsys, monkeypatch):
    cache = tmp_path / "cache"
    args = ["rank", str(xor_file), "--target", "y", "--interactions", "2", "--json", "--cache", str(cache)]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert {p.name.split("-")[0] for p in cache.iterdir()} == {"ranking", "pairs", "quality"}

    import sparsearch.features as features

    def fail(*_a, **_k):
        raise AssertionError("a cached ranking was computed again")

    monkeypatch.setattr(features, "rank", fail)
    assert main(args) == 0
    again = json.loads(capsys.readouterr().out)
    assert set(again["seconds"]) == {"cache"}
    assert {k: again[k] for k in ("features", "pairs", "quality")} == {k: first[k] for k in ("features", "pairs",
                                                                                               "quality")}
    # another option is another entry: computed (here: refused by the stub), never served from the cache
    assert main([*args[:-2], "--n-bins", "8", "--cache", str(cache)]) != 0
    assert "computed again" in capsys.readouterr().err


def test_prefilter_and_rank_share_one_cache(tmp_path):
    """The search's prefilter stores its ranking with features.RankingCache, under the results' cache folder."""
    from sparsearch.features import RankingCache
    from sparsearch.search.data import prepare_data
    from sparsearch.search.spec import load_study

    spec = load_study({"study": {"name": "c", "n_trials": 1},
                       "data": {"generator": "click_log", "params": {"n_rows": 2000, "n_noise": 2},
                                "prefilter": "adjusted-mi", "top_k": 3}})
    first = prepare_data(spec, tmp_path)
    stored = list((tmp_path / "cache").glob("ranking-*.parquet"))
    assert len(stored) == 1 and not first.ranking_cached
    key = stored[0].stem.removeprefix("ranking-")
    assert RankingCache(tmp_path / "cache").load(key).equals(first.ranking)
    assert prepare_data(spec, tmp_path).ranking_cached


def test_lowrank_z_help_states_the_default_rank_options_use(capsys):
    """The help names the default as a number; it must stay the number ``RankOptions`` uses."""
    import re

    from sparsearch.features import RankOptions

    assert main(["rank", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    stated = re.search(r"--lowrank-z Z with .*?\(default: RankOptions\.lowrank_z, ([0-9.]+)\)", text)
    assert stated is not None, "the --lowrank-z help no longer states its default"
    assert float(stated.group(1)) == RankOptions().lowrank_z
