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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sparsearch.search import records
from sparsearch.search.tracking import Tracker

__all__ = ["TrialLog", "TrialRunLogger"]

log = logging.getLogger("sparsearch")


class TrialRunLogger:
    """Creates and finishes trial child runs (the writer process runs this; so does the thread fallback)."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self.runs: dict[int, str] = {}

    def start(self, number: int, params: Mapping[str, Any], tags: Mapping[str, str]) -> str | None:
        run_id = self.tracker.start_trial(number, params, tags)
        if run_id is not None:
            self.runs[number] = run_id
        return run_id

    def finish(self, number: int, *, state: str, history: Sequence[Mapping[str, float]] = (),
               metrics: Mapping[str, Any] | None = None, accounting: Mapping[str, Any] | None = None,
               error: str | None = None, run_id: str | None = None,
               tags: Mapping[str, str] | None = None) -> tuple[str | None, bool, str | None]:
        """End trial ``number``'s run (``run_id`` when another execution created it): ``(run_id, logged, failure)``."""
        run_id = run_id or self.runs.pop(number, None)
        seen = len(self.tracker.failures)
        ok = self.tracker.finish_trial(run_id, state=state, history=history, metrics=metrics, accounting=accounting,
                                       error=error, tags=tags)
        failure = self.tracker.failures[-1] if len(self.tracker.failures) > seen else None
        return run_id, ok, failure


class TrialLog:
    """The driver's handle on trial child runs (see the module docstring). Safe to use when tracking is off."""

    def __init__(self, tracker: Tracker, *, use_process: bool = True, log_file: Path | None = None) -> None:
        """Start the writer process now (its imports and store connection overlap the study's start-up)."""
        self._tracker = tracker
        self._storage: Any = None
        self._study_id = 0
        self._local = TrialRunLogger(tracker)
        self._proc: subprocess.Popen | None = None
        self._outbox: queue.Queue = queue.Queue()
        self._results: queue.Queue = queue.Queue()
        self._reader: threading.Thread | None = None
        self._warned = False
        self._child_failures: list[str] = []
        self._ended: subprocess.Popen | None = None
        self.enabled = False
        self.mode = "off"
        """Where child runs are written: ``process``, ``thread`` (the driver's logging thread) or ``off``."""
        if tracker.enabled and use_process:
            self._start_process(log_file)

    def attach(self, storage: Any, study_id: int) -> None:
        """Begin logging into the tracker's parent run (once it exists), marking runs in this study."""
        self._storage, self._study_id = storage, study_id
        self.enabled = self._tracker.enabled and self._tracker.parent_run_id is not None
        if not self.enabled:
            self.close()
            return
        if self._proc is not None:
            self._outbox.put({"op": "parent", "number": -1, "parent_run_id": self._tracker.parent_run_id})
        self.mode = "process" if self._proc is not None else "thread"

    # -- the writer process ----------------------------------------------------------------------------------------
    def _start_process(self, log_file: Path | None) -> None:
        t = self._tracker
        config = {"uri": t.uri, "experiment": t.experiment, "artifact_root": str(t.artifact_root),
                  "study_name": t.study_name}
        try:
            err: Any = subprocess.DEVNULL
            if log_file is not None:
                log_file.parent.mkdir(parents=True, exist_ok=True)
                err = open(log_file, "ab")  # noqa: SIM115 - the child holds it
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "sparsearch.search._mlflow_writer"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=err, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=False)
            if log_file is not None:
                err.close()
        except OSError as exc:  # pragma: no cover - then the driver's logging thread does it
            log.debug("no MLflow writer process (%s); logging on the driver's thread", exc)
            self._proc = None
            return
        self._outbox.put(config)
        threading.Thread(target=self._write_loop, daemon=True, name="sparsearch-mlflow-send").start()
        self._reader = threading.Thread(target=self._read_loop, daemon=True, name="sparsearch-mlflow-receive")
        self._reader.start()

    def _write_loop(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdin is not None
        try:
            while True:
                msg = self._outbox.get()
                if msg is None:
                    break
                proc.stdin.write((json.dumps(msg, default=str) + "\n").encode())
                proc.stdin.flush()
        except (OSError, ValueError):  # the child is gone: the reader sees it too
            pass
        finally:
            try:
                proc.stdin.close()
            except OSError:
                pass

    def _read_loop(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        for line in proc.stdout:
            try:
                self._results.put(json.loads(line))
            except ValueError:
                continue
        self._results.put(None)  # end of output

    # -- what the controller calls ---------------------------------------------------------------------------------
    def start(self, number: int, params: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        """Create trial ``number``'s child run (status RUNNING) with its parameters; never blocks."""
        if not self.enabled:
            return
        self.poll()
        if self._proc is not None:
            self._outbox.put({"op": "start", "number": number, "params": dict(params), "tags": dict(tags)})
        else:
            def go() -> None:
                run_id = self._local.start(number, params, tags)
                if run_id is not None:
                    self._mark({records.run_key(number): run_id})

            self._tracker.submit(go)

    def finish(self, number: int, **kwargs: Any) -> None:
        """End trial ``number``'s child run; keywords as :meth:`TrialRunLogger.finish`; never blocks."""
        if not self.enabled:
            return
        self.poll()
        if self._proc is not None:
            self._outbox.put({"op": "finish", "number": number, **kwargs})
        else:
            def go() -> None:
                run_id, ok, failure = self._local.finish(number, **kwargs)
                if ok:
                    self._mark({records.logged_key(number): run_id})

            self._tracker.submit(go)

    def poll(self) -> None:
        """Record the results that came back, without waiting. If the writer process has ended (a crash, the OOM
        killer), the driver's logging thread takes over; what was lost in between is synced at the end."""
        if self._drain() and self._proc is not None:
            proc, self._proc = self._proc, None
            self._ended = proc
            code = proc.poll()
            self._child_failures.append(f"MLflow writer process ended (status {code})")
            self._warn(f"the MLflow writer process ended (status {code}); the driver writes the rest")
            self.mode = "thread"

    def _drain(self, deadline: float | None = None) -> bool:
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
                if deadline is None or self._reader is None or not self._reader.is_alive():
                    break
                continue
            if msg is None:
                ended = True
                break
            self._take(msg, marks)
        if marks:
            self._mark(marks)
        return ended

    def _take(self, msg: dict[str, Any], marks: dict[str, str]) -> None:
        op = msg.get("op")
        if op == "start" and msg.get("run_id"):
            marks[records.run_key(msg["number"])] = msg["run_id"]
        elif op == "finish":
            if msg.get("ok") and msg.get("run_id"):
                marks[records.logged_key(msg["number"])] = msg["run_id"]
            elif msg.get("failure"):
                self._warn(msg["failure"])
        elif op == "failures":
            self._child_failures = list(msg.get("failures", []))
        elif op == "error":  # the writer process could not start (e.g. the store went away)
            self._child_failures.append(str(msg.get("error")))
            self._warn(str(msg.get("error")))

    def _warn(self, failure: str) -> None:
        if self.enabled and not self._warned:  # before attach, the driver's own connection reports problems
            log.warning("MLflow logging failed (%s); trials go on and are kept in Optuna storage", failure[:200])
            self._warned = True

    def _mark(self, marks: dict[str, str]) -> None:
        try:
            records.mark_runs(self._storage, self._study_id, marks)  # one journal append for the batch
        except Exception as exc:  # the study's storage is down: the run exists, the next execution finishes it
            self._tracker.failures.append(f"mark child runs in the study: {type(exc).__name__}")

    def close(self, timeout: float = 300.0) -> None:
        """Wait until every child run handed over is written (or has failed); stop the writer process."""
        self._tracker.flush()
        live = self._proc is not None
        proc = self._proc or self._ended
        self._proc = self._ended = None
        if proc is None:
            return
        if live:
            self._outbox.put(None)  # the child finishes its queue, reports its failures and exits
            if not self._drain(time.monotonic() + timeout):
                log.warning("the MLflow writer process did not finish within %.0f s; the rest is synced now",
                            timeout)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.returncode not in (0, None) and not self._child_failures:
            self._child_failures.append(f"MLflow writer process exited with status {proc.returncode}")
        self._tracker.failures.extend(self._child_failures)
        self._child_failures = []
