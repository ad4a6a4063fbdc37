"""Sandboxed execution of generated code: one forked process per sample, never the job's own process.

A small pool of worker processes (started with `spawn`, so they hold no model, no threads and no CUDA state)
receives jobs. For every job the worker forks a child that, before running any generated code:

- starts its own process group (so the worker can kill it and anything it spawned in one `killpg`),
- moves into a fresh temporary directory (removed afterwards) with stdin/stdout/stderr on /dev/null,
- caps its address space (`RLIMIT_AS`), CPU seconds, written file size and core dumps with `setrlimit`,
- leaves the network: `unshare(CLONE_NEWNET)` puts it in an empty network namespace (needs root or
  CAP_SYS_ADMIN; this is what runs in codemill's containers), else a guard that makes every socket raise,
- disables process-spawning and file-destroying functions of `os`, `shutil` and `subprocess`
  (a tripwire against accidents like `shutil.rmtree("/")`, not a security boundary on its own).

The worker kills the child's process group at the wall-clock limit. Whatever the child does (loop forever,
allocate without bound, segfault, `os._exit(0)` before the tests ran) the sample is reported as a failure,
because a pass is only the harness's own message written after the last check succeeded.

Two kinds of job, both produced by `trainer.evaluation.benchmarks`:

- assert programs (HumanEval, MBPP): `program` holds solution + tests; it passes if it runs to the end;
- differential tests (HumanEval+, MBPP+, EvoEval, as EvalPlus does): `program` defines `entry_point`, which is
  called on every input; with `expected` unset the outputs are collected (running the canonical solution
  once gives the expected outputs), otherwise each output is compared with the expected one.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import select
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from typing import Any, Literal

NetworkMode = Literal["auto", "namespace", "guard", "none"]
Status = Literal["passed", "failed", "timeout", "error"]

CLONE_NEWNET = 0x40000000
# A comparison of float outputs falls back to this tolerance when the task gives atol 0 (as EvalPlus does).
DEFAULT_FLOAT_ATOL = 1e-6
FLOAT_RTOL = 1e-7


@dataclasses.dataclass(frozen=True)
class SandboxConfig:
    """Limits for one sample; `workers` processes run samples in parallel."""

    timeout_s: float = 10.0
    memory_mb: int = 4096
    workers: int = 2
    network: NetworkMode = "auto"
    max_file_mb: int = 64
    # Differential tests get at least `timeout_factor` x the canonical solution's runtime (slow but correct
    # candidates should not fail just because the plus inputs are large).
    timeout_factor: float = 4.0
    # Canonical solutions computing expected outputs (MBPP+'s sum_average sums 10^8 numbers per input).
    ground_truth_timeout_s: float = 300.0

    def validate(self) -> list[str]:
        problems = []
        if self.timeout_s <= 0:
            problems.append(f"timeout_s: must be > 0, got {self.timeout_s}")
        if self.memory_mb < 64:
            problems.append(f"memory_mb: at least 64 MiB is needed to start Python, got {self.memory_mb}")
        if self.workers < 1:
            problems.append(f"workers: must be >= 1, got {self.workers}")
        if self.network not in ("auto", "namespace", "guard", "none"):
            problems.append(f"network: one of auto, namespace, guard, none; got {self.network!r}")
        return problems


@dataclasses.dataclass(frozen=True)
class Job:
    """One sample to execute. `inputs`/`expected` are pickled lists (differential tests only)."""

    program: str
    timeout_s: float
    entry_point: str | None = None
    inputs: bytes | None = None
    # Python source evaluating to the list of argument tuples (`_args(...)` builds one); used instead of `inputs`.
    inputs_source: str | None = None
    expected: bytes | None = None
    oracle: str = "exact"
    atol: float = 0.0
    collect_outputs: bool = False


@dataclasses.dataclass(frozen=True)
class Result:
    status: Status
    detail: str
    runtime_s: float
    network: str = ""
    # Pickled list of outputs, only for `collect_outputs` jobs that passed.
    outputs: bytes | None = None

    @property
    def passed(self) -> bool:
        return self.status == "passed"


# ---------------------------------------------------------------------------------------------- child side
def _block_network_guard() -> None:
    import socket

    def refuse(*_args, **_kwargs):
        raise OSError("network access is disabled in the codemill sandbox")

    class NoSocket(socket.socket):
        def __init__(self, *_args, **_kwargs):
            refuse()

    socket.socket = NoSocket  # type: ignore[misc]
    for name in ("create_connection", "create_server", "socketpair", "fromfd", "getaddrinfo", "gethostbyname"):
        setattr(socket, name, refuse)


def _leave_network(mode: NetworkMode) -> str:
    if mode == "none":
        return "none"
    if mode in ("auto", "namespace"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(CLONE_NEWNET) == 0:
            return "namespace"
        if mode == "namespace":
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) failed; set sandbox.network=guard")
    _block_network_guard()
    return "guard"


def _disable_destructive() -> None:
    import builtins
    import shutil as _shutil
    import subprocess

    for name in ("system", "kill", "killpg", "fork", "forkpty", "execv", "execve", "execvp", "execvpe", "execl",
                 "execle", "execlp", "execlpe", "spawnv", "spawnve", "spawnl", "spawnle", "popen", "posix_spawn",
                 "posix_spawnp", "remove", "unlink", "rmdir", "removedirs", "rename", "renames", "replace",
                 "truncate", "chmod", "fchmod", "chown", "fchown", "lchown", "chroot", "setuid", "putenv",
                 "unsetenv", "_exit"):
        if hasattr(os, name):
            setattr(os, name, None)
    for name in ("rmtree", "move", "chown"):
        setattr(_shutil, name, None)
    subprocess.Popen = None  # type: ignore[assignment,misc]
    builtins.help = None  # help() would page on the terminal


def _is_floats(x: Any) -> bool:
    if isinstance(x, float):
        return True
    if isinstance(x, (list, tuple)) and x:
        return all(isinstance(i, float) for i in x)
    return False


def _same(out: Any, exp: Any, atol: float | None) -> bool:
    """`out == exp`, except that NaN equals NaN and, with `atol`, floats compare with that tolerance."""
    import math

    if isinstance(exp, float) and isinstance(out, (int, float)) and not isinstance(out, bool):
        if math.isnan(exp):
            return isinstance(out, float) and math.isnan(out)
        if atol is not None:
            return math.isclose(out, exp, rel_tol=FLOAT_RTOL, abs_tol=atol)
        return out == exp
    if isinstance(exp, (list, tuple)) and type(out) is type(exp):
        return len(out) == len(exp) and all(_same(o, e, atol) for o, e in zip(out, exp))
    try:
        return bool(out == exp)
    except Exception:  # e.g. comparing arrays of different shapes
        return False


@dataclasses.dataclass(frozen=True)
class Digest:
    """Stands in for an expected output too large to ship to every sample (HumanEval+ has multi-MB strings)."""

    sha256: str

    @classmethod
    def of(cls, value: Any) -> Digest:
        import hashlib

        return cls(hashlib.sha256(repr(value).encode(errors="replace")).hexdigest())


# Expected outputs larger than this (pickled) are stored as a Digest of their repr.
MAX_EXPECTED_BYTES = 1 << 20


def outputs_match(out: Any, exp: Any, *, oracle: str, atol: float, args: Sequence[Any] = ()) -> bool:
    """EvalPlus-style output comparison (exact, float tolerance, and the benchmarks' special oracles)."""
    if isinstance(exp, Digest):
        return Digest.of(out) == exp
    if oracle == "not_none":  # MBPP+ tasks whose outputs (regex match objects) are not comparable
        return (out is not None) == (exp is not None)
    if oracle == "set":  # MBPP+ tasks whose answer is a collection in no particular order
        try:
            return set(out) == set(exp)
        except TypeError:
            return False
    if oracle == "poly_root":  # HumanEval/32 find_zero: any root is right, check poly(xs, x) ~ 0
        xs = args[0]
        try:
            value = sum(c * out**i for i, c in enumerate(xs))
        except TypeError:
            return False
        return abs(value) <= max(atol, 1e-6)
    # Float tolerance only where EvalPlus applies it: a float or a flat list/tuple of floats.
    return _same(out, exp, (atol or DEFAULT_FLOAT_ATOL) if _is_floats(exp) else None)


def _shippable(out: Any) -> Any:
    try:
        size = len(pickle.dumps(out))
    except Exception:
        return Digest.of(out)
    return out if size <= MAX_EXPECTED_BYTES else Digest.of(out)


def _run_in_child(job: Job, network: NetworkMode, result_fd: int, out_path: str, guard: bool = True) -> None:
    """Runs inside the forked child after the limits are set; writes `OK` (+ outputs) only on success."""
    import copy

    write = os.write
    exit_now = os._exit
    mode = _leave_network(network)
    if guard:
        _disable_destructive()
    namespace: dict[str, Any] = {"__name__": "__sandbox__", "__builtins__": __builtins__}
    # EvoEval/EvalPlus outputs include integers of more than 4300 digits (Python 3.11's default str() limit).
    if hasattr(sys, "set_int_max_str_digits"):
        sys.set_int_max_str_digits(0)
    try:
        # Inputs are built before the candidate's code runs, so it cannot change them.
        inputs = None
        if job.inputs_source is not None:
            inputs = eval(job.inputs_source, {"_args": lambda *a: a, "__builtins__": __builtins__})  # noqa: S307
        elif job.inputs is not None:
            inputs = pickle.loads(job.inputs)
        exec(compile(job.program, "<sample>", "exec"), namespace)  # noqa: S102 - sandboxed child process
        if inputs is not None:
            fn = namespace.get(job.entry_point or "")
            if not callable(fn):
                raise NameError(f"{job.entry_point} is not defined")
            expected = pickle.loads(job.expected) if job.expected is not None else None
            outputs = []
            for i, args in enumerate(inputs):
                out = fn(*copy.deepcopy(args))
                if expected is None:
                    outputs.append(_shippable(out))
                elif not outputs_match(out, expected[i], oracle=job.oracle, atol=job.atol, args=args):
                    raise AssertionError(f"wrong output on input {i}")
            if job.collect_outputs:
                with open(out_path, "wb") as fh:
                    pickle.dump(outputs, fh)
    except BaseException as exc:  # SystemExit, KeyboardInterrupt from generated code are failures too
        write(result_fd, f"FAIL {mode} {type(exc).__name__}: {str(exc)[:200]}".encode(errors="replace"))
        exit_now(1)
    write(result_fd, f"OK {mode}".encode())
    exit_now(0)


def _child(job: Job, cfg: SandboxConfig, workdir: str, result_fd: int, isolate: bool = True) -> None:
    import resource

    try:
        os.setpgid(0, 0)
        if not isolate:  # bench/eval.py's baseline: the same fork + exec + harness, with no limits or guards
            _run_in_child(job, "none", result_fd, os.path.join(workdir, "outputs.pkl"), guard=False)
        os.chdir(workdir)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        mem = cfg.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        cpu = int(job.timeout_s) + 2  # backstop for the wall-clock kill in the worker
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
        fsize = cfg.max_file_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        os.environ.clear()
        os.environ.update({"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir})
        _run_in_child(job, cfg.network, result_fd, os.path.join(workdir, "outputs.pkl"))
    except BaseException as exc:
        try:
            os.write(result_fd, f"FAIL setup {type(exc).__name__}: {exc}".encode(errors="replace"))
        finally:
            os._exit(2)
    os._exit(3)  # not reached: _run_in_child always exits


# --------------------------------------------------------------------------------------------- worker side
def execute(job: Job, cfg: SandboxConfig, *, isolate: bool = True) -> Result:
    """Runs one job in a forked, limited child and waits at most `job.timeout_s` seconds (wall clock).

    `isolate=False` skips every limit and guard (same fork and harness): only bench/eval.py's baseline uses it.
    """
    own_dir = isolate or job.collect_outputs
    workdir = tempfile.mkdtemp(prefix="codemill-sandbox-") if own_dir else tempfile.gettempdir()
    read_fd, write_fd = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # child: never returns
        os.close(read_fd)
        _child(job, cfg, workdir, write_fd, isolate)
    os.close(write_fd)
    try:
        os.setpgid(pid, pid)  # also done in the child; whichever runs first wins the race, both are fine
    except OSError:
        pass
    message = b""
    timed_out = False
    deadline = start + job.timeout_s
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([read_fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(read_fd, 4096)
            if not chunk:
                break
            message += chunk[: max(0, 1024 - len(message))]
    finally:
        os.close(read_fd)
        for target in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
            try:
                target()
            except (ProcessLookupError, PermissionError):
                pass
        _, wait_status = os.waitpid(pid, 0)
        runtime = time.monotonic() - start
    outputs = None
    try:
        if timed_out:
            return Result("timeout", f"killed after {job.timeout_s:.1f}s", runtime)
        text = message.decode(errors="replace")
        if text.startswith("OK"):
            if job.collect_outputs:
                with open(os.path.join(workdir, "outputs.pkl"), "rb") as fh:
                    outputs = fh.read()
            return Result("passed", "", runtime, network=text[3:].strip(), outputs=outputs)
        if text.startswith("FAIL"):
            _, mode, detail = (text.split(" ", 2) + ["", ""])[:3]
            return Result("failed", detail, runtime, network=mode)
        if os.WIFSIGNALED(wait_status):
            sig = signal.Signals(os.WTERMSIG(wait_status)).name
            return Result("failed", f"killed by {sig}", runtime)
        return Result("failed", f"exited with status {os.waitstatus_to_exitcode(wait_status)} before the tests "
                      "finished", runtime)
    finally:
        if own_dir:
            shutil.rmtree(workdir, ignore_errors=True)


def _execute_star(args: tuple[Job, SandboxConfig, bool]) -> Result:
    job, cfg, isolate = args
    return execute(job, cfg, isolate=isolate)


class SandboxPool:
    """A pool of `cfg.workers` spawned worker processes, each forking one sandboxed child per job.

        with SandboxPool(SandboxConfig(workers=2)) as pool:
            results = pool.run(jobs)
    """

    def __init__(self, cfg: SandboxConfig, *, isolate: bool = True):
        self.cfg = cfg
        self.isolate = isolate
        self._executor = None

    def __enter__(self) -> SandboxPool:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn: workers start from a clean interpreter, not a fork of a process holding a model and threads.
        self._executor = ProcessPoolExecutor(self.cfg.workers, mp_context=multiprocessing.get_context("spawn"))
        return self

    def __exit__(self, *exc) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def run(self, jobs: Iterable[Job]) -> list[Result]:
        """Results in the order of `jobs`."""
        if self._executor is None:
            raise RuntimeError("SandboxPool.run outside its `with` block")
        jobs = list(jobs)
        chunk = max(1, min(8, len(jobs) // (self.cfg.workers * 8)))
        return list(self._executor.map(_execute_star, [(j, self.cfg, self.isolate) for j in jobs], chunksize=chunk))


def run_unsandboxed(programs: Sequence[str], *, workers: int = 2, timeout_s: float = 10.0) -> list[bool]:
    """Baseline for bench/eval.py: each program in a plain `python -c` subprocess, no limits, no isolation."""
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor

    def one(program: str) -> bool:
        try:
            proc = subprocess.run([sys.executable, "-c", program], capture_output=True, timeout=timeout_s,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return False
        return proc.returncode == 0

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, programs))
