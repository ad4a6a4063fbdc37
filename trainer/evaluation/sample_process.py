"""The candidate process of the evaluation sandbox: a fresh interpreter that confines itself, runs one generated
program and then only answers calls from the checker (trainer/evaluation/sandbox.py starts it; never run by hand).

    python -I trainer/evaluation/sample_process.py REQUESTS_FD REPLIES_FD '{"memory_mb": 1024, ...}'

A fresh interpreter (`python -I`: no environment variables, no user site, not the project on sys.path) rather
than a fork of the worker, so that its memory never held anything but the program: not the tests, not the
expected outputs, not another sample's job. It imports only the standard library, plus `landlock` and
`pyseccomp` for the confinement. Messages are length-prefixed pickles; everything it sends the checker loads
with a restricted unpickler (sandbox._PlainUnpickler), so whatever this process does, only plain data arrives.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import pickle
import struct
import sys
import sysconfig
from typing import Any

# The exact types whose values cross to the checker; any other object stays here and the checker gets a handle.
PLAIN_TYPES = (type(None), bool, int, float, complex, str, bytes, bytearray, list, tuple, dict, set, frozenset)
_PLAIN = frozenset(PLAIN_TYPES)
# System folders the candidate may read besides the Python installation (shared libraries, time zones, CPU count).
SYSTEM_READ_ROOTS = ("/usr/lib", "/usr/lib64", "/lib", "/lib64", "/usr/local/lib", "/usr/share/zoneinfo",
                     "/sys/devices/system/cpu")
FRAME = struct.Struct(">Q")
CLONE_THREAD = 0x00010000


# ---------------------------------------------------------------------------------------------------- framing
def write_frame(fd: int, payload: bytes) -> None:
    data = memoryview(FRAME.pack(len(payload)) + payload)
    while data:
        data = data[os.write(fd, data):]


def _read_exact(fd: int, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError("the other process ended")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int, limit: int) -> bytes:
    (size,) = FRAME.unpack(_read_exact(fd, FRAME.size))
    if size > limit:
        raise OverflowError(f"a message of {size} bytes exceeds the limit of {limit}")
    return _read_exact(fd, size)


# ------------------------------------------------------------------------------------------------ confinement
def read_roots() -> list[str]:
    """Folders the candidate may read under `isolation: strict`: the interpreter's stdlib and site-packages (of
    the venv and of its base installation) and the system libraries. Nothing else: no lake, checkpoint, cache,
    home folder or checkout."""
    roots: list[str] = []
    for vars_ in ({}, {"base": sys.base_prefix, "platbase": sys.base_exec_prefix}):
        paths = sysconfig.get_paths(vars=vars_)
        roots += [paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")]
    roots += list(SYSTEM_READ_ROOTS)
    out: list[str] = []
    for r in roots:
        real = os.path.realpath(r)
        if os.path.isdir(real) and real not in out:
            out.append(real)
    return out


def limit(memory_mb: int, timeout_s: float, max_file_mb: int | None) -> None:
    import resource

    mem = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    cpu = int(timeout_s) + 2  # backstop for the wall-clock kill in the worker
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if max_file_mb is not None:
        fsize = max_file_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


def landlock_rules(workdir: str) -> str:
    """Landlock (kernel >= 5.13, no privilege): read the Python installation and system libraries, write only
    beneath `workdir`. Also confines ptrace to this domain (the checker cannot be inspected)."""
    import ctypes

    import landlock

    ctypes.set_errno(0)  # the binding treats a non-zero errno after a call as its failure; start clean
    abi = landlock.landlock_abi_version()
    ruleset = landlock.Ruleset()
    read = landlock.FSAccess.READ_FILE | landlock.FSAccess.READ_DIR | landlock.FSAccess.EXECUTE
    ruleset.allow(*read_roots(), rules=read)
    ruleset.allow(os.devnull, rules=landlock.FSAccess.READ_FILE | landlock.FSAccess.WRITE_FILE)
    ruleset.allow(workdir)  # every right beneath the sample's own folder
    ruleset.apply()
    return f"landlock-abi{abi}"


def seccomp_filter() -> str:
    """seccomp through libseccomp (no privilege; libseccomp sets no_new_privs): a deny list of what a
    benchmark solution never needs. Denied calls fail with EPERM, so the sample sees an ordinary OSError."""
    import pyseccomp as sc

    deny = sc.ERRNO(errno.EPERM)
    me = os.getpid()
    f = sc.SyscallFilter(defaction=sc.ALLOW)
    # No new process: fork/vfork/exec, and clone unless it makes a thread (CLONE_THREAD). glibc tries clone3
    # first and falls back to clone on ENOSYS (clone3's flags live in memory seccomp cannot inspect).
    for name in ("fork", "vfork", "execve", "execveat"):
        f.add_rule(deny, name)
    f.add_rule(deny, "clone", sc.Arg(0, sc.MASKED_EQ, CLONE_THREAD, 0))
    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    # No network of any family (AF_UNIX too: abstract sockets reach host services); io_uring can open sockets
    # without the socket syscall.
    for name in ("socket", "io_uring_setup", "io_uring_enter", "io_uring_register"):
        f.add_rule(deny, name)
    # Signals only to itself; no ptrace or cross-process memory; no raised rlimits; no namespaces or mounts;
    # no truncation by path (Landlock governs it only from ABI 3).
    for name in ("kill", "rt_sigqueueinfo", "tgkill", "rt_tgsigqueueinfo"):
        f.add_rule(deny, name, sc.Arg(0, sc.NE, me))
    for name in ("tkill", "pidfd_open", "pidfd_send_signal", "pidfd_getfd", "ptrace", "process_vm_readv",
                 "process_vm_writev", "kcmp", "setrlimit", "truncate", "unshare", "setns", "mount", "umount2",
                 "pivot_root", "chroot", "bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key",
                 "request_key", "setsid", "setpgid"):
        f.add_rule(deny, name)
    f.add_rule(deny, "prlimit64", sc.Arg(2, sc.NE, 0))  # reading limits stays allowed
    f.load()
    return "seccomp"


# ------------------------------------------------------------------------------------------------ the server
_ATOMS = frozenset((type(None), bool, int, float, complex, str, bytes, bytearray))


def plainify(x: Any) -> Any:
    """Values of subclasses and numeric look-alikes as the plain values they compare equal to, as `==` treated
    them before: numpy scalars -> int/float/bool, a namedtuple -> tuple, OrderedDict/defaultdict/Counter -> dict.
    Anything else (arrays, match objects, instances of the sample's classes) stays an object. Only a convenience
    for honest samples: whatever this process sends, the checker accepts nothing but plain data."""
    import numbers

    t = type(x)
    if t in _ATOMS:
        return x
    if t in (list, tuple, set, frozenset):
        items = [plainify(i) for i in x]
        return x if all(a is b for a, b in zip(items, x)) else t(items)
    if t is dict:
        pairs = [(plainify(k), plainify(v)) for k, v in x.items()]
        return x if all(a is k and b is v for (a, b), (k, v) in zip(pairs, x.items())) else dict(pairs)
    if t.__name__ == "bool_" and t.__module__ == "numpy":
        return bool(x)
    for base in (bool, int, float, complex, str, bytes, tuple, list, dict, set, frozenset):
        if isinstance(x, base):
            return plainify(base(x.items() if base is dict else x))
    if isinstance(x, numbers.Integral):
        return int(x)
    if isinstance(x, numbers.Real):
        return float(x)
    if isinstance(x, numbers.Complex):
        return complex(x)
    return x


_OPS = {"len": len, "list": list, "getitem": lambda o, k: o[k], "contains": lambda o, i: i in o, "bool": bool}


class SampleServer:
    """Executes the program, then answers ("call" | "getattr" | "setattr" | "op", object id, ...) requests.
    Values go back as pickles of plain data; any other object is kept in `objects` and sent as its index."""

    def __init__(self, requests: int, replies: int):
        self.requests, self.replies = requests, replies
        self.objects: list[Any] = []
        server = self

        class Out(pickle.Pickler):
            def persistent_id(self, obj: Any) -> Any:
                if type(obj) in _PLAIN:
                    return None
                server.objects.append(obj)
                return len(server.objects) - 1

        class In(pickle.Unpickler):
            def persistent_load(self, pid: Any) -> Any:
                return server.objects[pid[1]]

        self._out, self._in = Out, In

    def send(self, message: tuple) -> None:
        buf = io.BytesIO()
        try:
            self._out(buf, protocol=5).dump(message)
        except Exception as exc:  # a value that cannot be pickled at all, or nested too deeply
            buf = io.BytesIO()
            pickle.dump(("raised", type(exc).__name__, str(exc)[:500]), buf, protocol=5)
        write_frame(self.replies, buf.getvalue())

    def serve(self) -> None:
        program = pickle.loads(read_frame(self.requests, 1 << 30))
        namespace: dict[str, Any] = {"__name__": "__sandbox__", "__builtins__": builtins}
        try:
            exec(compile(program, "<sample>", "exec"), namespace)  # noqa: S102 - the confined process
        except BaseException as exc:  # SystemExit, KeyboardInterrupt from generated code are failures too
            self.send(("raised", type(exc).__name__, str(exc)[:500]))
            return
        self.send(("loaded", {k: v for k, v in namespace.items()
                              if not k.startswith("__") and type(v) is not type(builtins)}))
        while True:
            try:
                payload = read_frame(self.requests, 1 << 40)
            except EOFError:
                return
            try:
                kind, target, *rest = self._in(io.BytesIO(payload)).load()
                obj = self.objects[target]
                if kind == "call":
                    value = obj(*rest[0], **rest[1])
                elif kind == "getattr":
                    value = getattr(obj, rest[0])
                elif kind == "setattr":
                    value = setattr(obj, rest[0], rest[1])
                else:
                    value = _OPS[rest[0]](obj, *rest[1])
                value = plainify(value)
            except BaseException as exc:
                self.send(("raised", type(exc).__name__, str(exc)[:500]))
                continue
            self.send(("ok", value))


def run_candidate(opts: dict[str, Any], requests: int, replies: int) -> None:
    """In a freshly forked child of the fork server: confine, report the confinement, run the program, serve
    calls. Never returns."""
    try:
        os.setsid()  # its own session and process group: one kill reaches everything it is
        os.chdir(opts["workdir"])
        mechanisms = []
        if opts["isolate"]:
            limit(opts["memory_mb"], opts["timeout_s"], opts["max_file_mb"])
            if opts["isolation"] == "strict":
                mechanisms += [landlock_rules(opts["workdir"]), seccomp_filter()]
            mechanisms.append("rlimits")
        if hasattr(sys, "set_int_max_str_digits"):
            # EvoEval/EvalPlus outputs include integers of more than 4300 digits (Python 3.11's str() limit).
            sys.set_int_max_str_digits(0)
        server = SampleServer(requests, replies)
        ready = ("ready", "+".join(mechanisms) or "none")
    except BaseException as exc:  # before any generated code: a genuine setup failure
        write_frame(replies, pickle.dumps(("setup_failed", f"{type(exc).__name__}: {exc}"), protocol=5))
        os._exit(2)
    server.send(ready)
    server.serve()
    os._exit(0)


def fork_server(sock_fd: int) -> None:
    """One per pool worker: forks a candidate per job, so that a job costs a fork, not an interpreter start and
    the imports (pyseccomp runs `ldconfig -p` to find libseccomp). Its memory holds nothing of any job but the
    limits and the folder name: programs go straight to the forked child over that child's own pipe.

    Messages (SOCK_SEQPACKET, JSON): {"run": opts} with the child's two pipe ends attached -> {"pid": N};
    {"end": N} -> kills N's process group, reaps it -> {"status": returncode}."""
    import signal
    import socket

    try:  # loaded once, before any child confines itself
        import landlock  # noqa: F401
        import pyseccomp  # noqa: F401
    except Exception:  # reported by each child that needs them (setup_failed)
        pass
    sock = socket.socket(fileno=sock_fd)
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(sock, 1 << 16, 2)
        except OSError:
            data, fds = b"", []
        if not data:
            os._exit(0)
        msg = json.loads(data)
        if "run" in msg:
            pid = os.fork()
            if pid == 0:
                sock.close()
                run_candidate(msg["run"], fds[0], fds[1])
            for fd in fds:
                os.close(fd)
            sock.send(json.dumps({"pid": pid}).encode())
        else:
            pid = int(msg["end"])
            for kill in (os.killpg, os.kill):
                try:
                    kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            _, status = os.waitpid(pid, 0)  # the fork server is the parent: the pid cannot be reused before
            sock.send(json.dumps({"status": os.waitstatus_to_exitcode(status)}).encode())


if __name__ == "__main__":
    fork_server(int(sys.argv[1]))
