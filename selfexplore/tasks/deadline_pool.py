"""Run a function in worker processes, each call bounded in wall time by killing the process that overruns.

Symbolic answer checking (sympy) can take unbounded time on adversarial model output: `9^{9^{9}}` makes Python
compute a 370-million-digit integer inside one C call, which no exception or signal handler can interrupt. Grading
also runs inside Ray actor threads, where SIGALRM (math-verify's own timeout) is not allowed. The only bound that
holds in every thread and for every input is a separate process that is killed when its deadline passes.

Each worker is a pair of processes started with `python -m selfexplore.tasks.deadline_pool MODULE NAME` (not
`multiprocessing`, whose children re-import the caller's `__main__`, and whose `fork` is unsafe in a multi-threaded
caller): a single-threaded *template* imports MODULE once and forks a *server* that answers calls over the
template's stdin/stdout, one JSON line each way. A server that overruns is killed by the caller; the template forks
a fresh one in milliseconds, already holding the imported module, so a timeout costs the next call nothing.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import resource
import select
import signal
import subprocess
import sys
import threading
import time

STARTUP_TIMEOUT_S = 120.0
"""How long a new worker may take to import its module (sympy: about a second on an idle core)."""

WORKER_MEMORY_BYTES = 4 << 30
"""Address-space cap of a worker: a runaway computation fails with MemoryError instead of swapping the machine."""


class WorkerError(RuntimeError):
    """The function raised in the worker, or the worker died during the call; the message says which."""


class WorkerStartError(RuntimeError):
    """No worker could be started (the module does not import, no processes left): a setup problem, not an input's."""


class _Worker:
    """The caller's handle on one template process and its current server."""

    def __init__(self, module: str, name: str):
        # The worker imports from the same places as this process, installed or not.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", __name__, module, name],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
        )
        self.label = f"{module}.{name}"
        self._buffer = b""
        self._server_pid = None  # known once the current server has said it is ready
        self._starting_since = time.monotonic()  # when the current server (or the whole worker) was started
        self._calls = 0

    @property
    def ready(self) -> bool:
        return self._server_pid is not None

    def wait_ready(self, deadline: float) -> None:
        """Until a server is up: TimeoutError at `deadline` (the worker may still serve a later call),
        WorkerStartError if the template died or took longer than STARTUP_TIMEOUT_S to start."""
        give_up = self._starting_since + STARTUP_TIMEOUT_S
        while self._server_pid is None:
            try:
                message = self._read(min(deadline, give_up))
            except TimeoutError:
                if time.monotonic() < give_up:
                    raise
                raise WorkerStartError(f"{self.label}: worker did not start in {STARTUP_TIMEOUT_S:g}s") from None
            except WorkerError as e:
                raise WorkerStartError(f"{self.label}: worker did not start: {e}") from None
            if message[0] == "ready":  # anything else is a late reply of a server killed at its deadline
                self._server_pid = message[1]

    def call(self, args: tuple, deadline: float):
        self._calls += 1
        try:
            self.process.stdin.write(json.dumps([self._calls, args]).encode() + b"\n")
            self.process.stdin.flush()
        except OSError as e:  # the template has exited
            raise WorkerError(f"{self.label}: worker is gone ({e})") from None
        message = self._read(deadline)
        if message[0] == "ready":  # the server died mid-call (a crash in C code) and the template replaced it
            self._server_pid = message[1]
            raise WorkerError(f"{self.label}: worker died during the call")
        status, call, value = message
        if call != self._calls:  # out of step: start over with a fresh server
            self.kill_server()
            raise WorkerError(f"{self.label}: reply to call {call} while waiting for call {self._calls}")
        if status != "ok":
            raise WorkerError(value)  # the function raised; the server is fine
        return value

    def kill_server(self) -> None:
        """Stop the current computation; the template starts the next server."""
        if self._server_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._server_pid, signal.SIGKILL)
            self._server_pid = None
            self._starting_since = time.monotonic()

    def kill(self) -> None:
        self.kill_server()
        self.process.kill()
        self.process.wait()
        with contextlib.suppress(OSError):
            self.process.stdin.close()
        self.process.stdout.close()

    def _read(self, deadline: float) -> list:
        """The next JSON line from the worker; TimeoutError past `deadline`, WorkerError if the template exited."""
        out = self.process.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            if select.select([out], [], [], remaining)[0]:
                chunk = os.read(out, 1 << 16)
                if not chunk:
                    raise WorkerError(f"{self.label}: worker exited with code {self.process.wait()}")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError:
            self.kill_server()
            raise WorkerError(f"{self.label}: garbled reply {line[:80]!r}") from None


class DeadlinePool:
    """`call(*args, timeout=s)` runs `module.name(*args)` (JSON-serialisable in and out) in a worker process and
    returns its result, or raises `TimeoutError` once `s` seconds have passed since the call (waiting for a free
    or starting worker included; an overrunning computation is killed) or `WorkerError`. Thread-safe: the pool
    grows to one worker per concurrent caller, up to `max_workers`. The function is named rather than passed so
    that the caller never imports its module (sympy); a `warm_up()` in that module runs once per worker.
    """

    def __init__(self, module: str, name: str, max_workers: int | None = None):
        self._module = module
        self._name = name
        self._max_workers = max_workers or os.cpu_count() or 1
        self._cond = threading.Condition()
        self._reset()

    def _reset(self) -> None:
        # Worker handles do not survive a fork of the calling process: a forked child starts its own workers.
        self._pid = os.getpid()
        self._idle: list[_Worker] = []
        self._n_workers = 0

    def call(self, *args, timeout: float):
        deadline = time.monotonic() + timeout
        worker = self._acquire(deadline, timeout)
        waiting_for = "a worker to start"
        try:
            worker.wait_ready(deadline)
            waiting_for = "the result"
            return worker.call(args, deadline)
        except TimeoutError:
            worker.kill_server()
            raise TimeoutError(f"waited {timeout:g}s for {waiting_for}") from None
        except WorkerError:
            raise
        except WorkerStartError:
            worker.kill()
            raise
        except BaseException:  # KeyboardInterrupt mid-call: the server's state is unknown
            worker.kill_server()
            raise
        finally:
            if worker.process.poll() is None:
                self._release(worker)
            else:  # the template is gone: the next call starts a new worker
                worker.kill()
                self._forget()

    def _acquire(self, deadline: float, timeout: float) -> _Worker:
        with self._cond:
            if self._pid != os.getpid():
                self._reset()
            while not self._idle and self._n_workers >= self._max_workers:
                if not self._cond.wait(deadline - time.monotonic()):
                    raise TimeoutError(f"waited {timeout:g}s for a free worker")
            if self._idle:
                # A ready worker first: one still starting would spend this call's time budget.
                worker = next((w for w in reversed(self._idle) if w.ready), self._idle[-1])
                self._idle.remove(worker)
                return worker
            self._n_workers += 1
        try:
            return _Worker(self._module, self._name)
        except OSError as e:
            self._forget()
            raise WorkerStartError(f"cannot start a worker for {self._module}.{self._name}: {e}") from None

    def _release(self, worker: _Worker) -> None:
        with self._cond:
            self._idle.append(worker)
            self._cond.notify()

    def _forget(self) -> None:
        with self._cond:
            self._n_workers -= 1
            self._cond.notify()

    def close(self) -> None:
        """Stop the idle workers now rather than at interpreter exit (tests and benchmarks)."""
        with self._cond:
            idle, self._idle = self._idle, []
            self._n_workers -= len(idle)
        for worker in idle:
            worker.kill()


# ------------------------------------------------------------------------------------------------- worker side


def _template(module: str, name: str) -> None:
    """Import the function once, then keep one server alive: fork it, wait for it to end, fork the next."""
    caller = os.getppid()
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = WORKER_MEMORY_BYTES if hard == resource.RLIM_INFINITY else min(WORKER_MEMORY_BYTES, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    # Replies get a private copy of stdout; anything the library prints goes to stderr instead of the protocol.
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    imported = importlib.import_module(module)
    func = getattr(imported, name)
    if warm_up := getattr(imported, "warm_up", None):
        warm_up()  # lazy imports and parser tables, done once here instead of in every forked server
    while True:
        pid = os.fork()
        if pid == 0:
            try:
                _server(func, replies)
            finally:
                os._exit(0)  # never return into the template's loop
        while not (ended := os.waitpid(pid, os.WNOHANG))[0]:
            if os.getppid() != caller:  # the caller died mid-call: nobody will kill the server at its deadline
                os.kill(pid, signal.SIGKILL)
                return
            time.sleep(0.2)
        if os.WIFEXITED(ended[1]):  # the caller closed the pipe: done. (Killed servers are replaced.)
            return


def _server(func, replies) -> None:
    """One JSON `[call, args]` per stdin line -> one `["ok", call, result]` / `["error", call, text]` line."""
    try:
        print(json.dumps(["ready", os.getpid()]), file=replies, flush=True)
        for line in sys.stdin:
            call, args = json.loads(line)
            try:
                reply = ["ok", call, func(*args)]
            except Exception as e:  # RecursionError, MemoryError, ...: the caller decides; the server lives on
                reply = ["error", call, f"{type(e).__name__}: {str(e)[:300]}"]
            print(json.dumps(reply), file=replies, flush=True)
    except BrokenPipeError:  # the caller has gone
        pass


if __name__ == "__main__":
    _template(*sys.argv[1:3])
