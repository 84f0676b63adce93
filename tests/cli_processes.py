"""Real ``mmdtok`` processes at a fraction of the start-up cost, for tests that run the
command line many times.

A new ``python -m mmdtok`` spends about 3 s importing torch before it parses its first
argument. Here one server process imports ``mmdtok.cli`` once (nothing else: no tensor
is computed, no thread started) and forks a child for each command: the child is a
process of its own (its own exit status, its own stdout and stderr file descriptors,
its own environment and working folder) that runs ``mmdtok/__main__.py`` as ``-m``
would, so an uncaught exception prints its traceback and exits 1 as in a fresh
interpreter. What a fresh interpreter does before ``mmdtok.cli`` is imported (the
``-m`` entry point, the import itself) is checked by the tests that start one.

A variable that a library reads when it is imported takes the server's value, not the
one given to the child: huggingface_hub (imported by ``mmdtok.cli``) reads
``HF_HUB_OFFLINE`` and ``HF_ENDPOINT`` so; tests of those start a fresh interpreter.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The server: reads one JSON request a line, forks, answers with the child's status.
_SERVER = r"""
import atexit, json, os, runpy, signal, sys, time, traceback
import mmdtok.cli  # the expensive part, once
import mmdtok

MAIN = os.path.join(os.path.dirname(mmdtok.__file__), "__main__.py")


def child(request):
    if request.get("file_size_limit") is not None:  # as ulimit -f: the EFBIG of a full disk
        import resource

        limit = request["file_size_limit"]
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for fd, path, mode in ((0, os.devnull, os.O_RDONLY),
                           (1, request["stdout"], os.O_WRONLY | os.O_TRUNC),
                           (2, request["stderr"], os.O_WRONLY | os.O_TRUNC)):
        target = os.open(path, mode)
        os.dup2(target, fd)
        os.close(target)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if os.environ.get("OMP_NUM_THREADS"):  # OpenMP read it when the server started
        import torch

        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    code = 0
    try:
        if request["code"] is None:
            sys.argv = [MAIN, *request["args"]]
            runpy.run_path(MAIN, run_name="__main__")
        else:  # python -c CODE ARGS
            sys.argv = ["-c", *request["args"]]
            exec(compile(request["code"], "<string>", "exec"), {"__name__": "__main__"})
    except SystemExit as stop:
        if stop.code is None:
            code = 0
        elif isinstance(stop.code, int):
            code = stop.code
        else:
            print(stop.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    try:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code & 0xFF)


for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        child(request)
    deadline = time.monotonic() + request["timeout"]
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            status = None
            break
        time.sleep(0.005)
    code = None if status is None else os.waitstatus_to_exitcode(status)
    sys.stdout.write(json.dumps({"returncode": code}) + "\n")
    sys.stdout.flush()
"""


class _Server:
    def __init__(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen([sys.executable, "-c", _SERVER], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, env=env, text=True)
        atexit.register(self.close)

    def run(self, code: str | None, args: list[str], cwd: str, env: dict[str, str],
            timeout: float, file_size_limit: int | None = None
            ) -> subprocess.CompletedProcess:
        with tempfile.TemporaryDirectory() as folder:
            out, err = Path(folder) / "stdout", Path(folder) / "stderr"
            out.touch()
            err.touch()
            request = {"code": code, "args": args, "cwd": cwd, "env": env, "timeout": timeout,
                       "stdout": str(out), "stderr": str(err),
                       "file_size_limit": file_size_limit}
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            answer = self.process.stdout.readline()
            if not answer:
                raise RuntimeError("the mmdtok process server died")
            returncode = json.loads(answer)["returncode"]
            if returncode is None:
                raise subprocess.TimeoutExpired(["mmdtok", *args], timeout)
            return subprocess.CompletedProcess(["mmdtok", *args], returncode, out.read_text(),
                                               err.read_text())

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=30)


_server: _Server | None = None


def run_mmdtok(*args: object, cwd: str | os.PathLike[str] | None = None,
               env: dict[str, str] | None = None, timeout: float = 300,
               file_size_limit: int | None = None) -> subprocess.CompletedProcess:
    """``mmdtok ARGS`` in a process of its own (see the module docstring): its exit
    status, stdout and stderr (text), as ``subprocess.run`` gives them. ``env`` is added
    to this process's environment, with one OpenMP thread as the tests' default.
    ``file_size_limit``: the largest file, in bytes, the process may write (``ulimit
    -f``): a write beyond it fails with EFBIG, as on a full disk."""
    return _run(None, args, cwd, env, timeout, file_size_limit)


def run_python(code: str, *args: object, cwd: str | os.PathLike[str] | None = None,
               env: dict[str, str] | None = None, timeout: float = 300
               ) -> subprocess.CompletedProcess:
    """``python -c CODE ARGS`` in a process of its own, forked like :func:`run_mmdtok`'s
    (mmdtok already imported)."""
    return _run(code, args, cwd, env, timeout)


def _run(code: str | None, args: tuple[object, ...], cwd: str | os.PathLike[str] | None,
         env: dict[str, str] | None, timeout: float, file_size_limit: int | None = None
         ) -> subprocess.CompletedProcess:
    global _server
    if _server is None or _server.process.poll() is not None:
        _server = _Server()
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
                   **(env or {})}
    return _server.run(code, [str(arg) for arg in args], str(cwd or os.getcwd()),
                       environment, timeout, file_size_limit)


def refused(result: subprocess.CompletedProcess, *words: str, code: int = 2) -> str:
    """Assert that a run ended with exit ``code`` and exactly one ``error:`` line on
    stderr holding every one of ``words``; returns that line."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == code, result.stderr
    assert len(errors) == 1, result.stderr
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]
