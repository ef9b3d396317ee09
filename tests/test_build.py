"""`mixc build`: stores that datatrove reads, keys that invalidate, crash-safe reruns, clear errors."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from build_fixtures import texts, train_tokenizer, wait_for, write_jsonl, write_parquet, write_project
from click.testing import CliRunner

from mixc.cli import main
from mixc.errors import MixcError
from mixc.plan import plan_recipe
from mixc.shards.heldout import read_heldout
from mixc.shards.run import build
from mixc.spec import load_recipe
from mixc.store import StoreLock, read_manifest
from mixc.streams import source_streams

MIXC = str(Path(sys.executable).with_name("mixc"))


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
    return train_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer.json")


def _project(root: Path, tokenizer: Path, *, n: int = 300, extra_sources: dict | None = None, phases=None) -> Path:
    write_jsonl(root / "data" / "web" / "a.jsonl", texts(1, n))
    write_jsonl(root / "data" / "web" / "sub" / "b.jsonl", texts(2, n // 2))
    write_parquet(root / "data" / "code.parquet", texts(3, n))
    sources = {
        "web": {"category": "web", "format": "jsonl", "path": str(root / "data" / "web")},
        "code": {"category": "code", "format": "parquet", "path": str(root / "data" / "code.parquet")},
        "math": {"category": "math", "path": "sample://math/eng_Latn/math"},
        **(extra_sources or {}),
    }
    phases = phases or {"one": {"web": 2, "code": 1}, "two": {"web": 1, "code": 1, "math": 1}}
    return write_project(root, sources, phases, tokenizer=str(tokenizer))


def _shard_bytes(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted((store / "sources").rglob("*.ds*"))}


def _build(recipe, store, **kw):
    kw.setdefault("workers", 1)
    kw.setdefault("progress", False)
    return build(recipe, out=store, sample_documents=120, shard_tokens=3000, **kw)


def test_a_built_phase_is_read_by_datatrove_and_the_loader(tmp_path, tokenizer_path):
    from datatrove.utils.dataset import DatatroveFolderDataset
    from tokenizers import Tokenizer

    recipe = _project(tmp_path, tokenizer_path)
    store = tmp_path / "store"
    result = _build(recipe, store, stage="2", tasks=2)
    assert {s.name for s in result.sources} == {"web", "code", "math"} and not any(s.reused for s in result.sources)
    tok = Tokenizer.from_file(str(tokenizer_path))
    eos = tok.token_to_id("<|endoftext|>")
    folders = {s.name: s.folder for s in result.sources}
    web = read_manifest(store / folders["web"])
    # the held-out split (mixc/shards/heldout.py) takes some documents out of the training shards
    assert web["documents"] + web["heldout"]["documents"] == 450 and web["heldout"]["documents"] > 0
    assert web["token_size"] == 2 and web["tokenizer"]["eos_id"] == eos
    assert len(web["files"]) > 2 and [f["path"] for f in web["files"]] == [f"{k:05d}.ds" for k in range(len(web["files"]))]
    assert {f["path"] for f in web["input"]["files"]} == {"a.jsonl", "sub/b.jsonl"}
    # every document of every file ends with EOS; files end on document ends; tokens decode back to the text
    all_docs = []
    for f in web["files"]:
        tokens = np.fromfile(store / folders["web"] / f["path"], np.uint16)
        ends = np.fromfile(store / folders["web"] / (f["path"] + ".index"), np.uint64).astype(np.int64)
        assert ends[-1] == len(tokens) == f["tokens"] and (tokens[ends - 1] == eos).all()
        all_docs += np.split(tokens, ends[:-1])
    decoded = [tok.decode(d[:-1].tolist()) for d in all_docs]
    held = [tok.decode(t[:-1].tolist()) for t, _ in read_heldout(store / folders["web"], web, 2)]
    assert sorted(decoded + held) == sorted(texts(1, 300) + texts(2, 150))
    # datatrove's own reader yields the same tokens, in file order
    folder = store / folders["web"]
    ds = DatatroveFolderDataset(str(folder), seq_len=31, token_size=2, shuffle=False, return_positions=False)
    expected = []  # datatrove cuts each file into windows of seq_len + 1 tokens and drops the remainder
    for f in web["files"]:
        tokens = np.fromfile(folder / f["path"], np.uint16)
        expected.append(tokens[: len(tokens) // 32 * 32])
    got = np.concatenate([ds[i]["input_ids"].numpy() for i in range(len(ds))])
    assert got.tolist() == np.concatenate(expected).tolist()
    # the phase manifest names the folders with normalized weights; the loader opens them
    phase = json.loads((store / "phases" / "build-test" / "two.json").read_text())
    assert phase["stage"] == 2 and abs(sum(s["share"] for s in phase["sources"]) - 1) < 1e-12
    plan = plan_recipe(load_recipe(recipe))
    plan = type(plan)(plan.name, plan.path, plan.recipe, [plan.phase("2")])
    streams = source_streams(store, plan)
    assert streams["web"].n_tokens == web["tokens"]
    assert not (store / ".build").exists() and not list(store.rglob(".work"))


@pytest.mark.slow
def test_same_inputs_same_bytes_and_stage_two_reuses_stage_one(tmp_path, tokenizer_path):
    recipe = _project(tmp_path, tokenizer_path)
    first = _build(recipe, tmp_path / "s1", stage="1")
    assert sorted(s.name for s in first.sources) == ["code", "web"]
    second = _build(recipe, tmp_path / "s1", stage="2")
    assert {s.name: s.reused for s in second.sources} == {"web": True, "code": True, "math": False}
    again = _build(recipe, tmp_path / "s2", stage="all", workers=2, tasks=2)  # another store, parallel workers
    assert {s.name for s in again.sources} == {"web", "code", "math"}
    _build(recipe, tmp_path / "s3", stage="all", workers=2, tasks=2)
    assert _shard_bytes(tmp_path / "s2") == _shard_bytes(tmp_path / "s3")


def test_a_changed_input_or_tokenizer_gets_a_new_key(tmp_path, tokenizer_path):
    recipe = _project(tmp_path, tokenizer_path)
    store = tmp_path / "store"
    before = {s.name: s.folder for s in _build(recipe, store, stage="1").sources}
    time.sleep(0.01)
    write_jsonl(tmp_path / "data" / "web" / "a.jsonl", texts(1, 300)[:-1])  # one document fewer
    after = _build(recipe, store, stage="1")
    moved = {s.name: (s.folder, s.reused) for s in after.sources}
    assert moved["code"] == (before["code"], True)
    assert moved["web"][0] != before["web"] and not moved["web"][1]
    web = read_manifest(store / moved["web"][0])
    assert web["documents"] + web["heldout"]["documents"] == 449
    other_tok = train_tokenizer(tmp_path / "tok2" / "tokenizer.json", vocab_size=380)
    third = _build(recipe, store, stage="1", tokenizer=str(other_tok))
    assert all(not s.reused and s.folder != moved[s.name][0] for s in third.sources)


def test_keys_do_not_depend_on_the_working_directory(tmp_path, tokenizer_path, monkeypatch):
    """A catalog with relative paths, built from three directories (relative and absolute recipe
    paths): one key per source, so the second and third builds tokenize nothing."""
    proj = tmp_path / "proj"
    write_jsonl(proj / "data" / "web.jsonl", texts(1, 100))
    write_parquet(proj / "data" / "code.parquet", texts(3, 100))
    write_project(proj, {"web": {"category": "web", "format": "jsonl", "path": "data/web.jsonl"},
                         "code": {"category": "code", "path": "./data/code.parquet"}},
                  {"one": {"web": 1, "code": 1}}, tokenizer=str(tokenizer_path))
    store = tmp_path / "store"
    (tmp_path / "elsewhere" / "deeper").mkdir(parents=True)
    runs = []
    for cwd, recipe in ((tmp_path, "proj/recipe.yaml"), (proj, "recipe.yaml"),
                        (tmp_path / "elsewhere" / "deeper", str(proj / "recipe.yaml"))):
        monkeypatch.chdir(cwd)
        runs.append({s.name: (s.folder, s.reused) for s in _build(recipe, store).sources})
    assert {name: reused for name, (_, reused) in runs[0].items()} == {"web": False, "code": False}
    assert runs[1] == runs[2] == {name: (folder, True) for name, (folder, _) in runs[0].items()}
    assert sorted(p.parent.name for p in (store / "sources").glob("*/*")) == ["code", "web"]
    manifest = read_manifest(store / runs[0]["web"][0])
    assert manifest["input"]["location"] == f"file://{(proj / 'data' / 'web.jsonl').resolve()}"


def test_rebuild_tokenizes_again_and_swaps_the_whole_folder(tmp_path, tokenizer_path, monkeypatch):
    import mixc.shards.run as run_mod
    from mixc.store import complete_source_folders

    recipe = _project(tmp_path, tokenizer_path)
    store = tmp_path / "store"
    first = {s.name: s.folder for s in _build(recipe, store, stage="1").sources}
    reference = _shard_bytes(store)
    shard = store / first["web"] / "00000.ds"
    shard.write_bytes(b"\0" * shard.stat().st_size)  # a damaged shard that a plain rebuild would reuse
    assert all(s.reused for s in _build(recipe, store, stage="1").sources)

    def killed(staged, final):  # stands in for a kill after the new folder is complete, before the swap
        raise KeyboardInterrupt

    monkeypatch.setattr(run_mod, "replace_folder", killed)
    with pytest.raises(KeyboardInterrupt):
        _build(recipe, store, stage="1", rebuild=True)
    # The staged copy is never taken for a source folder; the old one is still whole.
    assert sorted(str(f.relative_to(store)) for f in complete_source_folders(store)) == sorted(first.values())
    assert read_manifest(store / first["web"])["files"][0]["path"] == "00000.ds" and shard.read_bytes().count(0) == len(shard.read_bytes())
    monkeypatch.undo()
    again = _build(recipe, store, stage="1", rebuild=True)
    assert {s.name: (s.folder, s.reused) for s in again.sources} == {n: (f, False) for n, f in first.items()}
    assert _shard_bytes(store) == reference
    assert not (store / ".rebuild").exists() and not list(store.rglob(".work"))
    code, out = _cli("--recipe", recipe, "--out", store, "--stage", "1", "--shard-tokens", 3000, "--rebuild")
    assert code == 0 and "0 reused" in out and _shard_bytes(store) == reference


def test_a_second_build_into_the_same_store_is_refused(tmp_path, tokenizer_path):
    recipe = _project(tmp_path, tokenizer_path)
    with StoreLock(tmp_path / "store"), pytest.raises(MixcError, match="another mixc build is writing to this store"):
        _build(recipe, tmp_path / "store", stage="1")


def _cli(*args):
    result = CliRunner().invoke(main, ["build", "-q", "--workers", "1", *map(str, args)])
    return result.exit_code, result.output


def _bad_source(tmp_path, tokenizer_path, entry: dict):
    recipe = write_project(tmp_path, {"bad": {"category": "web", **entry}}, {"one": {"bad": 1}}, tokenizer=str(tokenizer_path))
    return _cli("--recipe", recipe, "--out", tmp_path / "store")


def test_bad_inputs_fail_in_one_line_naming_source_and_file(tmp_path, tokenizer_path):
    cases = []
    code, out = _bad_source(tmp_path / "missing", tokenizer_path, {"format": "jsonl", "path": str(tmp_path / "nowhere")})
    cases.append((code, out, "source 'bad': path '.*nowhere' does not exist"))

    bad = tmp_path / "corrupt-parquet" / "x.parquet"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"PAR1 this is not parquet")
    code, out = _bad_source(bad.parent, tokenizer_path, {"format": "parquet", "path": str(bad.parent)})
    cases.append((code, out, "source 'bad': .*x.parquet: not a readable parquet file"))

    jl = write_jsonl(tmp_path / "corrupt-jsonl" / "d.jsonl", texts(1, 5))
    jl.write_text(jl.read_text() + '{"text": "cut off\n')
    code, out = _bad_source(jl.parent, tokenizer_path, {"format": "jsonl", "path": str(jl.parent)})
    cases.append((code, out, "source 'bad': .*d.jsonl: line 6: not valid JSON"))

    col = write_parquet(tmp_path / "column" / "c.parquet", texts(1, 5), column="content")
    code, out = _bad_source(col.parent, tokenizer_path, {"format": "parquet", "path": str(col)})
    cases.append((code, out, "source 'bad': .*c.parquet: no text column 'text' \\(found: id, content\\)"))

    empty = write_jsonl(tmp_path / "empty" / "e.jsonl", ["", ""])
    code, out = _bad_source(empty.parent, tokenizer_path, {"format": "jsonl", "path": str(empty.parent)})
    cases.append((code, out, "source 'bad': no documents in .*empty"))

    nofiles = tmp_path / "nofiles"
    (nofiles / "data").mkdir(parents=True)
    code, out = _bad_source(nofiles, tokenizer_path, {"format": "parquet", "path": str(nofiles / "data")})
    cases.append((code, out, "source 'bad': no parquet files match"))

    latin = tmp_path / "latin1" / "l.jsonl"
    latin.parent.mkdir(parents=True)
    latin.write_bytes('{"text": "ok"}\n{"text": "caf\xe9"}\n'.encode("latin-1"))
    code, out = _bad_source(latin.parent, tokenizer_path, {"format": "jsonl", "path": str(latin.parent)})
    cases.append((code, out, "source 'bad': .*l.jsonl: line 2: not UTF-8"))

    gz = tmp_path / "gz" / "g.jsonl.gz"
    gz.parent.mkdir(parents=True)
    gz.write_bytes(gzip.compress(b'{"text": "fine"}\n')[:-8])
    code, out = _bad_source(gz.parent, tokenizer_path, {"format": "jsonl", "path": str(gz.parent)})
    cases.append((code, out, "source 'bad': .*g.jsonl.gz: "))

    recipe = write_project(tmp_path / "notok", {"w": {"category": "web", "format": "jsonl", "path": str(jl.parent)}},
                           {"one": {"w": 1}}, tokenizer="missing/tokenizer.json")
    code, out = _cli("--recipe", recipe, "--out", tmp_path / "notok" / "store")
    cases.append((code, out, "tokenizer 'missing/tokenizer.json': no such file"))

    for code, out, pattern in cases:
        assert code == 1, out
        assert "Traceback" not in out and len(out.strip().splitlines()) == 1, out
        import re

        assert re.search(pattern, out), (pattern, out)


def test_cli_summary_and_stage_selection(tmp_path, tokenizer_path):
    recipe = _project(tmp_path, tokenizer_path)
    code, out = _cli("--recipe", recipe, "--out", tmp_path / "store", "--stage", "one", "--shard-tokens", "5k")
    assert code == 0, out
    assert "2 source(s) tokenized, 0 reused" in out and "phases/build-test/one.json" in out
    code, out = _cli("--recipe", recipe, "--out", tmp_path / "store", "--stage", "7")
    assert code == 1 and "--stage 7: no phase has stage 7" in out


# --------------------------------------------------------------------------- kill and resume


def _run_build(recipe, store, *extra):
    return subprocess.Popen([MIXC, "build", "-q", "--recipe", str(recipe), "--out", str(store), "--workers", "1",
                             "--tasks", "3", "--shard-tokens", "4000", *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)



@pytest.mark.slow
def test_sigkill_at_any_point_then_rerun_gives_identical_bytes(tmp_path, tokenizer_path):
    recipe = _project(tmp_path, tokenizer_path, n=1500)
    reference = tmp_path / "reference"
    ref = _run_build(recipe, reference)
    assert ref.wait(120) == 0, ref.stderr.read().decode()
    expected = _shard_bytes(reference)
    points = {
        "first shard written": lambda s: any(s.rglob(".work/shards/*.ds")),
        "a task finished": lambda s: any(s.rglob(".work/tasks/*.json")),
        "a source finished": lambda s: any(s.rglob("manifest.json")),
    }
    for label, reached in points.items():
        store = tmp_path / label.replace(" ", "-")
        proc = _run_build(recipe, store)
        hit = wait_for(lambda s=store, r=reached: r(s), proc)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert hit, f"the build ended before '{label}'"
        rerun = _run_build(recipe, store)
        assert rerun.wait(120) == 0, rerun.stderr.read().decode()
        assert _shard_bytes(store) == expected, label
        assert not list(store.rglob(".work"))


def test_an_interrupted_finalize_resumes(tmp_path, tokenizer_path, monkeypatch):
    import mixc.store as store_mod

    recipe = _project(tmp_path, tokenizer_path)
    reference = _shard_bytes(_build(recipe, tmp_path / "ref", stage="1").store)
    calls = {"n": 0}
    real_replace = os.replace

    def flaky_replace(src, dst):
        if str(dst).endswith(".ds.index"):
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt  # stands in for a kill between two renames
        return real_replace(src, dst)

    monkeypatch.setattr(store_mod.os, "replace", flaky_replace)
    with pytest.raises(KeyboardInterrupt):
        _build(recipe, tmp_path / "store", stage="1")
    monkeypatch.setattr(store_mod.os, "replace", real_replace)
    _build(recipe, tmp_path / "store", stage="1")
    assert _shard_bytes(tmp_path / "store") == reference


# --------------------------------------------------------------------------- ray and slurm


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_builds_a_phase_and_fails_loudly(tmp_path, tokenizer_path, local_ray):
    recipe = _project(tmp_path, tokenizer_path)
    result = _build(recipe, tmp_path / "ray", stage="2", executor="ray", workers=2, tasks=2)
    reference = _build(recipe, tmp_path / "local", stage="2", tasks=2)
    assert [s.tokens for s in result.sources] == [s.tokens for s in reference.sources]
    assert _shard_bytes(tmp_path / "ray") == _shard_bytes(tmp_path / "local")

    jl = write_jsonl(tmp_path / "broken" / "d.jsonl", texts(1, 5))
    jl.write_text(jl.read_text() + "not json\n")
    bad = write_project(tmp_path / "bad", {"bad": {"category": "web", "format": "jsonl", "path": str(jl.parent)}},
                        {"one": {"bad": 1}}, tokenizer=str(tokenizer_path))
    with pytest.raises(MixcError, match="source 'bad': .*d.jsonl: line 6: not valid JSON"):
        _build(bad, tmp_path / "bad-store", executor="ray", workers=1)


def _fake_slurm(bin_dir: Path) -> Path:
    bin_dir.mkdir()
    log = bin_dir / "sbatch.log"
    (bin_dir / "sbatch").write_text(f"""#!/bin/sh
touch {log}
n=$(($(wc -l < {log})))
echo "$@" >> {log}
cp "$(eval echo \\${{$#}})" {bin_dir}/script-$n.sh
echo "Submitted batch job $((100 + n))"
""")
    (bin_dir / "scontrol").write_text("#!/bin/sh\necho localhost\n")
    for f in ("sbatch", "scontrol"):
        (bin_dir / f).chmod(0o755)
    return log


@pytest.mark.slow
def test_slurm_submits_a_job_array_and_a_finishing_job(tmp_path, tokenizer_path, monkeypatch):
    from mixc.shards.run import SlurmOptions

    log = _fake_slurm(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    recipe = _project(tmp_path, tokenizer_path)
    store = tmp_path / "store"
    result = _build(recipe, store, stage="1", executor="slurm", tasks=2, workers=4,
                    slurm=SlurmOptions(partition="cpu", time="02:00:00"))
    assert result.submitted == ["100", "102"]  # 101 is datatrove's stats-merging job
    calls = log.read_text().splitlines()
    assert "--dependency=afterok:100" in calls[2]
    array = (tmp_path / "bin" / "script-0.sh").read_text()
    run_dir = next((store / ".build").iterdir())
    for line in ("#SBATCH --partition=cpu", "#SBATCH --time=02:00:00", "#SBATCH --array=0-2%4", "#SBATCH --job-name=mixc-build-test",
                 f"launch_pickled_pipeline {run_dir / 'logs' / 'executor.pik'}", "export RAYON_NUM_THREADS=1"):
        assert line in array, line
    finish = (tmp_path / "bin" / "script-2.sh").read_text()
    assert "#SBATCH --array=0-0" in finish and "finish-logs/executor.pik" in finish
    # run what slurm would run: the three array tasks, then the finishing job
    env = dict(os.environ, SLURM_NODELIST="localhost", PYTHONPATH=os.pathsep.join(sys.path))
    launcher = str(Path(sys.executable).with_name("launch_pickled_pipeline"))
    for task in range(3):
        subprocess.run([launcher, str(run_dir / "logs" / "executor.pik")], env=dict(env, SLURM_ARRAY_TASK_ID=str(task)),
                       check=True, capture_output=True)
    finished = subprocess.run([launcher, str(run_dir / "finish-logs" / "executor.pik")],
                              env=dict(env, SLURM_ARRAY_TASK_ID="0"), check=True, capture_output=True, text=True)
    # The finishing job prints the build summary a local build prints, and keeps it with the logs.
    assert "source(s) tokenized" in finished.stdout and "phases/build-test/one.json" in finished.stdout
    assert "source(s) tokenized" in (run_dir / "summary.txt").read_text()
    assert _shard_bytes(store) == _shard_bytes(_build(recipe, tmp_path / "local", stage="1", tasks=2).store)
    assert (store / "phases" / "build-test" / "one.json").exists()


@pytest.mark.slow
def test_the_users_build_stage_2_runs_offline_and_verifies(tmp_path):
    """The acceptance command as a new user types it, from the repository: the default recipe
    (SmolLM3 3B, whose hub tokenizer is unreachable here) on the sample data, then `mixc verify`."""
    repo = Path(__file__).resolve().parent.parent
    env = dict(os.environ, MIXC_CACHE=str(tmp_path / "cache"), HF_HUB_OFFLINE="1")
    store = tmp_path / "shards"
    done = subprocess.run([MIXC, "build", "--stage", "2", "--sample", "--sample-documents", "10", "--out", str(store)],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "46 source(s) tokenized" in done.stdout and "sample:bpe-8192" in done.stdout + done.stderr
    manifest = json.loads((store / "phases" / "smollm3-3b" / "stable-2.json").read_text())
    assert len(manifest["sources"]) == 46 and abs(sum(s["share"] for s in manifest["sources"]) - 1) < 1e-9
    checked = subprocess.run([MIXC, "verify", str(store)], capture_output=True, text=True, timeout=300)
    assert checked.returncode == 0 and checked.stdout.startswith("ok: 46 source folder(s), 1 phase manifest(s)"), checked.stdout


def test_remote_sources_are_fingerprinted_by_content_ids_and_the_hub_offline_is_a_clear_error(tmp_path, monkeypatch):
    """A remote folder (fsspec's in-memory filesystem stands in for S3 or the hub): listed through
    datatrove, each file pinned by size and an id, so a rewritten file gets a new key."""
    import fsspec

    from mixc.shards.lower import BuildOptions, input_fingerprint
    from mixc.spec import Source

    fs = fsspec.filesystem("memory")
    root = f"/mixc-{tmp_path.name}"
    fs.pipe(f"{root}/a.jsonl", b'{"text": "hello"}\n')
    fs.pipe(f"{root}/sub/b.jsonl", b'{"text": "world"}\n')
    source = Source(name="remote", category="web", format="jsonl", path=f"memory://{root}")
    first = input_fingerprint(source, BuildOptions())
    assert [f["path"] for f in first["files"]] == ["a.jsonl", "sub/b.jsonl"]
    assert all(f["size"] == 18 and f["id"] for f in first["files"])
    assert input_fingerprint(source, BuildOptions()) == first
    time.sleep(0.01)
    fs.pipe(f"{root}/a.jsonl", b'{"text": "HELLO"}\n')  # same size, new content
    assert input_fingerprint(source, BuildOptions())["fingerprint"] != first["fingerprint"]
    fs.rm(root, recursive=True)
    with pytest.raises(MixcError, match="source 'remote'"):
        input_fingerprint(source, BuildOptions())

    import huggingface_hub

    def offline(*_a, **_k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", offline)
    hub = Source(name="fw", category="web", format="hf", dataset="HuggingFaceFW/fineweb-edu")
    with pytest.raises(MixcError, match="source 'fw': cannot reach the Hugging Face hub to pin dataset 'HuggingFaceFW/fineweb-edu'"):
        input_fingerprint(hub, BuildOptions())

    class Info:
        def __init__(self, sha):
            self.sha = sha

    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", lambda self, repo: Info("abc123"))
    pinned = input_fingerprint(hub, BuildOptions())
    assert pinned["revision"] == "abc123" and pinned["dataset"] == "HuggingFaceFW/fineweb-edu"
    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", lambda self, repo: Info("def456"))
    assert input_fingerprint(hub, BuildOptions())["fingerprint"] != pinned["fingerprint"]  # a new hub revision: a new key


def test_a_tokenizer_named_on_the_command_line_never_falls_back_to_the_demo_one(tmp_path, tokenizer_path):
    """Under --sample only the recipe's own (unreachable hub) tokenizer is swapped for the demo
    one; an explicit --tokenizer is used or is an error, and path-like names are paths."""
    recipe = _project(tmp_path, tokenizer_path, n=20)
    for name, message in (("org/model", "could not be loaded from the Hugging Face hub"),
                          ("missing_dir/", "tokenizer 'missing_dir/': no such file"),
                          ("data/tok/tokenizer", "tokenizer 'data/tok/tokenizer': no such file")):
        code, out = _cli("--recipe", recipe, "--out", tmp_path / "store", "--sample", "--tokenizer", name)
        assert code == 1 and message in out and "builds with the demo tokenizer" not in out, (name, out)
        assert not (tmp_path / "store" / "sources").exists()
