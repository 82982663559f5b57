"""The sandbox for generated code: hostile candidates (hang, crash, memory hog, fork bomb, writes
outside their dir, network, output flood, escaped children) end with a status and never take the
run down or touch the host."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from dynexport.runtime.sandbox import Limits, run_python

FAST = Limits(seconds=3.0, cpu_seconds=3)


def test_runs_a_program_and_returns_its_output():
    res = run_python("import math\nprint(math.factorial(5))")
    assert res.status == "ok" and res.stdout == "120\n" and res.returncode == 0


def test_exception_is_an_error_with_its_traceback():
    res = run_python("raise ValueError('boom')")
    assert res.status == "error" and "ValueError: boom" in res.stderr


def test_hang_is_killed_at_the_time_limit():
    t0 = time.perf_counter()
    res = run_python("while True: pass", Limits(seconds=1.0, cpu_seconds=30))
    assert res.status == "timeout" and time.perf_counter() - t0 < 5


def test_sleeping_children_die_with_the_program():
    prog = ("import os, time\nfor _ in range(3):\n    if os.fork() == 0:\n        os.setsid(); time.sleep(60)\n"
            "time.sleep(60)")
    res = run_python(prog, Limits(seconds=1.0))
    assert res.status == "timeout"
    deadline, left = time.monotonic() + 5, "?"
    while left and time.monotonic() < deadline:  # the kernel tears the PID namespace down asynchronously
        left = subprocess.run(["pgrep", "-u", "65534", "-f", "python"], capture_output=True, text=True).stdout.strip()
        time.sleep(0.05)
    assert not left, f"sandbox processes survived: {left}"


def test_memory_hog_fails_inside_its_limit():
    res = run_python("x = bytearray(4 << 30)\nprint('allocated')", Limits(memory_mb=256))
    assert res.status != "ok" and "allocated" not in res.stdout and "MemoryError" in res.stderr


def test_fork_bomb_is_contained():
    prog = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    res = run_python(prog, Limits(seconds=2.0, processes=16))
    assert res.status in ("timeout", "killed")
    assert run_python("print('still fine')").stdout == "still fine\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="as root the sandbox drops to uid 65534; this checks that drop")
def test_runs_unprivileged_and_cannot_write_outside_its_dir():
    repo = Path(__file__).resolve().parents[1]
    target, home = repo / "sandbox-escape.txt", Path.home() / "sandbox-escape.txt"
    prog = (f"import os\nprint(os.getuid())\nfor p in [{str(target)!r}, {str(home)!r}]:\n"
            "    try:\n        open(p, 'w').write('x'); print('wrote', p)\n    except OSError as e:\n"
            "        print('refused', type(e).__name__)\nopen('mine.txt', 'w').write('ok'); print('own dir ok')")
    res = run_python(prog)
    assert res.stdout.splitlines()[0] == "65534" and "wrote" not in res.stdout and "own dir ok" in res.stdout
    assert not target.exists() and not home.exists()


def test_tmp_is_private_to_the_sandbox():
    marker = f"/tmp/dynexport-sandbox-marker-{os.getpid()}"
    res = run_python(f"open({marker!r}, 'w').write('x')\nimport os\nprint(os.path.exists({marker!r}))")
    assert res.stdout == "True\n" and not os.path.exists(marker)


def test_no_network():
    prog = ("import socket\ntry:\n    socket.create_connection(('1.1.1.1', 80), timeout=2)\n    print('connected')\n"
            "except OSError as e:\n    print('no network', e.errno)")
    res = run_python(prog)
    assert res.status == "ok" and res.stdout.startswith("no network")


def test_output_flood_is_capped():
    res = run_python("import sys\nwhile True: sys.stdout.write('x' * 65536)", Limits(file_mb=1, **{
        k: v for k, v in vars(FAST).items() if k != "file_mb"}))
    assert res.status in ("killed", "error", "timeout") and len(res.stdout) <= 1 << 20


def test_no_site_packages_and_no_environment(monkeypatch):
    monkeypatch.setenv("DYNEXPORT_SECRET", "leak")
    res = run_python("import os\nprint(os.environ.get('DYNEXPORT_SECRET'))\ntry:\n    import numpy\n"
                     "    print('numpy')\nexcept ImportError:\n    print('stdlib only')")
    assert res.stdout.split() == ["None", "stdlib", "only"]
