"""Run generated code in a sandbox: `run_python(program, limits) → RunResult`; nothing else runs it.

Each program gets its own process, started through util-linux `unshare` into new network, mount and
PID namespaces: no network (only a downed loopback), a private 16 MiB tmpfs on /tmp and /dev/shm
(its working dir is /tmp/work; files written there vanish with it), and every process it forks dies
with it. As root (tests and CI run so) it then drops to an unprivileged uid (65534, `setpriv`), so it
cannot write the repository, the home dir or anything but its tmpfs; rlimits bound its address space
(RLIMIT_AS), CPU seconds, processes (RLIMIT_NPROC, counted for that uid), file size and open files, and
a wall-clock timeout kills the namespace. Not root: the same namespaces inside a user namespace
(`unshare --user --map-root-user`), with the invoking user's file permissions.

The program is read from stdin by `python -I -S` (no environment, no site-packages: the standard
library only), with the interpreter's own prefix bind-mounted read-only where the unprivileged uid
can reach it. stdout and stderr go to files capped by RLIMIT_FSIZE, so a flood cannot fill memory.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Literal

from ..errors import DynexportError

NOBODY = 65534


class SandboxError(DynexportError):
    """The sandbox cannot be set up on this machine (no unshare, namespaces not permitted)."""


@dataclass(frozen=True)
class Limits:
    """What one sandboxed program may use. Defaults defined here once."""
    seconds: float = 10.0  # wall clock, then the namespace is killed
    cpu_seconds: int = 10
    memory_mb: int = 1024  # RLIMIT_AS
    processes: int = 32  # RLIMIT_NPROC for the sandbox uid (all its sandboxes together)
    file_mb: int = 8  # RLIMIT_FSIZE: any file it writes, its stdout and stderr included
    open_files: int = 64


@dataclass(frozen=True)
class RunResult:
    status: Literal["ok", "error", "timeout", "killed"]  # killed: a signal (a limit) ended it
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float


def run_python(program: str, limits: Limits = Limits()) -> RunResult:
    """Run `program` (Python source) in the sandbox and return what it printed and how it ended."""
    cmd = _command()
    with tempfile.TemporaryDirectory(prefix="dynexport-sandbox-") as host:
        out_path, err_path = os.path.join(host, "out"), os.path.join(host, "err")
        t0 = time.perf_counter()
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=out, stderr=err, start_new_session=True,
                                    preexec_fn=lambda: _set_limits(limits), env={"PATH": "/usr/bin:/bin"})
            try:
                proc.communicate(program.encode(), timeout=limits.seconds)
                status = _status(proc.returncode)
            except subprocess.TimeoutExpired:
                _kill(proc)
                status = "timeout"
        seconds = time.perf_counter() - t0
        read = lambda p: open(p, "rb").read(limits.file_mb << 20).decode("utf-8", "replace")
        return RunResult(status, proc.returncode, read(out_path), read(err_path), seconds)


def _status(code: int) -> str:
    return "ok" if code == 0 else "killed" if code < 0 or code >= 128 else "error"


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL the process group; unshare --kill-child then takes the whole PID namespace down."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _set_limits(limits: Limits) -> None:
    mb = 1 << 20
    for what, value in ((resource.RLIMIT_AS, limits.memory_mb * mb), (resource.RLIMIT_CPU, limits.cpu_seconds),
                        (resource.RLIMIT_NPROC, limits.processes), (resource.RLIMIT_FSIZE, limits.file_mb * mb),
                        (resource.RLIMIT_NOFILE, limits.open_files), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(what, (value, value))


def _command() -> list[str]:
    """unshare … sh -c '<mount the tmpfs and the interpreter>; exec [setpriv …] python -I -S -'."""
    if not shutil.which("unshare"):
        raise SandboxError("running generated code needs util-linux `unshare` (apt install util-linux); "
                           "it is never run outside the sandbox")
    prefix = sys.base_prefix
    exe = _interpreter(prefix)
    root = os.geteuid() == 0
    drop = f"setpriv --reuid {NOBODY} --regid {NOBODY} --clear-groups " if root else ""
    setup = ("mount -t tmpfs -o size=16m,mode=1777 tmpfs /tmp && mount -t tmpfs -o size=1m tmpfs /dev/shm && "
             f"mkdir /tmp/.python && mount --bind '{prefix}' /tmp/.python && mount -o remount,bind,ro /tmp/.python && "
             f"mkdir -m 777 /tmp/work && cd /tmp/work && exec {drop}'{exe}' -I -S -")
    user = [] if root else ["--user", "--map-root-user"]
    return ["unshare", *user, "--net", "--mount", "--pid", "--fork", "--kill-child", "--", "/bin/sh", "-c", setup]


def _interpreter(prefix: str) -> str:
    """The base interpreter (not a venv's symlink) as seen inside the sandbox's bind mount."""
    name = f"python{sys.version_info.major}.{sys.version_info.minor}"
    real = os.path.join(prefix, "bin", name)
    if not os.path.isfile(real):
        raise SandboxError(f"no base interpreter at {real} (sys.base_prefix); the sandbox needs one to bind-mount")
    return os.path.join("/tmp/.python", "bin", name)


def check() -> None:
    """SandboxError unless a trivial program runs in the sandbox (called once before a batch of them)."""
    res = run_python("print(6 * 7)")
    if res.status != "ok" or res.stdout.strip() != "42":
        raise SandboxError(f"the sandbox does not run here ({res.status}): {res.stderr.strip()[-400:]}")
