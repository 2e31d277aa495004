"""``serve`` uses every core by default: ``--workers auto`` (the default) is one media worker per
usable core, and each worker's share of the machine's recognisers is divided among them.

- A ``serve`` started with no ``--workers`` and no ``MEDIASERVER_WORKERS`` runs as a front with
  one worker per core of its affinity mask (``taskset``/a container's limit), as ``/healthz``
  lists them; on a one-core machine it is the single process (no ``workers`` in ``/healthz``).
- The front tells its workers how many they are (``MEDIASERVER_MEDIA_WORKERS`` in each worker's
  environment, read from ``/proc``), and :func:`default_workers` divides the recogniser pool by
  it, at least one per worker (a 16-core machine with 16 workers ran 16 × 15 recognisers).
- ``--workers auto`` / ``MEDIASERVER_WORKERS=auto`` and a number parse; 0, 257 and words are
  refused as the flag is parsed, naming it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mediaserver import config
from mediaserver.asr import local
from mediaserver.asr.local import MEDIA_WORKERS_ENV, default_workers
from mediaserver.cli import build_parser

from conftest import ROOT, ServerProcess
from test_workers import healthz

pytestmark = pytest.mark.timeout(240)


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


def test_serve_without_workers_runs_one_media_worker_per_usable_core(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MEDIASERVER_WORKERS"}   # (conftest's 1)
    cores = config.usable_cores()
    server = ServerProcess(tmp_path / "serve.log", "--no-enhance", env=env)
    try:
        health = healthz(server)
        if cores == 1:
            assert "workers" not in health, health
            return
        workers = health["workers"]
        assert len(workers) == cores, (cores, workers)
        for worker in workers:
            assert _environ(worker["pid"]).get(MEDIA_WORKERS_ENV) == str(cores), worker
    finally:
        server.stop()


def test_a_media_workers_recogniser_pool_is_its_share_of_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "usable_cores", lambda: 16)
    monkeypatch.delenv(MEDIA_WORKERS_ENV, raising=False)
    assert default_workers() == 15                  # one process: all cores but the media path's
    assert default_workers(threads=2) == 7
    monkeypatch.setenv(MEDIA_WORKERS_ENV, "4")
    assert default_workers() == 3                   # 15 // 4: each of 4 workers its share
    monkeypatch.setenv(MEDIA_WORKERS_ENV, "16")
    assert default_workers() == 1                   # never none
    assert default_workers("cuda") == 2             # a GPU's two, per worker


def test_workers_accepts_auto_and_refuses_counts_out_of_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "usable_cores", lambda: 6)
    monkeypatch.delenv("MEDIASERVER_WORKERS", raising=False)   # (conftest's 1)
    parser = build_parser("serve")
    assert parser.parse_args(["serve"]).workers == 6           # the default is auto
    assert parser.parse_args(["serve", "--workers", "auto"]).workers == 6
    assert parser.parse_args(["serve", "--workers", "3"]).workers == 3
    monkeypatch.setattr(config, "usable_cores", lambda: 1000)
    assert parser.parse_args(["serve", "--workers", "auto"]).workers == 256   # capped


@pytest.mark.parametrize("value", ["0", "257", "many"])
def test_a_bad_worker_count_is_one_line_naming_the_flag_or_its_variable(value: str) -> None:
    for argv, env_value, named in ((["--workers", value], None, "--workers"),
                                   ([], value, "MEDIASERVER_WORKERS")):
        env = {k: v for k, v in os.environ.items() if k != "MEDIASERVER_WORKERS"}
        if env_value is not None:
            env["MEDIASERVER_WORKERS"] = env_value
        proc = subprocess.run([sys.executable, "-m", "mediaserver", "serve", "--port", "0", *argv],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and named in lines[0] and "auto" in lines[0], proc.stderr


@pytest.mark.parametrize("files, quota", [
    ({"cpu.max": "200000 100000\n"}, 2.0),                                # cgroup v2: docker --cpus 2
    ({"cpu.max": "150000 100000\n"}, 1.5),
    ({"cpu.max": "max 100000\n"}, None),                                  # v2, no limit
    ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3.0),   # cgroup v1
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),     # v1, no limit
    ({}, None),                                                           # no cgroup file system
])
def test_the_cgroup_cpu_quota_is_read_from_v2_or_v1(tmp_path: Path, files: dict[str, str],
                                                     quota: float | None) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert config.cpu_quota(tmp_path) == quota


def test_usable_cores_is_the_affinity_lowered_to_the_quota(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))   # a 64-core host
    assert config.usable_cores(tmp_path) == 64                                # no quota
    (tmp_path / "cpu.max").write_text("150000 100000\n")                       # --cpus 1.5
    assert config.usable_cores(tmp_path) == 2                                 # rounded up
    (tmp_path / "cpu.max").write_text("10000 100000\n")                        # 0.1 CPU
    assert config.usable_cores(tmp_path) == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})          # taskset -c 0,1
    (tmp_path / "cpu.max").write_text("800000 100000\n")
    assert config.usable_cores(tmp_path) == 2


# ---- fresh-user trial 5: the quota of this process's own cgroup, not only the root's ----------

SERVICE = "system.slice/mediaserver.service"


@pytest.mark.parametrize("cgroups, files, quota", [
    # cgroup v2 host namespace (systemd CPUQuota=200%): the root has no cpu.max, the service has
    ("0::/" + SERVICE + "\n", {SERVICE + "/cpu.max": "200000 100000\n",
                               "system.slice/cpu.max": "max 100000\n"}, 2.0),
    # a parent slice's limit binds its services too
    ("0::/" + SERVICE + "\n", {SERVICE + "/cpu.max": "max 100000\n",
                               "system.slice/cpu.max": "300000 100000\n"}, 3.0),
    # cgroup v1 host (systemd CPUQuota=150%): the cpu controller's line names the service
    ("4:cpu,cpuacct:/" + SERVICE + "\n1:name=systemd:/" + SERVICE + "\n",
     {"cpu/" + SERVICE + "/cpu.cfs_quota_us": "150000\n", "cpu/" + SERVICE + "/cpu.cfs_period_us": "100000\n",
      "cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1.5),
    # docker on cgroup v1: /proc names /docker/ID, its own cgroup is what is mounted at cpu/
    ("4:cpu,cpuacct:/docker/0123abcd\n", {"cpu/cpu.cfs_quota_us": "200000\n",
                                          "cpu/cpu.cfs_period_us": "100000\n"}, 2.0),
    # a container with its own cgroup namespace: / in /proc, its files at the root
    ("0::/\n", {"cpu.max": "400000 100000\n"}, 4.0),
])
def test_the_cpu_quota_of_this_processs_own_cgroup_counts(tmp_path: Path, cgroups: str,
                                                          files: dict[str, str], quota: float) -> None:
    """``usable_cores`` read ``/sys/fs/cgroup/cpu.max`` (the root cgroup's, which has none) and
    so missed a systemd service's ``CPUQuota=``: a dispatch centre's 16-core host with
    ``CPUQuota=200%`` got 16 media workers on two CPUs' worth of time."""
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert config.cpu_quota(tmp_path, cgroups) == quota


def test_more_workers_than_usable_cores_is_warned_once(monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    from mediaserver.sfu import server

    monkeypatch.setattr(server, "usable_cores", lambda: 2)
    monkeypatch.setattr(config, "usable_cores", lambda: 2)   # (auto's)
    monkeypatch.delenv("MEDIASERVER_WORKERS", raising=False)
    parser = build_parser("serve")
    for argv, warned in ((["--workers", "3"], True), (["--workers", "2"], False), ([], False)):
        caplog.clear()
        with caplog.at_level("WARNING", logger="mediaserver.sfu.server"):
            server.check_args(parser.parse_args(["serve", "--no-enhance", *argv]))
        said = [r.getMessage() for r in caplog.records if "usable core" in r.getMessage()]
        assert len(said) == (1 if warned else 0), (argv, said)
        if warned:
            assert "--workers 3" in said[0] and "2 usable core" in said[0], said
