"""Hostile samples against trainer/evaluation/sandbox.py: none may pass, and none may harm anything outside its
own temporary folder (issue 20, point 4). Each attack is written as a candidate would write it, knowing how the
sandbox works (the code is public).

Run: .venv/bin/pytest -q tests/trainer/test_sandbox_adversarial.py
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from trainer.evaluation.sandbox import Job, SandboxConfig, SandboxPool, execute

CFG = SandboxConfig(timeout_s=10.0, memory_mb=1024, workers=2)


@pytest.fixture(scope="module")
def pool():
    with SandboxPool(CFG) as p:
        yield p


def _diff_job(program: str, inputs: list, expected: list, **kw) -> Job:
    return Job(program, 10.0, entry_point="f", inputs=pickle.dumps(inputs), expected=pickle.dumps(expected), **kw)


# ------------------------------------------------------------------------------------------- forged verdicts
# The old harness wrote "OK <mode>" on an inherited pipe after the last check, in the candidate's own process.
FORGE_ON_EVERY_FD = """
import posix
for fd in range(3, 256):
    for message in (b"OK namespace", b"OK"):
        try:
            posix.write(fd, message)
        except OSError:
            pass
posix._exit(0)
"""


def test_forged_verdict_on_inherited_descriptors_fails(pool):
    assert_job = Job("def add(a, b):\n    return a - b\n" + FORGE_ON_EVERY_FD, 10.0, tests="assert add(1, 2) == 3\n")
    diff_job = _diff_job("def f(x):\n    return -x\n" + FORGE_ON_EVERY_FD, [[1], [2]], [2, 4])
    for r in pool.run([assert_job, diff_job]):
        assert not r.passed, r


def test_early_exit_with_status_zero_fails(pool):
    jobs = [
        Job("import os\nos._exit(0)\n", 10.0, tests="assert False\n"),
        Job("import posix\nposix._exit(0)\n", 10.0, tests="assert False\n"),
        Job("raise SystemExit(0)\n", 10.0, tests="assert False\n"),
        # Exiting in the middle of the tests, from inside a call.
        Job("import posix\ndef f():\n    posix._exit(0)\n", 10.0, tests="f()\nassert False\n"),
        _diff_job("import posix\ndef f(x):\n    posix._exit(0)\n", [[1]], [1]),
    ]
    for r in pool.run(jobs):
        assert not r.passed, r


def test_objects_that_equal_everything_fail(pool):
    always = "class Anything:\n    def __eq__(self, other):\n        return True\n    __hash__ = object.__hash__\n"
    jobs = [
        Job(always + "def add(a, b):\n    return Anything()\n", 10.0,
            tests="assert add(1, 2) == 3\nassert add(2, 2) == 4\n"),
        _diff_job(always + "def f(x):\n    return Anything()\n", [[1], [2]], [2, 4]),
        # A subclass of a plain type whose comparison lies.
        _diff_job("class Liar(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\n"
                  "def f(x):\n    return Liar(0)\n", [[1], [2]], [2, 4]),
    ]
    for r in pool.run(jobs):
        assert not r.passed, r


def test_monkeypatched_test_helpers_fail(pool):
    jobs = [
        # The checks' own helpers, patched before the tests run.
        Job("import math\nmath.isclose = lambda *a, **k: True\ndef f():\n    return 0.0\n", 10.0,
            tests="import math\nassert math.isclose(f(), 1.0)\n"),
        Job("import builtins\nbuiltins.abs = lambda x: 0\ndef f():\n    return 0.0\n", 10.0,
            tests="assert abs(f() - 1.0) < 1e-6\n"),
        Job("import builtins\nbuiltins.all = lambda x: True\ndef f(n):\n    return [0] * n\n", 10.0,
            tests="assert all(v == 1 for v in f(3))\n"),
        # The HumanEval shape: `check(candidate)` defined by the tests; the sample defines its own first.
        Job("def check(candidate):\n    pass\ndef inc(x):\n    return x\n", 10.0,
            tests="def check(candidate):\n    assert candidate(1) == 2\n\ncheck(inc)\n"),
        # The harness's comparison itself, wherever a candidate could reach it.
        _diff_job("import sys\nfor m in list(sys.modules.values()):\n"
                  "    if hasattr(m, 'outputs_match'):\n        m.outputs_match = lambda *a, **k: True\n"
                  "    if hasattr(m, '_same'):\n        m._same = lambda *a, **k: True\n"
                  "def f(x):\n    return None\n", [[1], [2]], [2, 4]),
        # Expected outputs must not be reachable from the candidate's process (it could just return them).
        _diff_job("import gc, pickle\n"
                  "def f(x):\n"
                  "    for o in gc.get_objects():\n"
                  "        if isinstance(o, bytes) and o.startswith(b'\\x80'):\n"
                  "            try:\n                v = pickle.loads(o)\n            except Exception:\n"
                  "                continue\n"
                  "            if isinstance(v, list) and len(v) == 2 and v[0] == 'secret-0':\n"
                  "                return v[x]\n"
                  "    return None\n", [[0], [1]], ["secret-0", "secret-1"]),
    ]
    for r in pool.run(jobs):
        assert not r.passed, r


# ------------------------------------------------------------------------------------------------ file system
def test_no_write_into_checkpoints_and_no_read_of_the_lake(pool, tmp_path):
    ckpt = tmp_path / "runs" / "phase1"
    ckpt.mkdir(parents=True)
    weights = ckpt / "model.safetensors"
    weights.write_bytes(b"weights")
    lake = tmp_path / "lake" / "files"
    lake.mkdir(parents=True)
    secret = lake / "part-0000.parquet"
    secret.write_text("lake-secret")
    jobs = [
        Job(f"open({str(ckpt / 'evil.py')!r}, 'w').write('x')\n", 10.0),
        Job(f"open({str(weights)!r}, 'ab').write(b'poison')\n", 10.0),
        Job(f"import os\nos.truncate({str(weights)!r}, 0)\n", 10.0),
        Job(f"import posix\nposix.unlink({str(weights)!r})\n", 10.0),
        Job(f"import posix\nposix.rename({str(weights)!r}, {str(ckpt / 'moved')!r})\n", 10.0),
        Job(f"def f():\n    return open({str(secret)!r}).read()\n", 10.0, tests="assert f() == 'lake-secret'\n"),
        Job(f"import os\ndef f():\n    return os.listdir({str(lake)!r})\n", 10.0, tests="assert f()\n"),
        # Writing inside the sample's own folder is allowed.
        Job("def f():\n    open('scratch.txt', 'w').write('fine')\n    return open('scratch.txt').read()\n", 10.0,
            tests="assert f() == 'fine'\n"),
    ]
    results = pool.run(jobs)
    for r in results[:-1]:
        assert not r.passed, r
    assert results[-1].passed, results[-1]
    assert weights.read_bytes() == b"weights"
    assert sorted(p.name for p in ckpt.iterdir()) == ["model.safetensors"]
    assert sorted(p.name for p in lake.iterdir()) == ["part-0000.parquet"]


# ------------------------------------------------------------------------------------------------- processes
def _tagged_processes(tag: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == tag:
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def _reap(tag: str) -> None:
    for pid in _tagged_processes(tag):  # processes this test's sample started, found by their unique name
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_fork_bomb_fails_and_leaves_no_process_behind(pool):
    tag = f"cmbomb{os.getpid() % 100000}"
    # Bounded (64 processes at most) so that running it against a sandbox without process limits stays safe;
    # each process leaves the sandbox's process group and session, then lingers.
    bomb = ("import ctypes, posix, time\n"
            "for _ in range(6):\n"
            "    posix.fork()\n"
            "try:\n    posix.setsid()\nexcept OSError:\n    pass\n"
            f"ctypes.CDLL(None).prctl(15, b'{tag}', 0, 0, 0)\n"
            "time.sleep(30)\n")
    try:
        r, = pool.run([Job(bomb, 3.0)])
        assert not r.passed, r
        time.sleep(1.0)
        assert _tagged_processes(tag) == []
    finally:
        _reap(tag)


def test_no_process_spawning_at_all(pool):
    jobs = [
        Job("import posix\nposix.fork()\n", 10.0),
        Job("import subprocess\nsubprocess.run(['true'], check=True)\n", 10.0),
        Job("import posix\nposix.execv('/bin/true', ['true'])\n", 10.0),
        Job("import posix\nposix.kill(posix.getppid(), 9)\n", 10.0),
    ]
    for r in pool.run(jobs):
        assert not r.passed, r
    # The worker whose parent a sample tried to kill is still alive and serves the next job.
    assert pool.run([Job("x = 2\n", 10.0, tests="assert x == 2\n")])[0].passed


# ---------------------------------------------------------------------------------------------------- memory
def test_memory_bombs_fail_fast(pool):
    jobs = [
        Job("block = bytearray(8 * 1024**3)\n", 20.0),
        Job("blocks = []\nwhile True:\n    blocks.append(bytearray(10**8))\n", 20.0),
        # Raising its own limit first (possible for a root process that keeps CAP_SYS_RESOURCE).
        Job("import resource\nresource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, "
            "resource.RLIM_INFINITY))\nblock = bytearray(2 * 1024**3)\n", 20.0,
            tests="assert len(block) == 2 * 1024**3"),
    ]
    start = time.monotonic()
    results = pool.run(jobs)
    for r in results:
        assert not r.passed, r
        assert r.status == "failed" and r.runtime_s < 10, r
    assert time.monotonic() - start < 30


# --------------------------------------------------------------------------------------------------- network
@pytest.fixture()
def listener():
    """A TCP server on this host's loopback that records whether anything connected."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.2)
    hits: list[bytes] = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            hits.append(conn.recv(64))
            conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1], hits
    stop.set()
    t.join(2)
    srv.close()


def test_no_socket_connection_also_through_the_c_module(pool, listener):
    port, hits = listener
    jobs = [
        Job(f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\ns.sendall(b'py')\n",
            10.0),
        Job(f"import _socket\ns = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)\n"
            f"s.connect(('127.0.0.1', {port}))\ns.send(b'c')\n", 10.0),
        Job("import _socket\ns = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)\n"
            "s.sendto(b'u', ('1.1.1.1', 53))\n", 10.0),
        Job("import _socket\ns = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)\ns.connect('\\0anything')\n",
            10.0),
    ]
    for r in pool.run(jobs):
        assert not r.passed, r
    time.sleep(0.5)
    assert hits == []


def test_direct_execute_is_isolated_too(listener, tmp_path):
    """`execute` (no pool) applies the same isolation: a socket through `_socket` still fails."""
    port, hits = listener
    r = execute(Job(f"import _socket\ns = _socket.socket()\ns.connect(('127.0.0.1', {port}))\n", 10.0), CFG)
    assert not r.passed
    assert hits == []


# ----------------------------------------------------------------------------------- no silent downgrade
# Run in a fresh interpreter whose whole process tree is stripped of what the sandbox relies on: all
# capabilities (as a non-root user on a GPU node) and, for the downgrade case, the Landlock system calls
# (as on a kernel without Landlock: they fail with ENOSYS).
_SCRIPT = """
import errno, json, sys
from trainer.evaluation.sandbox import Job, SandboxConfig, SandboxPool, SandboxUnavailable
if sys.argv[1] == "no-landlock":
    import pyseccomp as sc
    f = sc.SyscallFilter(defaction=sc.ALLOW)
    for name in ("landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self"):
        f.add_rule(sc.ERRNO(errno.ENOSYS), name)
    f.load()
out = {}
for isolation in ("strict", "none"):
    try:
        with SandboxPool(SandboxConfig(timeout_s=10.0, memory_mb=512, workers=1, isolation=isolation)) as pool:
            r, = pool.run([Job("def f():\\n    return open(sys.argv[2]).read()\\nimport sys\\n", 10.0,
                               tests="assert f() == 'lake-secret'")])
            out[isolation] = {"isolation": pool.isolation, "status": r.status, "recorded": r.isolation}
    except SandboxUnavailable as exc:
        out[isolation] = {"refused": str(exc)}
print(json.dumps(out))
"""


def _run_stripped(mode: str, secret: Path) -> dict:
    import json
    import shutil
    import subprocess
    import sys

    cmd = [sys.executable, "-c", _SCRIPT.replace("sys.argv[2]", repr(str(secret))), mode]
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("setpriv (util-linux) is needed to drop root's capabilities")
        cmd = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--ambient-caps=-all", "--no-new-privs"] + cmd
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_strict_isolation_works_without_privileges(tmp_path):
    secret = tmp_path / "lake.txt"
    secret.write_text("lake-secret")
    out = _run_stripped("as-is", secret)
    assert out["strict"]["isolation"].startswith("landlock-abi") and "seccomp" in out["strict"]["isolation"]
    assert out["strict"]["status"] == "failed" and out["strict"]["recorded"] == out["strict"]["isolation"]


def test_missing_landlock_is_refused_unless_isolation_none_is_explicit(tmp_path):
    secret = tmp_path / "lake.txt"
    secret.write_text("lake-secret")
    out = _run_stripped("no-landlock", secret)
    assert "refused" in out["strict"], out
    assert "sandbox.isolation=strict" in out["strict"]["refused"]
    assert "sandbox.isolation: none" in out["strict"]["refused"]
    # The explicit opt-out runs, says so, and is exactly as unconfined as it says: the read succeeds.
    assert out["none"] == {"isolation": "rlimits", "status": "passed", "recorded": "rlimits"}


# -------------------------------------------------------------------------- honest samples are unaffected
def test_honest_samples_pass_through_the_checker(pool):
    jobs = [
        # MBPP shape: the tests build objects of a class the solution defines and read their attributes.
        Job("class Pair:\n    def __init__(self, a, b):\n        self.a, self.b = a, b\n"
            "def longest(pairs):\n    return max(pairs, key=lambda p: p.b - p.a)\n", 10.0,
            tests="p = longest([Pair(1, 2), Pair(3, 9)])\nassert (p.a, p.b) == (3, 9)\n"),
        # Tests that expect an exception of a built-in type.
        Job("def f(x):\n    if x < 0:\n        raise ValueError('negative')\n    return x\n", 10.0,
            tests="try:\n    f(-1)\nexcept ValueError:\n    pass\nelse:\n    raise AssertionError\n"),
        # numpy scalars, namedtuples, OrderedDicts and generators compare as the plain values they stand for.
        Job("import numpy as np, collections\nP = collections.namedtuple('P', 'x y')\n"
            "def f():\n    return np.int64(3), np.float64(0.5), P(1, 2), collections.OrderedDict(a=1)\n"
            "def g(n):\n    return (i * i for i in range(n))\n", 10.0,
            tests="assert f() == (3, 0.5, (1, 2), {'a': 1})\nassert list(g(3)) == [0, 1, 4]\n"
                  "assert len(f()) == 4 and 3 in f()\n"),
        _diff_job("import numpy as np\ndef f(x):\n    return np.float64(x) * 2\n", [[1], [2.5]], [2.0, 5.0]),
    ]
    for r in pool.run(jobs):
        assert r.passed, r
        assert r.isolation == pool.isolation


def test_readable_folders_never_hold_the_lake(tmp_path):
    from trainer.evaluation.sample_process import read_roots
    from trainer.evaluation.sandbox import check_protected

    roots = read_roots()
    assert roots and not any(r in ("/", "/tmp", str(Path.home())) for r in roots)
    assert check_protected([str(tmp_path / "lake"), "s3://bucket/lake"]) == []
    inside = os.path.join(roots[0], "lake")
    assert check_protected([inside]) == [f"{inside}: lies under {roots[0]}, which sandboxed samples may read; "
                                         "move it elsewhere"]
