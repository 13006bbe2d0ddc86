"""The MLflow writer process of one study execution (see :mod:`sparsearch.search.trial_log`).

Started by the driver as ``python -m sparsearch.search._mlflow_writer`` when a study starts. Reads JSON lines on
stdin: first its configuration (it then imports MLflow and opens the store while the driver prepares the data),
then the parent run's id, then ``start`` and ``finish`` requests in order; answers each on stdout with one JSON line; at the
end of its input it reports the failures it recorded and exits. Everything else it prints goes to stderr, so the
protocol stream stays clean.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main() -> int:
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout = sys.stderr  # libraries that print never reach the protocol stream

    def send(msg: dict) -> None:
        out.write(json.dumps(msg, default=str) + "\n")
        out.flush()

    first = sys.stdin.readline()
    if not first:
        return 0
    config = json.loads(first)
    from sparsearch.search.tracking import Tracker
    from sparsearch.search.trial_log import TrialRunLogger

    tracker = Tracker(config["uri"], config["experiment"], Path(config["artifact_root"]),
                      study_name=config.get("study_name"))
    try:
        tracker.connect()  # the store lock makes it wait while the driver creates a new store
    except Exception as exc:  # noqa: BLE001 - reported to the driver, which syncs the runs at the end
        send({"op": "error", "error": f"{type(exc).__name__}: {exc}"[:500]})
        for _ in sys.stdin:  # drain, so the driver never blocks writing to us
            pass
        return 1
    logger = TrialRunLogger(tracker)
    for line in sys.stdin:
        msg = json.loads(line)
        op = msg.pop("op")
        number = msg.pop("number")
        if op == "parent":  # the driver created the execution's parent run
            tracker.parent_run_id = msg["parent_run_id"]
        elif op == "start":
            send({"op": "start", "number": number, "run_id": logger.start(number, msg["params"], msg["tags"])})
        elif op == "finish":
            run_id, ok, failure = logger.finish(number, **msg)
            send({"op": "finish", "number": number, "run_id": run_id, "ok": ok, "failure": failure})
    send({"op": "failures", "failures": tracker.failures})
    return 0


if __name__ == "__main__":
    sys.exit(main())
