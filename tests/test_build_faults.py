"""`mixc build` under faults: every failure is one located line (exit 1, no traceback), nothing
half-written is marked complete, the store is never left locked, and one huge document is
encoded exactly, in bounded memory."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from build_fixtures import texts, train_tokenizer, wait_for, write_jsonl, write_parquet, write_project
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import mixc.shards.tokenize as tokenize_mod
from mixc.cli import main
from mixc.errors import MixcError
from mixc.shards.run import build
from mixc.store import StoreLock, read_manifest

MIXC = str(Path(sys.executable).with_name("mixc"))


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
    return train_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer.json")


def _project(root: Path, tokenizer: Path, *, n: int = 200, docs: list | None = None) -> Path:
    write_jsonl(root / "data" / "web" / "a.jsonl", docs if docs is not None else texts(1, n))
    write_jsonl(root / "data" / "web" / "b.jsonl", texts(2, n // 2))
    write_parquet(root / "data" / "code.parquet", texts(3, n))
    sources = {"web": {"category": "web", "format": "jsonl", "path": str(root / "data" / "web")},
               "code": {"category": "code", "format": "parquet", "path": str(root / "data" / "code.parquet")}}
    return write_project(root, sources, {"one": {"web": 1, "code": 1}}, tokenizer=str(tokenizer))


def _shard_bytes(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted((store / "sources").rglob("*.ds*"))}


def _cli(*args, env=None):
    result = CliRunner().invoke(main, ["build", "-q", "--workers", "1", *map(str, args)], env=env)
    return result.exit_code, result.output


def _one_error_line(code: int, out: str, pattern: str) -> None:
    assert code == 1, out
    assert "Traceback" not in out and len(out.strip().splitlines()) == 1, out
    assert re.search(pattern, out), (pattern, out)


def _nothing_complete(store: Path) -> None:
    if store.exists():
        assert not list(store.rglob("manifest.json")) and not list(store.glob("phases/**/*.json"))


def _not_locked(store: Path) -> None:
    with StoreLock(store):
        pass


def _bad_source(root: Path, tokenizer: Path, entry: dict, *extra):
    recipe = write_project(root, {"bad": {"category": "web", **entry}}, {"one": {"bad": 1}}, tokenizer=str(tokenizer))
    return _cli("--recipe", recipe, "--out", root / "store", *extra)


# --------------------------------------------------------------------------- processes and the lock


def _group(pgid: int) -> set[int]:
    """Live (not zombie) processes of a process group."""
    pids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                pids.add(int(stat.parent.name))
    return pids


def _start(recipe, store, *extra, cwd=None, quiet=True, workers=2):
    return subprocess.Popen([MIXC, "build", *(["-q"] if quiet else []), "--recipe", str(recipe), "--out", str(store),
                             "--workers", str(workers), "--tasks", "3", "--shard-tokens", "4000", *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True, cwd=cwd)



@pytest.mark.slow
@pytest.mark.parametrize("workers", [2, 1])  # 1: no pool, but still datatrove's Manager process
def test_killing_only_the_main_process_leaves_no_lock_and_no_process(tmp_path, tokenizer_path, workers):
    recipe = _project(tmp_path, tokenizer_path, n=1500)
    ref = _start(recipe, tmp_path / "ref", workers=workers)
    assert ref.wait(180) == 0, ref.stderr.read().decode()
    store = tmp_path / "store"
    proc = _start(recipe, store, workers=workers)
    hit = wait_for(lambda: any(store.rglob(".work/shards/*.ds")), proc)
    assert hit and len(_group(proc.pid)) >= 2, "the build ended before its tasks wrote a shard"
    os.kill(proc.pid, signal.SIGKILL)  # the main `mixc build` only, as `kill -9 <pid>` does
    proc.wait()
    deadline = time.monotonic() + 20
    while _group(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _group(proc.pid), "worker, forkserver or manager processes outlived the killed build"
    rerun = _start(recipe, store)
    assert rerun.wait(180) == 0, rerun.stderr.read().decode()
    assert _shard_bytes(store) == _shard_bytes(tmp_path / "ref")
    assert not list(store.rglob(".work")) and not (store / ".build").exists()


def test_a_held_lock_names_the_live_holder_and_how_to_check_it(tmp_path, tokenizer_path):
    recipe = _project(tmp_path, tokenizer_path)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from mixc.store import StoreLock\n"
                               f"with StoreLock({str(tmp_path / 'store')!r}):\n print('locked', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"locked"
        code, out = _cli("--recipe", recipe, "--out", tmp_path / "store")
        _one_error_line(code, out, rf"another mixc build is writing to this store \(pid {holder.pid}; check it with "
                                   rf"`ps -p {holder.pid}`\)")
    finally:
        holder.kill()
        holder.wait()
    _not_locked(tmp_path / "store")  # the kernel released it with the holder


def test_a_forked_child_does_not_hold_the_lock(tmp_path):
    ready_r, ready_w = os.pipe()
    with StoreLock(tmp_path):
        pid = os.fork()
        if pid == 0:  # the child of a build: it must not keep the store locked after the build ends
            os.write(ready_w, b"x")  # the fork hooks have run
            time.sleep(5)
            os._exit(0)
        assert os.read(ready_r, 1) == b"x"
    try:
        _not_locked(tmp_path)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


@pytest.mark.slow
def test_ctrl_c_prints_one_line_and_exits_130(tmp_path, tokenizer_path):
    recipe = _project(tmp_path, tokenizer_path, n=15000)  # long enough that a quiet machine is still encoding
    store = tmp_path / "store"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    proc = _start(recipe, store, cwd=cwd, quiet=False)  # as typed: with the progress display
    assert wait_for(lambda: any(store.rglob(".work/shards/*.ds")), proc)
    time.sleep(0.3)  # workers deep in encoding
    assert proc.poll() is None, "the build ended before Ctrl-C"
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends: the whole foreground group
    assert proc.wait(60) == 130
    err = proc.stderr.read().decode()
    lines = err.splitlines()
    assert lines[-1] == "interrupted" and "Traceback" not in err, err
    assert all(line.startswith("  ") for line in lines[:-1]), err  # only progress lines before it
    assert not list(store.rglob("manifest.json")) and not list(cwd.iterdir())
    deadline = time.monotonic() + 20
    while _group(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _group(proc.pid)
    _not_locked(store)


# --------------------------------------------------------------------------- the disk


def _can_mount() -> bool:
    return os.geteuid() == 0 and sys.platform == "linux"


@contextlib.contextmanager
def _tmpfs(path: Path, size: str, readonly: bool = False):
    path.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.skipif(not _can_mount(), reason="needs root to mount a small tmpfs")
def test_a_full_disk_says_so_and_where(tmp_path, tokenizer_path):
    recipe = _project(tmp_path, tokenizer_path, n=3000)
    with _tmpfs(tmp_path / "small", "200k") as small:
        store = small / "store"
        code, out = _cli("--recipe", recipe, "--out", store, "--shard-tokens", "20000")
        _one_error_line(code, out, r"no space left on device writing .*small/store.*; free space there or build into another --out")
        _nothing_complete(store)
        _not_locked(store)
        assert set(os.listdir(small)) == {"store"}


def test_a_full_disk_that_also_loses_the_error_file_is_still_one_clear_line(tmp_path, tokenizer_path, monkeypatch):
    """The issue's `error:  (37 more task(s) failed)`: the task could not write its error file either."""
    from mixc.shards import writer

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "store" / "x.ds"))

    monkeypatch.setattr(writer.ShardWriter, "write", full)
    monkeypatch.setattr(tokenize_mod, "write_atomic", full)
    recipe = _project(tmp_path, tokenizer_path)
    code, out = _cli("--recipe", recipe, "--out", tmp_path / "store", "--tasks", "2")
    _one_error_line(code, out, r"source '(web|code)': no space left on device writing .*store/x.ds.* \(\d+ more task\(s\) failed\)")
    _nothing_complete(tmp_path / "store")


@contextlib.contextmanager
def _readonly(path: Path):
    """A folder this process cannot write: chmod for a normal user, a read-only tmpfs for root."""
    if os.geteuid() != 0:
        path.mkdir(parents=True)
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    with _tmpfs(path, "1m"):
        subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
        yield path


def test_a_read_only_out_is_one_line(tmp_path, tokenizer_path, monkeypatch):
    recipe = _project(tmp_path, tokenizer_path)
    with _readonly(tmp_path / "ro") as ro:
        code, out = _cli("--recipe", recipe, "--out", ro / "store")  # the store folder cannot be created
        _one_error_line(code, out, r"cannot write .*ro/store \((permission denied|read-only file system)\); "
                                   "build into a folder you can write with --out")
        code, out = _cli("--recipe", recipe, "--out", ro)  # an existing folder: the lock file cannot be created
        _one_error_line(code, out, r"cannot write .*ro/store.lock \((permission denied|read-only file system)\)")
    # a store that can be locked, but not written further in (here: its phase manifests)
    import mixc.shards.run as run_mod

    def denied(store, *args):
        raise PermissionError(errno.EACCES, "Permission denied", str(Path(store) / "phases"))

    monkeypatch.setattr(run_mod, "write_phase_manifest", denied)
    code, out = _cli("--recipe", recipe, "--out", tmp_path / "store")
    _one_error_line(code, out, r"cannot write .*store/phases \(permission denied\)")
    _not_locked(tmp_path / "store")


def test_slurm_without_sbatch_is_one_line(tmp_path, tokenizer_path, monkeypatch):
    recipe = _project(tmp_path, tokenizer_path)
    code, out = _cli("--recipe", recipe, "--out", tmp_path / "store", "--executor", "slurm", "--slurm-partition", "p",
                     env={"PATH": str(tmp_path / "nowhere")})
    _one_error_line(code, out, "--executor slurm: sbatch was not found on PATH")
    assert not (tmp_path / "store").exists()


# --------------------------------------------------------------------------- bad input


def test_zstd_input_without_zstandard_names_the_package(tmp_path, tokenizer_path, monkeypatch):
    import fsspec.utils

    monkeypatch.setattr(fsspec.utils, "infer_compression", lambda path: None)  # as fsspec answers without zstandard
    zst = tmp_path / "zst" / "d.jsonl.zst"
    zst.parent.mkdir(parents=True)
    zst.write_bytes(b"\x28\xb5\x2f\xfd" + bytes(range(40)))
    code, out = _bad_source(tmp_path, tokenizer_path, {"format": "jsonl", "path": str(zst.parent)})
    _one_error_line(code, out, r"source 'bad': .*d.jsonl.zst: reading .zst files needs the 'zstandard' package "
                               r"\(pip install zstandard\)")


@pytest.mark.parametrize("media, pattern", [
    ([{"id": "m", "type": 0, "url": "u", "bytes": "AA=="}], r"line 2: not a document \(TypeError: .*bytes"),
    ("picture.png", r"line 2: 'media' must be a list of objects"),
    ([{"id": "m", "type": 0, "url": "u", "media_bytes": 7}], r"line 2: 'media_bytes' of a media entry is not base64 text"),
])
def test_a_bad_media_field_is_located(tmp_path, tokenizer_path, media, pattern):
    folder = tmp_path / "media"
    folder.mkdir()
    (folder / "m.jsonl").write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps({"text": "x", "media": media}) + "\n")
    code, out = _bad_source(tmp_path, tokenizer_path, {"format": "jsonl", "path": str(folder)})
    _one_error_line(code, out, r"source 'bad': .*m.jsonl: " + pattern)


def test_valid_media_still_reads(tmp_path, tokenizer_path):
    folder = tmp_path / "media"
    folder.mkdir()
    media = [{"id": "m", "type": 0, "url": "u", "media_bytes": "aGVsbG8=\n"}, {"id": "n", "type": 0, "url": "v", "media_bytes": None}]
    (folder / "m.jsonl").write_text(json.dumps({"text": "fine words", "media": media}) + "\n")
    code, out = _bad_source(tmp_path, tokenizer_path, {"format": "jsonl", "path": str(folder)})
    assert code == 0, out


def test_shard_tokens_zero_is_a_usage_error(tmp_path, tokenizer_path):
    recipe = _project(tmp_path, tokenizer_path)
    code, out = _cli("--recipe", recipe, "--out", tmp_path / "store", "--shard-tokens", "0")
    assert code == 2 and "Invalid value for --shard-tokens: 0: a shard holds at least 1 token" in out and "Traceback" not in out, out
    assert not (tmp_path / "store").exists()
    with pytest.raises(MixcError, match="--shard-tokens 0"):
        build(recipe, out=tmp_path / "store", shard_tokens=0, workers=1, progress=False)


def test_dropped_documents_are_counted(tmp_path, tokenizer_path):
    folder = tmp_path / "drops"
    folder.mkdir()
    lines = [{"text": "kept words"}, {"text": None}, {"text": ""}, {"text": "more words"}, {"text": ""}]
    (folder / "d.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    code, out = _bad_source(tmp_path, tokenizer_path, {"format": "jsonl", "path": str(folder)})
    assert code == 0, out
    assert "(3 dropped: null or empty text)" in out and "3 document(s) with a null or empty text dropped" in out
    manifest = read_manifest(next((tmp_path / "store" / "sources" / "bad").iterdir()))
    assert manifest["documents"] == 2 and manifest["dropped_documents"] == 3


# --------------------------------------------------------------------------- leftovers and truthful summaries


def test_leftovers_of_killed_builds_are_cleared_under_the_lock(tmp_path, tokenizer_path):
    recipe = _project(tmp_path, tokenizer_path)
    store = tmp_path / "store"
    assert _cli("--recipe", recipe, "--out", store)[0] == 0
    folder = next((store / "sources" / "web").iterdir())
    planted = [folder / ".manifest.json.k1ll3d.tmp", store / "phases" / "build-test" / ".one.json.x.tmp",
               store / ".build" / "20260101-000000-123" / "logs" / "task.log"]
    for path in planted:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("half")
    slurm_run = store / ".build" / "20260101-000001-9" / "finish-logs"  # a submitted slurm build's jobs still log here
    slurm_run.mkdir(parents=True)
    code, out = _cli("--recipe", recipe, "--out", store)
    assert code == 0 and "0 source(s) tokenized, 2 reused" in out, out
    assert not any(p.exists() for p in planted) and slurm_run.exists()
    assert not (store / ".build" / "20260101-000000-123").exists()


def test_a_rerun_that_only_finalizes_says_so(tmp_path, tokenizer_path, monkeypatch):
    import mixc.shards.run as run_mod

    recipe = _project(tmp_path, tokenizer_path)
    store = tmp_path / "store"
    real = run_mod.finalize_source

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # stands in for a kill after every task finished

    monkeypatch.setattr(run_mod, "finalize_source", killed)
    with pytest.raises(KeyboardInterrupt):
        build(recipe, out=store, workers=1, progress=False, shard_tokens=3000)
    monkeypatch.setattr(run_mod, "finalize_source", real)
    result = build(recipe, out=store, workers=1, progress=False, shard_tokens=3000)
    summary = result.summary()
    assert "0 source(s) tokenized, finalized 2 source(s) tokenized by an earlier run, 0 reused; no new tokens" in summary
    assert "tok/s" not in summary and result.built_tokens == 0


# --------------------------------------------------------------------------- huge documents


@pytest.fixture(scope="module")
def hf_tokenizer(tokenizer_path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(tokenizer_path))


def _ids(tok, text):
    return tok.encode(text, add_special_tokens=False).ids


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list("ab c\n\r\t .,'sSé数²_-1") + ["  ", "\n\n", "don't", "<|endoftext|>"]),
                max_size=150).map("".join),
       st.integers(min_value=1, max_value=60))
def test_a_split_document_encodes_to_the_ids_of_the_whole(hf_tokenizer, text, target):
    pieces = tokenize_mod.split_document(hf_tokenizer, text, target=target, limit=400)
    if pieces is None:
        return
    assert "".join(pieces) == text and (all(pieces) or text == "")
    assert [i for p in pieces for i in _ids(hf_tokenizer, p)] == _ids(hf_tokenizer, text)


def test_cuts_are_only_where_the_pre_tokenizer_splits(hf_tokenizer):
    """The structural rule alone (without the window check) holds for GPT-2's and Llama-3's regex."""
    from tokenizers import Regex, Tokenizer, pre_tokenizers

    llama3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
              r"\s+(?!\S)|\s+")
    other = Tokenizer.from_str(hf_tokenizer.to_str())
    other.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(llama3), behavior="isolated"),
                                                   pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    import random

    rng = random.Random(5)
    alphabet = list("ab c\n\r\t .,'sé数²_-1") + ["  ", "\n\n"]
    for tok in (hf_tokenizer, other):
        split = 0
        for _ in range(1500):
            text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 200)))
            for match in tokenize_mod._CUTS.finditer(text):
                at = match.end() if match.group() == "\n" else match.start()
                split += 1
                assert _ids(tok, text[:at]) + _ids(tok, text[at:]) == _ids(tok, text), (text, at)
        assert split > 1000


def test_a_prefix_space_tokenizer_is_never_cut_where_it_would_differ(hf_tokenizer):
    from tokenizers import Tokenizer, pre_tokenizers

    tok = Tokenizer.from_str(hf_tokenizer.to_str())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)  # "x\ny" cut would give "y" a space
    text = "alpha\nbeta\ngamma\ndelta " * 20
    pieces = tokenize_mod.split_document(tok, text, target=30, limit=len(text))
    assert pieces is not None and len(pieces) > 3
    assert [i for p in pieces for i in _ids(tok, p)] == _ids(tok, text)
    assert not any(p.startswith(("beta", "gamma", "delta")) for p in pieces[1:])


@pytest.mark.parametrize("fast", [True, False])
def test_split_documents_build_the_same_bytes(tmp_path, tokenizer_path, monkeypatch, fast):
    big = " ".join(texts(9, 60, lo=200, hi=400)).replace("data token", "data\ntoken")
    docs = texts(1, 30) + [big] + texts(2, 30)
    recipe = _project(tmp_path, tokenizer_path, docs=docs)
    whole = build(recipe, out=tmp_path / "whole", workers=1, progress=False, shard_tokens=3000, fast_encoder=fast)
    monkeypatch.setattr(tokenize_mod, "SPLIT_CHARS", 500)
    monkeypatch.setattr(tokenize_mod, "ENCODE_GROUP_CHARS", 2000)
    split = build(recipe, out=tmp_path / "split", workers=1, progress=False, shard_tokens=3000, fast_encoder=fast)
    assert _shard_bytes(tmp_path / "whole") == _shard_bytes(tmp_path / "split")
    assert [s.documents for s in whole.sources] == [s.documents for s in split.sources]


def test_a_document_without_any_provable_cut_is_refused_with_its_location(tmp_path, tokenizer_path, monkeypatch):
    import mixc.shards.readers as readers_mod

    monkeypatch.setattr(tokenize_mod, "SPLIT_CHARS", 100)
    monkeypatch.setattr(tokenize_mod, "MAX_PIECE_CHARS", 1000)
    monkeypatch.setattr(readers_mod, "LOCATE_CHARS", 100)
    docs = texts(1, 3) + ["x" * 5000] + texts(2, 3)
    recipe = write_project(tmp_path, {"big": {"category": "web", "format": "jsonl", "path": str(tmp_path / "data")}},
                           {"one": {"big": 1}}, tokenizer=str(tokenizer_path))
    write_jsonl(tmp_path / "data" / "d.jsonl", docs)
    code, out = _cli("--recipe", recipe, "--out", tmp_path / "store")
    _one_error_line(code, out, r"source 'big': .*data/d.jsonl: line 4: a document of 5,000 characters with no point in "
                               r"1,000 characters where the tokenizer provably splits")
    _nothing_complete(tmp_path / "store")


MEMORY_CHILD = """
import sys
from mixc.shards.run import build
build(sys.argv[1], out=sys.argv[2], workers=1, progress=False, fast_encoder=sys.argv[3] == "fast")
print([line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")][0])
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
@pytest.mark.parametrize("encoder", ["fast", "hf"])
def test_one_huge_document_stays_within_memory(tmp_path, tokenizer_path, encoder):
    import numpy as np

    rng = np.random.default_rng(0)
    words = np.array("the a model data token shard café 数据 naïve phase source\n mix".split(" "))
    huge = " ".join(rng.choice(words, size=4_000_000).tolist())  # ~20 MB in one JSON line
    recipe = write_project(tmp_path, {"web": {"category": "web", "format": "jsonl", "path": str(tmp_path / "data")}},
                           {"one": {"web": 1}}, tokenizer=str(tokenizer_path))
    write_jsonl(tmp_path / "data" / "d.jsonl", texts(1, 5) + [huge] + texts(2, 5))
    del huge
    env = dict(os.environ, RAYON_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(recipe), str(tmp_path / "store"), encoder],
                         capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr
    peak_kb = int(run.stdout.split()[-1])
    assert peak_kb <= 1.5 * 1024 * 1024, f"peak RSS {peak_kb / 1024:.0f} MB"
    manifest = read_manifest(next((tmp_path / "store" / "sources" / "web").iterdir()))
    assert manifest["documents"] == 11


@pytest.mark.slow
def test_a_worker_killed_by_the_system_ends_the_build_in_one_line(tmp_path, tokenizer_path):
    """The OOM killer's SIGKILL to one pool worker: datatrove's pool would wait for its task forever."""
    recipe = _project(tmp_path, tokenizer_path, n=3000)
    store = tmp_path / "store"
    proc = _start(recipe, store)

    def a_busy_worker():
        for running in store.rglob(".work/running/*"):
            marker = running.parent.parent / "tasks" / (running.name + ".json")
            with contextlib.suppress(OSError, ValueError):
                pid = int(running.read_text())
                if not marker.exists() and pid in _group(proc.pid):
                    return pid
        return None

    assert wait_for(lambda: a_busy_worker() is not None, proc)
    victim = a_busy_worker()
    os.kill(victim, signal.SIGKILL)
    assert proc.wait(60) == 1
    err = proc.stderr.read().decode()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert re.search(rf"error: build task \w+\[\d\]: its worker process \(pid {victim}\) died without an error", err), err
    deadline = time.monotonic() + 20
    while _group(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _group(proc.pid)
    _not_locked(store)
    rerun = _start(recipe, store)
    assert rerun.wait(180) == 0, rerun.stderr.read().decode()
