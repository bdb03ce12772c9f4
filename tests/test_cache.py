"""`avdet cache`: list, failed, verify (and heal), prune, through the library and the CLI (`--json`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from avdet.cli import app
from avdet.errors import StoreError
from avdet.extractors.base import Features, grid_times
from avdet.pipeline.cache import cache_entries, cache_summary, prune_cache, verify_cache
from avdet.pipeline.io.store import FeatureStore, StoredFeatures


def _features(rows: int) -> StoredFeatures:
    times = grid_times(rows, 0.96, 0.32)
    values = np.ones((rows, 4), np.float32)
    return StoredFeatures(Features(values, times), Features(values, times), duration=rows * 0.32 + 0.64)


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    """Two recipes of `lite` (an old and a current one): 2 done + 1 failed video, and 1 done video."""
    root = tmp_path / "cache"
    store = FeatureStore(root)
    old = store.register_spec({"name": "lite", "step_s": 0.5})
    new = store.register_spec({"name": "lite", "step_s": 0.32})
    for key, vid in (("aa11", "v1"), ("bb22", "v2")):
        store.save(key, old, _features(5))
        store.record(
            video_key=key, extractor=old, video_id=vid, path=f"/v/{vid}.mp4", status="done", rows=5, media_seconds=2.0
        )
    store.record(
        video_key="path:/v/bad.mp4",
        extractor=old,
        video_id="bad",
        path="/v/bad.mp4",
        status="failed",
        reason="moov atom not found",
    )
    store.save("aa11", new, _features(6))
    store.record(
        video_key="aa11", extractor=new, video_id="v1", path="/v/v1.mp4", status="done", rows=6, media_seconds=2.0
    )
    return root


def _hashes(root: Path) -> tuple[str, str]:
    by_step = {s.spec["step_s"]: s.extractor for s in cache_summary(root)}
    return by_step[0.5], by_step[0.32]


def test_summary_and_failed(store_root: Path) -> None:
    old, new = _hashes(store_root)
    rows = {s.extractor: s for s in cache_summary(store_root)}
    assert (rows[old].done, rows[old].failed, rows[old].files) == (2, 1, 2)
    assert (rows[new].done, rows[new].failed, rows[new].files) == (1, 0, 1)
    assert rows[old].name == "lite" and rows[old].bytes > 0 and rows[old].media_seconds == 4.0
    (failed,) = cache_entries(store_root, status="failed")
    assert (failed.video_id, failed.reason) == ("bad", "moov atom not found")


def test_missing_store_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no feature store here"):
        cache_summary(tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()  # reading never creates a store


def test_verify_finds_and_heals_damage(store_root: Path) -> None:
    store = FeatureStore(store_root)
    old, _ = _hashes(store_root)
    store.path_for("aa11", old).write_bytes(b"not a zip")
    store.path_for("bb22", old).unlink()
    report = verify_cache(store_root)
    assert (report.checked, report.ok, len(report.corrupt), len(report.missing)) == (3, 1, 1, 1)
    assert not report.healthy and report.fixed == 0
    healed = verify_cache(store_root, fix=True)
    assert healed.fixed == 2 and not store.path_for("aa11", old).exists()
    after = verify_cache(store_root)
    assert after.healthy and after.checked == 1  # the next `extract` recomputes the two forgotten videos


def test_prune_stale_recipes_and_failures(store_root: Path) -> None:
    old, new = _hashes(store_root)
    dry = prune_cache(store_root, stale_of=("lite", new), dry_run=True)
    assert [r["extractor"] for r in dry.recipes] == [old] and (store_root / old).is_dir()
    report = prune_cache(store_root, stale_of=("lite", new))
    assert report.recipes[0]["files"] == 2 and report.bytes > 0
    assert not (store_root / old).exists() and (store_root / new).is_dir()
    assert {e.extractor for e in cache_entries(store_root)} == {new}
    with pytest.raises(StoreError, match="no recipe"):
        prune_cache(store_root, recipes=["ffff"])


# -- through the CLI ----------------------------------------------------------------------------------------------
def _json(args: list[str]) -> object:
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_cache_cli_json(store_root: Path) -> None:
    old, new = _hashes(store_root)
    listed = _json(["cache", "list", "--cache", str(store_root), "--json"])
    assert {r["extractor"]: (r["done"], r["failed"]) for r in listed} == {old: (2, 1), new: (1, 0)}
    failed = _json(["cache", "failed", "--cache", str(store_root), "--json"])
    assert [(r["video_id"], r["reason"]) for r in failed] == [("bad", "moov atom not found")]
    verified = _json(["cache", "verify", "--cache", str(store_root), "--json"])
    assert verified["checked"] == 3 and verified["ok"] == 3
    pruned = _json(["cache", "prune", "--cache", str(store_root), "--recipe", old[:6], "--failed", "--json"])
    assert [r["extractor"] for r in pruned["recipes"]] == [old] and pruned["dry_run"] is False
    assert [r["extractor"] for r in _json(["cache", "list", "--cache", str(store_root), "--json"])] == [new]


def test_cache_cli_verify_exit_status_and_fix(store_root: Path) -> None:
    old, _ = _hashes(store_root)
    FeatureStore(store_root).path_for("aa11", old).write_bytes(b"broken")
    res = CliRunner().invoke(app, ["cache", "verify", "--cache", str(store_root)])
    assert res.exit_code == 1 and "corrupt" in res.output
    res = CliRunner().invoke(app, ["cache", "verify", "--cache", str(store_root), "--fix"])
    assert res.exit_code == 0, res.output
    assert CliRunner().invoke(app, ["cache", "verify", "--cache", str(store_root)]).exit_code == 0


def test_cache_cli_prune_current_recipe_of_lite(store_root: Path) -> None:
    """`prune --extractor lite` keeps the recipe today's `lite` computes and removes the others (here: both toy
    recipes, which today's `lite` does not compute)."""
    hashes = set(_hashes(store_root))
    res = CliRunner().invoke(app, ["cache", "prune", "--cache", str(store_root), "--extractor", "lite", "--json"])
    assert res.exit_code == 0, res.output
    assert {r["extractor"] for r in json.loads(res.stdout)["recipes"]} == hashes
    assert not any((store_root / h).exists() for h in hashes)
