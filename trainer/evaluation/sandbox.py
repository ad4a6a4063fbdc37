"""Sandboxed execution of generated code, with a verdict the generated code cannot forge.

    with SandboxPool(SandboxConfig(workers=2)) as pool:
        results = pool.run([Job("def add(a, b):\n    return a + b\n", 10.0, tests="assert add(1, 2) == 3")])

Anything that runs in the same process as the candidate's code can be rewritten by it (an inherited pipe, the
harness's functions, `builtins`, expected outputs in memory), so the verdict is never computed there. Every job
runs as two processes (docs/evaluation.md, "The sandbox", says why this design):

- the *candidate* process, forked by the worker's fork server (`sample_process.py`, a fresh `python -I`
  interpreter, so its memory never held a test, an expected output or another job), confines itself, runs the
  program and then only answers calls on its own pair of pipes: "call this function (or object it returned
  earlier) with these arguments" -> the returned value, or the exception;
- the *checker* process, forked by the worker, runs the checks: the benchmark's assert tests with every name
  the program defines bound to a `Handle` that calls into the candidate process, or the differential
  comparison against the expected outputs, which only it holds. It alone writes the verdict, on a pipe only it
  holds; the worker reads nothing else.

Values cross from the candidate to the checker as pickles that `_PlainUnpickler` restricts to plain data (None,
bool, int, float, complex, str, bytes, bytearray and list/tuple/dict/set/frozenset of those); any other object
stays in the candidate process and the checker gets a `Handle` whose `==` is identity. A returned object with a
lying `__eq__`, a patched `math.isclose` or `outputs_match`, "OK" written on every descriptor, an early
`os._exit(0)`: none of it changes what the checker concludes.

Confinement of the candidate process (`isolation: strict`, the default; `SandboxPool` refuses to start when the
host cannot give it, never running with less):

- Landlock (`landlock` on PyPI; Linux >= 5.13, no root needed): read only the Python installation and system
  libraries (`sample_process.read_roots`), write only its own fresh temporary folder; no lake, checkpoint or
  cache is readable. Landlock also confines ptrace to its domain (the checker's memory is out of reach);
- seccomp (`pyseccomp` on PyPI over libseccomp; no root needed): no new process (fork, vfork, clone of a
  process, clone3, exec), no socket of any family nor io_uring, no signal to another process, no ptrace or
  cross-process memory, no raised rlimits, no namespaces or mounts, no truncation by path;
- rlimits: address space (`memory_mb`), CPU seconds, written file size, open files, no core dumps;
- its own session, stdin/stdout/stderr on /dev/null, an empty environment, no descriptor but its two pipes;
  the worker has the fork server kill and reap it at the wall-clock limit.

`isolation: none` (opt-in only; logged and recorded with the results) keeps the two processes, the rlimits and
the temporary folder but not Landlock and seccomp, for hosts without them. `isolate=False` (bench/eval.py's
baseline only) also drops the limits.

Two kinds of job, both produced by `trainer.evaluation.benchmarks`:

- assert programs (HumanEval, MBPP): `program` is the solution, `tests` the asserts (run in the checker);
- differential tests (HumanEval+, MBPP+, EvoEval, as EvalPlus does): `entry_point` is called on every input;
  with `collect_outputs` the outputs are returned (running the canonical solution once gives the expected
  outputs), otherwise each output is compared with the expected one, in the checker.
"""

from __future__ import annotations

import builtins
import dataclasses
import io
import json
import math
import os
import pickle
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from trainer.evaluation import sample_process
from trainer.evaluation.sample_process import FRAME, read_frame, read_roots, write_frame

Isolation = Literal["strict", "none"]
Status = Literal["passed", "failed", "timeout", "error"]

# A comparison of float outputs falls back to this tolerance when the task gives atol 0 (as EvalPlus does).
DEFAULT_FLOAT_ATOL = 1e-6
FLOAT_RTOL = 1e-7


class SandboxUnavailable(RuntimeError):
    """`isolation: strict` was asked for and this host cannot give it."""


@dataclasses.dataclass(frozen=True)
class SandboxConfig:
    """Limits for one sample; `workers` processes run samples in parallel."""

    timeout_s: float = 10.0
    memory_mb: int = 4096
    workers: int = 2
    # strict: Landlock + seccomp confinement, refused if unavailable. none: explicit opt-out (logged, recorded).
    isolation: Isolation = "strict"
    max_file_mb: int = 64
    # Largest value one call may return to the checker (the candidate process is killed beyond it).
    max_reply_mb: int = 256
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
        if self.isolation not in ("strict", "none"):
            problems.append(f"isolation: 'strict' (Landlock + seccomp, refused when unavailable) or 'none' "
                            f"(explicit opt-out, recorded with the results); got {self.isolation!r}")
        if self.max_reply_mb < 1:
            problems.append(f"max_reply_mb: must be >= 1, got {self.max_reply_mb}")
        return problems


@dataclasses.dataclass(frozen=True)
class Job:
    """One sample to execute. Assert jobs: `program` + `tests`. Differential jobs: `inputs` (pickled list of
    argument tuples) or `inputs_source` (Python source of that list, `_args(...)` builds one tuple), and
    `expected` (pickled outputs) unless `collect_outputs`."""

    program: str
    timeout_s: float
    entry_point: str | None = None
    inputs: bytes | None = None
    inputs_source: str | None = None
    expected: bytes | None = None
    oracle: str = "exact"
    atol: float = 0.0
    collect_outputs: bool = False
    # Assert-style checks, run in the checker against the program's names; empty: the program only has to load.
    tests: str = ""


@dataclasses.dataclass(frozen=True)
class Result:
    status: Status
    detail: str
    runtime_s: float
    # The confinement the candidate process actually ran under, as it reported before any generated code ran.
    isolation: str = ""
    # Pickled list of outputs, only for `collect_outputs` jobs that passed.
    outputs: bytes | None = None

    @property
    def passed(self) -> bool:
        return self.status == "passed"


# ------------------------------------------------------------------------------------------------ values
@dataclasses.dataclass(frozen=True)
class Digest:
    """Stands in for an expected output too large to ship to every sample (HumanEval+ has multi-MB strings)."""

    sha256: str

    @classmethod
    def of(cls, value: Any) -> Digest:
        import hashlib

        return cls(hashlib.sha256(repr(value).encode(errors="replace")).hexdigest())


@dataclasses.dataclass(frozen=True, eq=False)
class Opaque:
    """A canonical output that is not plain data (a regex match object): equal to nothing, so only oracles that
    look at None-ness (MBPP+'s `not_none`) can score it."""

    type_name: str


# Expected outputs larger than this (pickled) are stored as a Digest of their repr.
MAX_EXPECTED_BYTES = 1 << 20


class _PlainUnpickler(pickle.Unpickler):
    """Loads only plain data (Python docs, pickle, "Restricting Globals"). Every object the candidate process
    keeps arrives as a persistent id and becomes a `Handle`; `extra` admits this module's value classes when
    loading expected outputs the checker itself wrote."""

    def __init__(self, data: bytes, channel: _Channel | None = None, extra: frozenset[str] = frozenset()):
        super().__init__(io.BytesIO(data))
        self._channel = channel
        self._extra = extra

    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" and name == "complex":  # protocol 2+ pickles complex via copyreg reduce
            return complex
        if module == __name__ and name in self._extra:
            return globals()[name]
        raise pickle.UnpicklingError(f"only plain data may leave the sample's process, got {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        if self._channel is None or type(pid) is not int:
            raise pickle.UnpicklingError(f"unexpected object reference {pid!r}")
        return Handle(self._channel, pid)


def load_plain(data: bytes, *, extra: Iterable[str] = ()) -> Any:
    """Restricted load of checker-written data (expected outputs: plain values, `Digest`, `Opaque`)."""
    return _PlainUnpickler(data, extra=frozenset(extra)).load()


class Handle:
    """The checker's stand-in for an object that stayed in the candidate process (a function the program
    defines, or a non-plain value it returned). Calling it, its attributes, `len`, iteration, indexing and
    `in` go to the candidate process; `==` and `hash` are identity, so no returned object can claim to equal
    an expected value."""

    __slots__ = ("_channel", "_id")

    def __init__(self, channel: _Channel, hid: int):
        object.__setattr__(self, "_channel", channel)
        object.__setattr__(self, "_id", hid)

    def __setattr__(self, name: str, value: Any) -> None:
        self._channel.request(("setattr", self._id, name, value))

    def __setstate__(self, state: Any) -> None:  # a crafted pickle must not rewrite a handle
        raise pickle.UnpicklingError("handles cannot be rebuilt")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._channel.request(("call", self._id, args, kwargs))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return self._channel.request(("getattr", self._id, name))

    def __len__(self) -> int:
        return self._int(self._channel.request(("op", self._id, "len", ())))

    def __iter__(self):
        return iter(self._channel.request(("op", self._id, "list", ())))

    def __getitem__(self, key: Any) -> Any:
        return self._channel.request(("op", self._id, "getitem", (key,)))

    def __contains__(self, item: Any) -> bool:
        return self._channel.request(("op", self._id, "contains", (item,))) is True

    def __bool__(self) -> bool:
        return self._channel.request(("op", self._id, "bool", ())) is True

    def __repr__(self) -> str:  # local: Digest.of and messages must not call into the sample
        return f"<object {self._id} of the sample>"

    @staticmethod
    def _int(value: Any) -> int:
        if type(value) is not int:
            raise TypeError("len() of a sample object returned a non-integer")
        return value


def _is_floats(x: Any) -> bool:
    if isinstance(x, float):
        return True
    if isinstance(x, (list, tuple)) and x:
        return all(isinstance(i, float) for i in x)
    return False


def _same(out: Any, exp: Any, atol: float | None) -> bool:
    """`out == exp`, except that NaN equals NaN and, with `atol`, floats compare with that tolerance."""
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


def _storable(out: Any) -> Any:
    """A canonical output as the checker stores it: objects kept by the sample become `Opaque` (at any depth of
    list/tuple/dict/set), values over MAX_EXPECTED_BYTES pickled a `Digest` of their repr."""

    def plain(x: Any) -> Any:
        if type(x) is Handle:
            return Opaque("object")
        if type(x) in (list, tuple, set, frozenset):
            return type(x)(plain(i) for i in x)
        if type(x) is dict:
            return {plain(k): plain(v) for k, v in x.items()}
        return x

    out = plain(out)
    try:
        size = len(pickle.dumps(out, protocol=5))
    except Exception:
        return Digest.of(out)
    return out if size <= MAX_EXPECTED_BYTES else Digest.of(out)


class SampleError(Exception):
    """An exception the candidate's code raised that is not a built-in exception type."""


def _raise_from_sample(type_name: Any, message: Any) -> None:
    exc = getattr(builtins, str(type_name), None)
    text = str(message)[:500]
    if isinstance(exc, type) and issubclass(exc, Exception):
        raise exc(text)  # built-in types only: tests that expect ValueError etc. keep working
    raise SampleError(f"{type_name}: {text}")


class _HandlePickler(pickle.Pickler):
    """Checker -> candidate: handles travel as their ids."""

    def persistent_id(self, obj: Any) -> Any:
        return ("h", obj._id) if type(obj) is Handle else None


class _Channel:
    """The checker's end of the two pipes to the candidate process."""

    def __init__(self, to_sample: int, from_sample: int, limit: int):
        self.to_sample, self.from_sample, self.limit = to_sample, from_sample, limit

    def receive(self) -> tuple:
        msg = _PlainUnpickler(read_frame(self.from_sample, self.limit), self).load()
        if type(msg) is not tuple or not msg:
            raise pickle.UnpicklingError("malformed message from the sample's process")
        return msg

    def send(self, message: Any) -> None:
        buf = io.BytesIO()
        _HandlePickler(buf, protocol=5).dump(message)
        write_frame(self.to_sample, buf.getvalue())

    def request(self, message: tuple) -> Any:
        self.send(message)
        reply = self.receive()
        if reply[0] == "ok" and len(reply) == 2:
            return reply[1]
        if reply[0] == "raised" and len(reply) == 3:
            _raise_from_sample(reply[1], reply[2])
        raise pickle.UnpicklingError("malformed reply from the sample's process")


def check_protected(paths: Iterable[str]) -> list[str]:
    """Problems for every local path (a lake, a model, a cache) that samples could read (under `read_roots()`)."""
    problems = []
    roots = read_roots()
    for p in paths:
        if not p or "://" in p:
            continue
        real = os.path.realpath(os.path.expanduser(p))
        for root in roots:
            if real == root or real.startswith(root.rstrip("/") + "/"):
                problems.append(f"{p}: lies under {root}, which sandboxed samples may read; move it elsewhere")
    return problems


# ------------------------------------------------------------------------------------------ checker process
class _Failed(Exception):
    pass


def _prepare(job: Job) -> tuple[list | None, list | None]:
    """Inputs and expected outputs, from the task files and the canonical run (trusted), built in the checker;
    the sample only ever receives pickled copies of the arguments. A failure here is an `error`, not the
    sample's fault."""
    inputs = None
    if job.inputs_source is not None:
        inputs = eval(job.inputs_source, {"_args": lambda *a: a, "__builtins__": builtins})  # noqa: S307
    elif job.inputs is not None:
        inputs = pickle.loads(job.inputs)
    expected = load_plain(job.expected, extra=("Digest", "Opaque")) if job.expected is not None else None
    return inputs, expected


def _check(job: Job, channel: _Channel, inputs: list | None, expected: list | None) -> tuple[str, str, bytes | None]:
    """The checks, in the checker process. Returns (status, detail, outputs)."""
    channel.send(job.program)
    loaded = channel.receive()
    if loaded[0] == "raised" and len(loaded) == 3:
        raise _Failed(f"{loaded[1]}: {str(loaded[2])[:200]}")
    if loaded[0] != "loaded" or len(loaded) != 2 or type(loaded[1]) is not dict:
        raise _Failed("malformed message from the sample's process")
    names = {k: v for k, v in loaded[1].items() if type(k) is str}
    if inputs is None:
        # The tests see the program's names as handles (or plain values), exactly where a concatenated
        # solution + tests program would have found them; their own definitions come after, as there.
        namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins, **names}
        if job.tests:
            exec(compile(job.tests, "<tests>", "exec"), namespace)  # noqa: S102 - benchmark tests, trusted
        return "passed", "", None
    fn = names.get(job.entry_point or "")
    if type(fn) is not Handle:
        raise _Failed(f"NameError: {job.entry_point} is not defined")
    outputs = []
    for i, args in enumerate(inputs):
        out = fn(*args)
        if expected is None:
            outputs.append(_storable(out))
        elif not outputs_match(out, expected[i], oracle=job.oracle, atol=job.atol, args=args):
            raise _Failed(f"AssertionError: wrong output on input {i}")
    return "passed", "", pickle.dumps(outputs, protocol=5) if job.collect_outputs else None


def _close_fds_except(keep: Sequence[int]) -> None:
    last = 2
    for fd in sorted(keep):
        os.closerange(last + 1, fd)
        last = fd
    os.closerange(last + 1, os.sysconf("SC_OPEN_MAX"))


def _checker(job: Job, cfg: SandboxConfig, to_sample: int, from_sample: int, verdict: int, isolate: bool) -> None:
    """The forked checker process: waits for the confined sample, runs the checks, writes the verdict. It holds
    the only end of the verdict pipe; no descriptor of the worker's (its pool queues) stays open here."""
    status, detail, outputs, isolation = "error", "", None, ""
    try:
        os.setpgid(0, 0)
        _close_fds_except((to_sample, from_sample, verdict))
        import ctypes

        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0: no same-user ptrace of the checker
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # tests that print must not write into the worker's output
            os.dup2(devnull, fd)
        os.close(devnull)
        if isolate:
            sample_process.limit(cfg.memory_mb, job.timeout_s, None)
        if hasattr(sys, "set_int_max_str_digits"):
            sys.set_int_max_str_digits(0)
        channel = _Channel(to_sample, from_sample, cfg.max_reply_mb * 1024 * 1024)
        # The first message is written before any generated code runs: trusted.
        first = channel.receive()
        if first[0] == "setup_failed":
            raise SandboxUnavailable(f"sandbox setup failed: {first[1]}")
        if first[0] != "ready" or len(first) != 2 or type(first[1]) is not str:
            raise SandboxUnavailable("the sample's process did not report ready")
        isolation = first[1]
        inputs, expected = _prepare(job)
        try:
            status, detail, outputs = _check(job, channel, inputs, expected)
        except _Failed as exc:
            status, detail = "failed", str(exc)
        except BaseException as exc:  # failed asserts, exceptions from the sample, a process that died
            status, detail = "failed", f"{type(exc).__name__}: {str(exc)[:200]}"
    except BaseException as exc:
        status, detail = "error", f"{type(exc).__name__}: {str(exc)[:300]}"
    try:
        write_frame(verdict, pickle.dumps((status, detail, isolation, outputs), protocol=5))
    finally:
        os._exit(0)


# --------------------------------------------------------------------------------------------- worker side
_FORK_SERVER: tuple[subprocess.Popen, socket.socket] | None = None


def _fork_server() -> socket.socket:
    """This worker's fork server (sample_process.fork_server): a fresh `python -I` interpreter, started once."""
    global _FORK_SERVER
    if _FORK_SERVER is not None and _FORK_SERVER[0].poll() is None:
        return _FORK_SERVER[1]
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    proc = subprocess.Popen([sys.executable, "-I", sample_process.__file__, str(theirs.fileno())],
                            pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd="/", env={})
    theirs.close()
    _FORK_SERVER = (proc, ours)
    return ours


def _ask(server: socket.socket, message: dict[str, Any], fds: Sequence[int] = ()) -> dict[str, Any]:
    socket.send_fds(server, [json.dumps(message).encode()], list(fds))
    reply = server.recv(1 << 16)
    if not reply:
        raise SandboxUnavailable("the sandbox's fork server ended")
    return json.loads(reply)


def _kill_group(pid: int) -> None:
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def execute(job: Job, cfg: SandboxConfig, *, isolate: bool = True) -> Result:
    """Runs one job (a candidate and a checker process) and waits at most `job.timeout_s` seconds (wall clock).

    `isolate=False` skips every limit and the confinement (same two processes and protocol): only
    bench/eval.py's baseline uses it.
    """
    workdir = tempfile.mkdtemp(prefix="codemill-sandbox-")
    to_sample_r, to_sample_w = os.pipe()
    from_sample_r, from_sample_w = os.pipe()
    start = time.monotonic()
    server = _fork_server()
    opts = {"workdir": workdir, "memory_mb": cfg.memory_mb, "timeout_s": job.timeout_s,
            "max_file_mb": cfg.max_file_mb, "isolation": cfg.isolation, "isolate": isolate}
    try:
        candidate = _ask(server, {"run": opts}, (to_sample_r, from_sample_w))["pid"]
    finally:
        os.close(to_sample_r)
        os.close(from_sample_w)
    verdict_r, verdict_w = os.pipe()
    checker = os.fork()
    if checker == 0:  # never returns
        _checker(job, cfg, to_sample_w, from_sample_r, verdict_w, isolate)
    for fd in (to_sample_w, from_sample_r, verdict_w):
        os.close(fd)
    message = b""
    timed_out = False
    deadline = start + job.timeout_s
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([verdict_r], [], [], left)
            if not ready:
                continue
            chunk = os.read(verdict_r, 1 << 20)
            if not chunk:
                break
            message += chunk
    finally:
        os.close(verdict_r)
        candidate_status = _ask(server, {"end": candidate})["status"]
        _kill_group(checker)
        os.waitpid(checker, 0)
        runtime = time.monotonic() - start
        shutil.rmtree(workdir, ignore_errors=True)
    if timed_out:
        return Result("timeout", f"killed after {job.timeout_s:.1f}s", runtime)
    try:
        status, detail, isolation, outputs = load_plain(message[FRAME.size:])
    except Exception:
        return Result("error", "the checker ended without a verdict", runtime)
    if status == "failed" and detail.startswith("EOFError") and candidate_status < 0 and not timed_out:
        detail = f"the sample's process died: {signal.Signals(-candidate_status).name}"
    return Result(status, detail, runtime, isolation=isolation, outputs=outputs)


def _execute_star(args: tuple[Job, SandboxConfig, bool]) -> Result:
    job, cfg, isolate = args
    return execute(job, cfg, isolate=isolate)


def _unavailable(cfg: SandboxConfig, probe: Result) -> SandboxUnavailable:
    hint = ("strict isolation needs Linux >= 5.13 with Landlock enabled (CONFIG_SECURITY_LANDLOCK, 'landlock' in "
            "the lsm= list), seccomp, libseccomp.so.2 and the `landlock` and `pyseccomp` packages; "
            "or set sandbox.isolation: none explicitly (it is logged and recorded with the results)")
    return SandboxUnavailable(f"sandbox.isolation={cfg.isolation}: {probe.status}: {probe.detail}; {hint}")


class SandboxPool:
    """A pool of `cfg.workers` spawned worker processes, each forking a candidate and a checker per job.

        with SandboxPool(SandboxConfig(workers=2)) as pool:
            results = pool.run(jobs)

    Entering runs one trivial sample: if the configured isolation does not work here it raises
    `SandboxUnavailable` (never a silent downgrade); `pool.isolation` says what samples run under
    (e.g. `landlock-abi7+seccomp+rlimits`).
    """

    def __init__(self, cfg: SandboxConfig, *, isolate: bool = True):
        self.cfg = cfg
        self.isolate = isolate
        self.isolation = ""
        self._executor = None

    def __enter__(self) -> SandboxPool:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn: workers start from a clean interpreter, not a fork of a process holding a model and threads.
        self._executor = ProcessPoolExecutor(self.cfg.workers, mp_context=multiprocessing.get_context("spawn"))
        # One trivial sample first: the configured isolation must really work here, or nothing runs.
        probe = self._executor.submit(_execute_star, (Job("x = 1", max(self.cfg.timeout_s, 60.0)), self.cfg,
                                                      self.isolate)).result()
        if not probe.passed:
            self.__exit__()
            raise _unavailable(self.cfg, probe)
        self.isolation = probe.isolation
        return self

    def __exit__(self, *exc: Any) -> None:
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
