"""Trial child runs in MLflow, written off the search loop: by a writer process of its own, or on a thread.

MLflow's SQLAlchemy store costs ~30 ms of Python per trial child run (create the run, log parameters, log metrics,
end it). On the driver's logging thread that work shares the driver's GIL with the search loop, so a study of fast
trials ran at the speed of its logbook. :class:`TrialLog` therefore hands child runs to a writer process
(``python -m sparsearch.search._mlflow_writer``) that the driver starts and owns: a plain OS process, so it takes
no Ray worker slot (Ray kills idle workers once a node has more workers than CPUs, and a Ray actor per driver made
trial workers restart constantly when several drivers shared a small machine), and it re-imports nothing of the
user's program (unlike ``multiprocessing``'s spawn). The two talk in JSON lines over the child's stdin and stdout,
through one writer and one reader thread in the driver, so the search loop never blocks on MLflow.

The driver records each child run in the Optuna study as results come back (:func:`~sparsearch.search.records.run_key`
when the run exists: a later execution finishes that run instead of creating a second one;
:func:`~sparsearch.search.records.logged_key` once it is complete); only the driver writes to the study, in one journal append per batch of results. Whatever was not
written is written by the driver at the end of the execution (``_sync_unlogged`` in the controller).
``[tracking] writer = "thread"`` keeps everything on the driver's logging thread (one process fewer).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TypedDict

from sparsearch._types import JSONMapping
from sparsearch.search import records
from sparsearch.search.tracking import Tracker

if TYPE_CHECKING:
    from optuna.storages import BaseStorage
    from typing_extensions import Unpack

    from sparsearch.search.protocol import ReportState

__all__ = ["ChildRunEnd", "TrialLog", "TrialRunLogger"]

log = logging.getLogger("sparsearch")


class _ChildRunState(TypedDict):
    state: ReportState


class ChildRunEnd(_ChildRunState, total=False):
    """How a trial's child run ends: the keywords of :meth:`TrialRunLogger.finish` after the trial number (``state``
    is required), as :meth:`TrialLog.finish` takes them and the writer process receives them as JSON."""

    history: Sequence[Mapping[str, float]]
    metrics: JSONMapping | None
    accounting: JSONMapping | None
    error: str | None
    run_id: str | None
    tags: Mapping[str, str] | None


class _WriterReply(TypedDict, total=False):
    """One JSON line from the writer process (``python -m sparsearch.search._mlflow_writer``)."""

    op: str
    number: int
    run_id: str | None
    ok: bool
    failure: str | None
    failures: list[str]
    error: str


class TrialRunLogger:
    """Creates and finishes trial child runs (the writer process runs this; so does the thread fallback)."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self.runs: dict[int, str] = {}

    def start(self, number: int, params: JSONMapping, tags: Mapping[str, str]) -> str | None:
        run_id = self.tracker.start_trial(number, params, tags)
        if run_id is not None:
            self.runs[number] = run_id
        return run_id

    def finish(self, number: int, *, state: ReportState, history: Sequence[Mapping[str, float]] = (),
               metrics: JSONMapping | None = None, accounting: JSONMapping | None = None,
               error: str | None = None, run_id: str | None = None,
               tags: Mapping[str, str] | None = None) -> tuple[str | None, bool, str | None]:
        """End trial ``number``'s run (``run_id`` when another execution created it): ``(run_id, logged, failure)``."""
        run_id = run_id or self.runs.pop(number, None)
        seen = len(self.tracker.failures)
        ok = self.tracker.finish_trial(run_id, state=state, history=history, metrics=metrics, accounting=accounting,
                                       error=error, tags=tags)
        failure = self.tracker.failures[-1] if len(self.tracker.failures) > seen else None
        return run_id, ok, failure


class ChildRunWriter:
    """Where :class:`TrialLog` hands child runs: a writer process (:class:`ProcessWriter`) or the driver's logging
    thread (:class:`ThreadWriter`). Neither blocks the search loop; each reports what it wrote as marks for the
    study (:func:`~sparsearch.search.records.run_key` / :func:`~sparsearch.search.records.logged_key` -> run id)."""

    mode = "off"

    def attach(self, parent_run_id: str) -> None:
        """Child runs go under ``parent_run_id`` from now on."""

    def start(self, number: int, params: JSONMapping, tags: Mapping[str, str]) -> None:
        raise NotImplementedError

    def finish(self, number: int, **kwargs: Unpack[ChildRunEnd]) -> None:
        raise NotImplementedError

    def drain(self, deadline: float | None = None) -> bool:
        """Take what came back, waiting until ``deadline`` (``None``: not at all); whether the writer has ended."""
        return False

    def close(self, timeout: float) -> None:
        """Wait until every run handed over is written (or has failed); stop the writer."""


class ThreadWriter(ChildRunWriter):
    """Child runs written on the tracker's logging thread, in the driver's process; marks go to ``mark``."""

    mode = "thread"

    def __init__(self, tracker: Tracker, local: TrialRunLogger, mark: Callable[[dict[str, str]], None]) -> None:
        self._tracker, self._local, self._mark = tracker, local, mark

    def start(self, number: int, params: JSONMapping, tags: Mapping[str, str]) -> None:
        def go() -> None:
            run_id = self._local.start(number, params, tags)
            if run_id is not None:
                self._mark({records.run_key(number): run_id})

        self._tracker.submit(go)

    def finish(self, number: int, **kwargs: Unpack[ChildRunEnd]) -> None:
        def go() -> None:
            run_id, ok, failure = self._local.finish(number, **kwargs)
            if ok and run_id is not None:
                self._mark({records.logged_key(number): run_id})

        self._tracker.submit(go)


class ProcessWriter(ChildRunWriter):
    """Child runs written by ``python -m sparsearch.search._mlflow_writer``, JSON lines over its stdin and
    stdout through one sending and one receiving thread. Raises ``OSError`` when the process cannot start."""

    mode = "process"

    def __init__(self, tracker: Tracker, log_file: Path | None, *, mark: Callable[[dict[str, str]], None],
                 warn: Callable[[str], None]) -> None:
        self._mark, self._warn = mark, warn
        self.failures: list[str] = []
        """What the writer process reported as failed (its own failures, and that it could not start)."""
        self._outbox: queue.Queue[Mapping[str, object] | None] = queue.Queue()
        self._results: queue.Queue[_WriterReply | None] = queue.Queue()
        config = {"uri": tracker.uri, "experiment": tracker.experiment,
                  "artifact_root": str(tracker.artifact_root), "study_name": tracker.study_name}
        err: BinaryIO | int = subprocess.DEVNULL
        if log_file is not None:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            err = open(log_file, "ab")  # noqa: SIM115 - the child holds it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sparsearch.search._mlflow_writer"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=err, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=False)
        if not isinstance(err, int):
            err.close()
        self._stopping = False
        self._outbox.put(config)
        threading.Thread(target=self._write_loop, daemon=True, name="sparsearch-mlflow-send").start()
        self._reader = threading.Thread(target=self._read_loop, daemon=True, name="sparsearch-mlflow-receive")
        self._reader.start()

    def _write_loop(self) -> None:
        stdin = self.proc.stdin
        if stdin is None:  # pragma: no cover - Popen was given stdin=PIPE
            return
        try:
            while True:
                msg = self._outbox.get()
                if msg is None:
                    break
                stdin.write((json.dumps(msg, default=str) + "\n").encode())
                stdin.flush()
        except (OSError, ValueError):  # the child is gone: the reader sees it too
            pass
        finally:
            try:
                stdin.close()
            except OSError:
                pass

    def _read_loop(self) -> None:
        stdout = self.proc.stdout
        if stdout is not None:
            for line in stdout:
                try:
                    self._results.put(json.loads(line))
                except ValueError:
                    continue
        self._results.put(None)  # end of output

    def attach(self, parent_run_id: str) -> None:
        self._outbox.put({"op": "parent", "number": -1, "parent_run_id": parent_run_id})

    def start(self, number: int, params: JSONMapping, tags: Mapping[str, str]) -> None:
        self._outbox.put({"op": "start", "number": number, "params": dict(params), "tags": dict(tags)})

    def finish(self, number: int, **kwargs: Unpack[ChildRunEnd]) -> None:
        self._outbox.put({"op": "finish", "number": number, **kwargs})

    def drain(self, deadline: float | None = None) -> bool:
        """Record the results that came back, waiting for more until ``deadline`` (``None``: not at all); mark
        the runs in the study in one write. Returns whether the writer's output has ended."""
        marks: dict[str, str] = {}
        ended = False
        while True:
            try:
                if deadline is None:
                    msg = self._results.get_nowait()
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    msg = self._results.get(timeout=min(1.0, left))
            except queue.Empty:
                if deadline is None or not self._reader.is_alive():
                    break
                continue
            if msg is None:
                ended = True
                break
            self._take(msg, marks)
        if marks:
            self._mark(marks)
        return ended

    def _take(self, msg: _WriterReply, marks: dict[str, str]) -> None:
        op, run_id, failure = msg.get("op"), msg.get("run_id"), msg.get("failure")
        if op == "start" and run_id:
            marks[records.run_key(msg["number"])] = run_id
        elif op == "finish":
            if msg.get("ok") and run_id:
                marks[records.logged_key(msg["number"])] = run_id
            elif failure:
                self._warn(failure)
        elif op == "failures":
            self.failures = list(msg.get("failures", []))
        elif op == "error":  # the writer process could not start (e.g. the store went away)
            self.failures.append(str(msg.get("error")))
            self._warn(str(msg.get("error")))

    def close(self, timeout: float, *, live: bool = True) -> None:
        """Let the child finish its queue, report its failures and exit (``live``: it is still running)."""
        if live:
            self._outbox.put(None)
            if not self.drain(time.monotonic() + timeout):
                log.warning("the MLflow writer process did not finish within %.0f s; the rest is synced now",
                            timeout)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.returncode not in (0, None) and not self.failures:
            self.failures.append(f"MLflow writer process exited with status {self.proc.returncode}")


class TrialLog:
    """The driver's handle on trial child runs (see the module docstring). Safe to use when tracking is off."""

    def __init__(self, tracker: Tracker, *, use_process: bool = True, log_file: Path | None = None) -> None:
        """Start the writer process now (its imports and store connection overlap the study's start-up)."""
        self._tracker = tracker
        self._storage: BaseStorage | None = None
        self._study_id = 0
        self._warned = False
        self._thread = ThreadWriter(tracker, TrialRunLogger(tracker), self._mark)
        self._process: ProcessWriter | None = None
        """The writer process while it runs."""
        self._ended: ProcessWriter | None = None
        """The writer process once it ended by itself (its status and failures are read at :meth:`close`)."""
        self.enabled = False
        self.mode = "off"
        """Where child runs are written: ``process``, ``thread`` (the driver's logging thread) or ``off``."""
        if tracker.enabled and use_process:
            try:
                self._process = ProcessWriter(tracker, log_file, mark=self._mark, warn=self._warn)
            except OSError as exc:  # pragma: no cover - then the driver's logging thread does it
                log.debug("no MLflow writer process (%s); logging on the driver's thread", exc)

    @property
    def _writer(self) -> ChildRunWriter:
        return self._process if self._process is not None else self._thread

    def attach(self, storage: BaseStorage, study_id: int) -> None:
        """Begin logging into the tracker's parent run (once it exists), marking runs in this study."""
        self._storage, self._study_id = storage, study_id
        parent = self._tracker.parent_run_id
        self.enabled = self._tracker.enabled and parent is not None
        if not self.enabled or parent is None:
            self.close()
            return
        self._writer.attach(parent)
        self.mode = self._writer.mode

    # -- what the controller calls ---------------------------------------------------------------------------------
    def start(self, number: int, params: JSONMapping, tags: Mapping[str, str]) -> None:
        """Create trial ``number``'s child run (status RUNNING) with its parameters; never blocks."""
        if not self.enabled:
            return
        self.poll()
        self._writer.start(number, params, tags)

    def finish(self, number: int, **kwargs: Unpack[ChildRunEnd]) -> None:
        """End trial ``number``'s child run; keywords as :meth:`TrialRunLogger.finish`; never blocks."""
        if not self.enabled:
            return
        self.poll()
        self._writer.finish(number, **kwargs)

    def poll(self) -> None:
        """Record the results that came back, without waiting. If the writer process has ended (a crash, the OOM
        killer), the driver's logging thread takes over; what was lost in between is synced at the end."""
        if self._writer.drain() and self._process is not None:
            ended, self._process = self._process, None
            self._ended = ended
            code = ended.proc.poll()
            ended.failures.append(f"MLflow writer process ended (status {code})")
            self._warn(f"the MLflow writer process ended (status {code}); the driver writes the rest")
            self.mode = "thread"

    def _warn(self, failure: str) -> None:
        if self.enabled and not self._warned:  # before attach, the driver's own connection reports problems
            log.warning("MLflow logging failed (%s); trials go on and are kept in Optuna storage", failure[:200])
            self._warned = True

    def _mark(self, marks: dict[str, str]) -> None:
        try:
            # one journal append for the batch (before attach: no storage, an error counted below)
            records.mark_runs(self._storage, self._study_id, marks)  # type: ignore[arg-type]  # as above
        except Exception as exc:  # the study's storage is down: the run exists, the next execution finishes it
            self._tracker.failures.append(f"mark child runs in the study: {type(exc).__name__}")

    def close(self, timeout: float = 300.0) -> None:
        """Wait until every child run handed over is written (or has failed); stop the writer process."""
        self._tracker.flush()
        live, ended = self._process, self._ended
        self._process = self._ended = None
        writer = live or ended
        if writer is None:
            return
        writer.close(timeout, live=live is not None)
        self._tracker.failures.extend(writer.failures)
        writer.failures = []
