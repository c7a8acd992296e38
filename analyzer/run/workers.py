"""Worker processes that die with their parent and whose deaths are one task's failure.

`concurrent.futures.ProcessPoolExecutor` does neither: when the kernel kills one worker
(out of memory) the whole pool is broken and every pending task fails with it; its exit
handler joins a thread that waits for the tasks in progress, so Ctrl-C waits for them
(and a second Ctrl-C can hang); and its workers outlive a parent killed with SIGKILL.
Here each worker is a spawned process with its own pipe, so the parent always knows which
task a dead worker held: that task fails, a fresh worker takes the dead one's place and
the rest go on.  Stopping (an exception or Ctrl-C in the caller, or leaving the pool)
stops the tasks in progress at once.

Library code: no printing, no exits in the parent.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing import get_context
from multiprocessing.connection import wait as wait_ready

# how long stopped workers get to run their cleanups (a half-written temp file removed)
# before they are killed
STOP_GRACE_S = 2.0
# how often a worker looks whether its parent is still there where the kernel cannot say
PARENT_POLL_S = 1.0

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_SIGKILL = getattr(signal, "SIGKILL", 9)
# signals the parent keeps from a worker until the worker has set its own handlers (POSIX only)
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
_CAN_MASK = hasattr(signal, "pthread_sigmask")


@dataclass(frozen=True)
class WorkerFailure:
    """What a task gives back when its worker could not answer.

    Attributes
    ----------
    reason : str
        One line: "worker killed by SIGKILL, likely out of memory", "internal error: ...".
    detail : str
        A traceback where there is one (for --debug), else "".
    internal : bool
        True when this looks like a bug (a crash, an exception) rather than the machine's limits.
    """

    reason: str
    detail: str = ""
    internal: bool = True


def death_reason(exitcode: int | None) -> WorkerFailure:
    """Describe how a worker process ended before answering.

    Parameters
    ----------
    exitcode : int or None
        `multiprocessing.Process.exitcode`: -N for "killed by signal N".

    Returns
    -------
    WorkerFailure
        SIGKILL is what the kernel's out-of-memory killer sends (and `kill -9`), so it is
        reported as likely out of memory and not as a bug; other signals (SIGSEGV, SIGABRT)
        and exit codes are crashes.
    """
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        if -exitcode == _SIGKILL:
            return WorkerFailure(f"worker killed by {name}, likely out of memory", internal=False)
        return WorkerFailure(f"worker killed by {name}")
    return WorkerFailure(f"worker exited with code {exitcode} before answering")


def die_with_parent(parent_pid: int) -> None:
    """Make this process end when the process `parent_pid` ends, however it ends (kill -9 too).

    Parameters
    ----------
    parent_pid : int
        The pid of the parent as the parent saw it when it started this process.

    Notes
    -----
    On Linux the kernel sends SIGKILL at the parent's death (prctl PR_SET_PDEATHSIG).
    It sends it when the parent *thread* that started this process ends, so start workers
    from a thread that lives as long as the pool (WorkerPool does all its starts from the
    thread that uses it).  Everywhere, a daemon thread also polls `os.getppid()`
    (`watch_parent`): an orphan is re-parented, so its parent pid changes.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, _SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # no prctl: the poll below still works
    # the parent may have died before prctl: the kernel would never tell
    if os.getppid() != parent_pid:
        os._exit(1)
    watch_parent(parent_pid)


def watch_parent(parent_pid: int, *, interval_s: float = PARENT_POLL_S) -> threading.Thread:
    """Start a daemon thread that ends this process once its parent is no longer `parent_pid`.

    Parameters
    ----------
    parent_pid : int
        The parent to outlive by at most `interval_s`.
    interval_s : float
        Seconds between looks.

    Returns
    -------
    threading.Thread
        The started thread.
    """

    def poll() -> None:
        stop = threading.Event()
        while not stop.wait(interval_s):
            if os.getppid() != parent_pid:
                # nobody is left to read our answer; os._exit skips cleanups that could block
                os._exit(1)

    t = threading.Thread(target=poll, name="watch-parent", daemon=True)
    t.start()
    return t


def _on_stop(signum, frame) -> None:
    # SystemExit unwinds the task, so its `finally`/`except BaseException` cleanups run
    raise SystemExit(128 + signum)


def _worker_main(conn, parent_pid: int, setup, setup_args) -> None:
    die_with_parent(parent_pid)
    # Ctrl-C reaches the whole process group; the parent decides what happens to the tasks
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_stop)
    # the parent blocked both while it started us (see WorkerPool._start): a Ctrl-C pressed
    # during start-up was discarded by SIG_IGN above, a stop request runs _on_stop now
    if _CAN_MASK:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    init_failure = resources = None
    if setup is not None:
        try:
            # held here, for this worker's lifetime, and handed to every task: no module-level state
            resources = setup(*setup_args)
        except Exception as exc:  # every task of this worker then says why, instead of a respawn loop
            init_failure = WorkerFailure(
                f"worker could not start: {type(exc).__name__}: {exc}", traceback.format_exc()
            )
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return  # the parent closed the pipe: no more work
        if msg is None:
            return
        fn, args = msg
        if init_failure is not None:
            out = init_failure
        else:
            try:
                out = fn(*args) if setup is None else fn(resources, *args)
            except Exception as exc:
                out = WorkerFailure(f"internal error: {type(exc).__name__}: {exc}", traceback.format_exc())
        try:
            conn.send(out)
        except (BrokenPipeError, EOFError):
            return
        except Exception as exc:  # an answer that cannot be pickled
            conn.send(WorkerFailure(f"internal error: answer not picklable: {type(exc).__name__}: {exc}"))


class _Worker:
    __slots__ = ("process", "conn", "task")

    def __init__(self, process, conn) -> None:
        self.process = process
        self.conn = conn
        self.task: int | None = None  # index of the task it holds


class WorkerPool:
    """A fixed number of spawned worker processes that run one task at a time each.

    Parameters
    ----------
    workers : int
        How many processes.
    setup : callable, optional
        Run once in each worker before its first task (to load models); what it returns is
        that worker's resources, passed to every task it runs as ``fn(resources, *args)``
        (without a setup, tasks run as ``fn(*args)``).  Must be picklable (a module-level
        function).  If it raises, every task of that worker fails with the reason.
    setup_args : tuple
        Picklable arguments of `setup`.

    Notes
    -----
    Use it as a context manager, from one thread.  Leaving the block normally lets idle
    workers exit; leaving it with an exception (KeyboardInterrupt included) or closing an
    `imap` generator early stops the tasks in progress at once: SIGTERM (the task's
    cleanups run), then SIGKILL after `STOP_GRACE_S`.  Workers end with this process even
    when it is killed with SIGKILL (`die_with_parent`).
    """

    def __init__(self, workers: int, *, setup: Callable | None = None, setup_args: tuple = ()) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self._ctx = get_context("spawn")  # no fork after onnxruntime/BLAS threads exist
        self._setup = setup
        self._setup_args = setup_args
        self._workers: list[_Worker] = []
        self._size = workers

    def __enter__(self) -> WorkerPool:
        try:
            for _ in range(self._size):
                self._workers.append(self._start())
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.stop()

    def _start(self) -> _Worker:
        parent_conn, child_conn = self._ctx.Pipe()
        proc = self._ctx.Process(
            target=_worker_main, args=(child_conn, os.getpid(), self._setup, self._setup_args), daemon=True,
            name="analyze-worker",
        )
        # the child inherits this signal mask: a Ctrl-C during its start-up (before it can ignore
        # SIGINT) would otherwise print a KeyboardInterrupt traceback from the child
        old = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS) if _CAN_MASK else None
        try:
            proc.start()
        finally:
            if old is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, old)
        child_conn.close()
        return _Worker(proc, parent_conn)

    def _replace(self, w: _Worker) -> _Worker:
        w.conn.close()
        w.process.join()
        new = self._start()
        self._workers[self._workers.index(w)] = new
        return new

    def imap(self, fn: Callable, arg_tuples: Iterable[tuple], *, window: int | None = None) -> Iterator[object]:
        """Run `fn(*args)` (``fn(resources, *args)`` with a setup) for each tuple in the workers; yield
        the answers in input order.

        Parameters
        ----------
        fn : callable
            A module-level function (sent by reference).
        arg_tuples : iterable of tuple
            Picklable arguments, one tuple per task.
        window : int, optional
            At most this many tasks running or answered but not yet yielded (default:
            2 x workers), so a slow task does not let answers pile up without bound.

        Yields
        ------
        object
            `fn`'s return value, or a `WorkerFailure` when the worker died (killed by the
            kernel, crashed) or `fn` raised.  A dead worker is replaced and the rest go on.
        """
        tasks = list(arg_tuples)
        window = window or 2 * self._size
        answers: dict[int, object] = {}
        next_send = next_yield = 0
        try:
            while next_yield < len(tasks):
                for w in list(self._workers):
                    if next_send >= len(tasks) or next_send - next_yield >= window:
                        break
                    if w.task is None:
                        w = self._send(w, fn, tasks[next_send], next_send)
                        next_send += 1
                if next_yield in answers:
                    yield answers.pop(next_yield)
                    next_yield += 1
                    continue
                self._collect(answers)
        except BaseException:
            # an interrupt, an error in the caller or the generator closed early: stop the
            # tasks in progress now rather than wait for them
            self.stop()
            raise

    def _send(self, w: _Worker, fn: Callable, args: tuple, index: int) -> _Worker:
        try:
            w.conn.send((fn, args))
        except (BrokenPipeError, ConnectionResetError):
            # it died idle (the out-of-memory killer picks large processes, busy or not):
            # no task was lost, start another and give it this one
            w = self._replace(w)
            w.conn.send((fn, args))
        w.task = index
        return w

    def _collect(self, answers: dict[int, object]) -> None:
        """Wait until a busy worker answers or dies; record what it gave back."""
        busy = [w for w in self._workers if w.task is not None]
        ready = set(wait_ready([w.conn for w in busy] + [w.process.sentinel for w in busy]))
        for w in busy:
            if w.conn not in ready and w.process.sentinel not in ready:
                continue
            index = w.task
            try:
                # an answer sent just before dying is still in the pipe: read it first
                answered = w.conn.poll()
                out = w.conn.recv() if answered else None
            except (EOFError, OSError):
                answered = False
            if answered:
                answers[index] = out
                w.task = None
                continue
            w.process.join()
            answers[index] = death_reason(w.process.exitcode)
            self._replace(w)

    def close(self) -> None:
        """Let idle workers exit, then stop whatever is still running (nothing, after a complete `imap`)."""
        idle = [w.process for w in self._workers if w.task is None]
        for w in self._workers:
            if w.task is None:
                try:
                    w.conn.send(None)
                except OSError:
                    pass  # already gone
        _join_all(idle, STOP_GRACE_S)
        self.stop()

    def stop(self) -> None:
        """Stop every worker now: SIGTERM, then SIGKILL after `STOP_GRACE_S`; all reaped on return."""
        procs = [w.process for w in self._workers if w.process.pid is not None]
        try:
            for p in procs:
                if p.exitcode is None:
                    p.terminate()
            _join_all(procs, STOP_GRACE_S)
        finally:
            # also reached by a second Ctrl-C during the grace: then nothing waits any more
            for p in procs:
                _kill(p)
                p.join()
            for w in self._workers:
                w.conn.close()
            self._workers = []


def _join_all(procs, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))


def _kill(p) -> None:
    if p.exitcode is None:
        try:
            p.kill()
        except (OSError, ValueError):
            pass
