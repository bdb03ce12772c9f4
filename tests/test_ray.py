"""`avdet extract --ray` on a local Ray runtime started by the test (2 CPUs, loopback only).

- the CLI, connected to the runtime by its address, writes the same features as local extraction;
- a worker SIGKILLed while writing one video's file is retried: every video ends up done once, nothing partial;
- without Ray installed, `--ray` is a one-line error naming the missing package.

The kill comes from `install_kill_hook`, a Ray `worker_process_setup_hook` that the test passes in the runtime
environment: it wraps the store's atomic write inside the Ray workers only, so library code has no test paths.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from avdet.errors import AvdetError
from avdet.pipeline.extract import ExtractOptions, extract_videos, extract_videos_ray
from avdet.pipeline.io.store import FeatureStore, fingerprint
from conftest import make_clip

pytestmark = pytest.mark.slow  # Ray: starts a local Ray runtime and extracts through it

TESTS = Path(__file__).resolve().parent
KILL_DIR_ENV = "AVDET_TEST_KILL_DIR"  # read by install_kill_hook in the Ray workers only


def install_kill_hook() -> None:
    """Ray worker setup hook: the first write of a video armed with `<kill dir>/<fingerprint>.arm` writes half its
    bytes to the temp file and then SIGKILLs its own worker process, like a node dying mid-write."""
    kill_dir = os.environ.get(KILL_DIR_ENV)
    if not kill_dir:
        return
    from avdet.pipeline.io import store
    from avdet.pipeline.io.atomic import temp_path

    write = store.write_bytes_atomic

    def dying_write(target: Path, data: bytes, error: type) -> None:
        arm = Path(kill_dir) / f"{target.stem}.arm"
        try:
            arm.rename(arm.with_suffix(".fired"))  # atomic: only the first attempt dies
        except FileNotFoundError:
            return write(target, data, error)
        with open(temp_path(target), "wb") as f:
            f.write(data[: len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)

    store.write_bytes_atomic = dying_write


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("ray_clips")
    for i in range(4):
        make_clip(root / f"clip{i}.mp4", 2.0 + 0.5 * i, frequency=300 + 150 * i)
    make_clip(root / "silent.mp4", 2.0, audio=False)
    return sorted(root.glob("*.mp4"))


@pytest.fixture(scope="module")
def ray_runtime(tmp_path_factory: pytest.TempPathFactory):
    """A 2-CPU Ray runtime on 127.0.0.1 whose workers run `install_kill_hook`; shut down after the module."""
    import ray  # the dev extra installs it: a missing ray fails here, it is never skipped

    kill_dir = tmp_path_factory.mktemp("ray_kill")
    path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    ctx = ray.init(
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        logging_level=logging.WARNING,
        runtime_env={
            "env_vars": {"PYTHONPATH": path, KILL_DIR_ENV: str(kill_dir), "OMP_NUM_THREADS": "1"},
            "worker_process_setup_hook": "test_ray.install_kill_hook",
        },
    )
    try:
        yield {"address": ctx.address_info["gcs_address"], "kill_dir": kill_dir}
    finally:
        ray.shutdown()


def _members(cache: Path) -> dict[str, dict[str, bytes]]:
    """Every feature file of a cache (by its path in the store) as its zip members' bytes."""
    out = {}
    for npz in sorted(cache.rglob("*.npz")):
        with zipfile.ZipFile(npz) as z:
            out[str(npz.relative_to(cache))] = {name: z.read(name) for name in z.namelist()}
    return out


def _local_reference(videos: list[Path], cache: Path) -> None:
    """Local extraction in a fresh 1-thread process (the threads of a Ray task) for bit-exact features."""
    code = (
        "import sys, torch; torch.set_num_threads(1);"
        "from avdet.pipeline.extract import ExtractOptions, extract_videos;"
        "r = extract_videos(sys.argv[2:], sys.argv[1], ExtractOptions());"
        "sys.exit(any(x.status == 'failed' for x in r))"
    )
    subprocess.run([sys.executable, "-c", code, str(cache), *map(str, videos)], check=True, timeout=120)


def test_cli_ray_matches_local_extraction(videos: list[Path], ray_runtime: dict, tmp_path: Path) -> None:
    _local_reference(videos, tmp_path / "local")
    env = {**os.environ, "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "avdet", "extract", str(videos[0].parent), "--cache", str(tmp_path / "ray")]
    res = subprocess.run([*cmd, "--ray", ray_runtime["address"]], capture_output=True, text=True, env=env, timeout=180)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    local, remote = _members(tmp_path / "local"), _members(tmp_path / "ray")
    assert len(local) == len(videos) and local.keys() == remote.keys()
    for name in local:
        assert local[name] == remote[name], name  # every array byte-identical (zip timestamps aside)
    entries = FeatureStore(tmp_path / "ray").entries(next(iter(local)).split("/")[0], "done")
    assert sorted(e.video_id for e in entries) == sorted(v.stem for v in videos)

    before = {f: f.stat().st_mtime_ns for f in (tmp_path / "ray").rglob("*.npz")}
    again = subprocess.run([*cmd, "--ray", ray_runtime["address"]], capture_output=True, text=True, env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert re.search(rf"cached\W+{len(videos)}\b", again.stdout + again.stderr)  # re-running does only what is missing
    assert {f: f.stat().st_mtime_ns for f in (tmp_path / "ray").rglob("*.npz")} == before


def test_killed_worker_is_retried_without_duplicates(videos: list[Path], ray_runtime: dict, tmp_path: Path) -> None:
    victim = videos[1]
    arm = ray_runtime["kill_dir"] / f"{fingerprint(victim)}.arm"
    arm.touch()
    cache = tmp_path / "cache"
    seen = []
    results = extract_videos_ray(videos, cache, ExtractOptions(), on_result=seen.append)
    assert arm.with_suffix(".fired").is_file(), "the worker writing the victim was not killed"
    assert len(results) == len(seen) == len(videos)
    assert sorted(r.path for r in results) == sorted(map(str, videos))
    assert all(r.status == "done" for r in results), [(r.path, r.reason) for r in results]
    files = sorted(cache.rglob("*.npz"))
    assert len(files) == len(videos) and not list(cache.rglob("*.tmp-*"))
    entries = FeatureStore(cache).entries(files[0].parent.parent.name)
    assert sorted(e.video_id for e in entries) == sorted(v.stem for v in videos)
    assert all(e.status == "done" for e in entries)

    reference = tmp_path / "reference"
    extract_videos([victim], reference, ExtractOptions())
    victim_files = [f for f in files if f.stem == fingerprint(victim)]
    assert len(victim_files) == 1
    ref = _members(reference)
    (ref_name,) = ref
    with zipfile.ZipFile(victim_files[0]) as z:  # the retried file is complete and readable
        assert sorted(z.namelist()) == sorted(ref[ref_name])


def test_missing_ray_is_a_one_line_error(videos: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = (
        "import sys; sys.modules['ray'] = None;"  # what `import ray` meets when the package is absent
        "from avdet.cli import main; sys.argv = ['avdet', *sys.argv[1:]]; main()"
    )
    args = ["extract", str(videos[0]), "--cache", str(tmp_path / "cache"), "--ray"]
    env = {**os.environ, "COLUMNS": "200"}
    res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env)
    assert res.returncode == 1
    errors = [ln for ln in (res.stdout + res.stderr).splitlines() if "error" in ln]
    assert len(errors) == 1 and "pip install 'avdet[dist]'" in errors[0], res.stdout + res.stderr

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(AvdetError, match=r"--ray needs Ray: pip install 'avdet\[dist\]'"):
        extract_videos_ray([videos[0]], tmp_path / "cache2", ExtractOptions())
