"""`python train.py` in processes forked from a warm one: the tests' runs without the imports.

A `train.py` process spends about 10 s (more on a loaded machine) importing TensorFlow, Keras,
JAX and Hydra before it reads its command line; most of the suite's time was those imports. A
warm server (this file run as a script, one per pytest worker and backend) imports them once,
as `train.py` would (`KERAS_BACKEND` set first, TensorFlow's start-up notices silenced), and forks
a child per command. The child is a real process running `train.py` as `__main__`: its own
folder, environment, command line, stdin from /dev/null, stdout and stderr in files, exit code
from `sys.exit` (or minus the signal that killed it), atexit handlers run at its end. Only the imports are shared, and they are done before the command line is read.

What a warm child cannot show is the start of a process itself: which modules a command imports,
TensorFlow's notices while it imports, the backend chosen from the config before Keras is
imported. Tests of those run `train.py` fresh (`run_train(..., fresh=True)`), and
`tests/test_cli.py::test_a_warm_run_is_the_fresh_run` shows that both give the same files,
numbers and output.

Protocol (one JSON line each way): the client sends `{"script", "argv", "cwd", "env", "stdout",
"stderr"}`;
the server forks, answers `{"pid": ...}` and, once the child ends, `{"code": ...}`.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import json
import os
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _preload(backend: str) -> None:
    """Imports what `train.py` imports on `backend`, in the order it does."""
    sys.path[0] = str(REPO)  # this checkout's regfw, as `python REPO/train.py` has it
    import hydra  # noqa: F401
    from omegaconf import OmegaConf

    from regfw import cli
    from regfw.config import backend as backends

    backends.use(OmegaConf.create({"backend": backend}))  # sets KERAS_BACKEND, as a run does
    cli.import_backend_quietly()  # as `regfw.cli` does before training
    import keras  # noqa: F401

    from regfw.sweeps import report  # noqa: F401
    from regfw.training import trainer  # noqa: F401

    if backend == "jax":
        from regfw.training import stacked  # noqa: F401
    assert backend != "jax" or "tensorflow" not in sys.modules


def _child(request: dict) -> None:
    """Runs the request's script (`train.py`) in this (forked) process; never returns."""
    code = 1
    try:
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        stdin = os.open(os.devnull, os.O_RDONLY)
        stdout = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        stderr = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        for fd, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
            os.dup2(fd, target)
            os.close(fd)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        script = request["script"]
        sys.argv = [script, *request["argv"]]
        sys.path[0] = str(Path(script).parent)
        import runpy

        try:
            runpy.run_path(script, run_name="__main__")
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
            if not isinstance(exit_.code, int | None):
                print(exit_.code, file=sys.stderr)
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
    finally:
        # A fresh process's exit, as `Py_FinalizeEx` does it: join the non-daemon threads (and
        # run threading's exit hooks: concurrent.futures and joblib's executors stop there),
        # then the atexit handlers (logging's flush among them), then flush the streams.
        # Tearing down every module of TensorFlow and Keras (1-2 s) is left out: os._exit.
        threading._shutdown()
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def serve(backend: str) -> None:
    """Preloads `backend`'s imports, then forks a child per request read from stdin."""
    quiet = os.open(os.devnull, os.O_WRONLY)
    saved = os.dup(2)
    os.dup2(quiet, 2)  # Keras, JAX or TensorFlow notices while importing are not a test's output
    try:
        _preload(backend)
    finally:
        os.dup2(saved, 2)
    gc.collect()
    gc.freeze()  # children neither walk nor copy the preloaded objects in their collections
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"code": os.waitstatus_to_exitcode(status)}), flush=True)


class Server:
    """A warm server process for one backend, and running commands through it."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.lock = threading.Lock()
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), backend],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.pending = b""
        self._read(timeout=300)  # {"ready": true}

    def _read(self, timeout: float) -> dict:
        """The server's next answer (unbuffered: `select` must see every line still to read)."""
        fd = self.process.stdout.fileno()
        while b"\n" not in self.pending:
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                raise subprocess.TimeoutExpired("warm server", timeout)
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError(f"the warm {self.backend} server ended ({self.process.wait()})")
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return json.loads(line)

    def run(
        self, command: list[str], cwd: Path, env: dict[str, str], timeout: float, scratch: Path
    ) -> subprocess.CompletedProcess:
        """Runs `python <script> <args>` in a forked child, as `subprocess.run` would.

        Args:
            command: The script and its arguments.
            cwd: The folder to run in.
            env: The environment.
            timeout: Seconds until the child is killed and `TimeoutExpired` raised.
            scratch: A folder for the child's stdout and stderr files.

        Returns:
            The finished process, with its exit code and its output as text.
        """
        out, err = scratch / "stdout", scratch / "stderr"
        request = {"script": command[0], "argv": command[1:], "cwd": str(cwd), "env": env,
                   "stdout": str(out), "stderr": str(err)}  # fmt: skip
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        pid = self._read(timeout=60)["pid"]
        try:
            code = self._read(timeout=timeout)["code"]
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self._read(timeout=60)
            raise subprocess.TimeoutExpired([sys.executable, *command], timeout) from None
        return subprocess.CompletedProcess(
            [sys.executable, *command], code, out.read_text(), err.read_text()
        )

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


_servers: dict[str, list[Server]] = {}
_pool_lock = threading.Lock()


def run(
    command: list[str], cwd: Path, env: dict[str, str], timeout: float, backend: str, scratch: Path
) -> subprocess.CompletedProcess:
    """Runs `python <command>` through an idle warm server of `backend` (started when none is)."""
    with _pool_lock:
        idle = [s for s in _servers.get(backend, []) if s.lock.acquire(blocking=False)]
        for extra in idle[1:]:
            extra.lock.release()
    if idle:
        server = idle[0]
    else:
        server = Server(backend)
        server.lock.acquire()
        with _pool_lock:
            _servers.setdefault(backend, []).append(server)
    try:
        return server.run(command, cwd, env, timeout, scratch)
    finally:
        server.lock.release()


def close_all() -> None:
    """Ends every warm server of this process."""
    for servers in _servers.values():
        for server in servers:
            server.close()
    _servers.clear()


if __name__ == "__main__":
    serve(sys.argv[1])
