"""The store's read side: phase manifests name the folders the loader and the report use."""

from __future__ import annotations

import numpy as np
import pytest
from loader_fixtures import MIX_ONE, MIX_TWO, RECIPE
from store_fixtures import make_store

from mixc.errors import MixcError
from mixc.plan import plan_recipe
from mixc.spec import load_recipe
from mixc.store import read_manifest, source_token_counts
from mixc.streams import source_streams


def _docs(seed, n):
    rng = np.random.default_rng(seed)
    return [rng.integers(1, 900, rng.integers(3, 60)) for _ in range(n)]


@pytest.fixture
def plan(tmp_path):
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    (tmp_path / "one.yaml").write_text(MIX_ONE)
    (tmp_path / "two.yaml").write_text(MIX_TWO)
    return plan_recipe(load_recipe(tmp_path / "recipe.yaml"))


def test_streams_come_from_the_phase_manifests_with_every_token(tmp_path, plan):
    docs = {"a": _docs(1, 120), "b": _docs(2, 30), "c": _docs(3, 80)}
    store = make_store(tmp_path, "loader-test", {"one": {"a": 3, "b": 1}, "two": {"a": 1, "b": 1, "c": 2},
                                                 "long": {"a": 1, "b": 1, "c": 2}}, docs)
    streams = source_streams(store, plan)
    assert set(streams) == {"a", "b", "c"}
    for name, d in docs.items():
        assert streams[name].n_tokens == sum(len(x) + 1 for x in d)
    counts = source_token_counts(store, "loader-test")
    assert counts == {n: s.n_tokens for n, s in streams.items()}


def test_an_unbuilt_phase_names_the_build_command(tmp_path, plan):
    store = make_store(tmp_path, "loader-test", {"one": {"a": 3, "b": 1}}, {"a": _docs(1, 10), "b": _docs(2, 10)})
    with pytest.raises(MixcError, match=r"phase 'two' .* not built.*mixc build --stage 2"):
        source_streams(store, plan)


def test_a_folder_without_a_manifest_is_not_a_finished_source(tmp_path):
    store = make_store(tmp_path, "r", {"p": {"a": 1}}, {"a": _docs(1, 10)})
    folder = next((store / "sources" / "a").iterdir())
    (folder / "manifest.json").unlink()
    assert source_token_counts(store) == {}
    with pytest.raises(MixcError, match="manifest is missing"):
        read_manifest(folder)


def test_truncated_shards_are_refused(tmp_path, plan):
    docs = {"a": _docs(1, 60), "b": _docs(2, 30), "c": _docs(3, 30)}
    store = make_store(tmp_path, "loader-test", {p: {"a": 1, "b": 1, "c": 1} for p in ("one", "two", "long")}, docs)
    shard = next((store / "sources" / "a").glob("*/00000.ds"))
    shard.write_bytes(shard.read_bytes()[:-2])
    with pytest.raises(MixcError, match="manifest says"):
        source_streams(store, plan)


def test_atomic_writes_get_ordinary_permissions(tmp_path):
    """Manifests are read by other users of a shared store: not mkstemp's 0600, but 0666 less the umask."""
    import os
    import stat

    from mixc.store import write_atomic

    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "manifest.json", "{}\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "manifest.json").stat().st_mode) == 0o644


def test_a_phase_manifest_from_before_share_was_named_still_loads(tmp_path, plan):
    """Stores built before the field was called `share` hold the normalized share as `weight`:
    read, verified and inspected the same."""
    from mixc.shards.verify import inspect_path, verify_path
    from mixc.store import phase_manifest_path, read_phase_manifest, write_json_atomic

    docs = {"a": _docs(1, 60), "b": _docs(2, 30), "c": _docs(3, 30)}
    store = make_store(tmp_path, "loader-test", {p: {"a": 3, "b": 1, "c": 0} for p in ("one", "two", "long")}, docs)
    path = phase_manifest_path(store, "loader-test", "one")
    new = read_phase_manifest(path)
    old = dict(new, sources=[{("weight" if k == "share" else k): v for k, v in s.items()} for s in new["sources"]])
    write_json_atomic(path, old)
    assert "share" not in path.read_text()
    assert read_phase_manifest(path) == new
    assert [s["share"] for s in new["sources"]] == [0.75, 0.25, 0.0]
    assert verify_path(store).ok
    assert "share 0.750000" in inspect_path(path)
    assert set(source_streams(store, plan)) == {"a", "b", "c"}
