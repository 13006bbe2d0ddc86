"""A Ray worker node for tests, started the way ``ray.cluster_utils.Cluster.add_node`` does it.

Usage: ``python _hidden_node.py GCS_ADDRESS NUM_CPUS METRICS_PORT AGENT_PORT RUNTIME_ENV_PORT``. Run under
``unshare --mount`` with empty tmpfs mounts over the driver's folders, its processes (raylet, workers) cannot see
those folders. Prints ``READY <node id>`` once the node is up, then lives until it is killed (the test kills its
process group). ``ray start --address`` cannot join a loopback-only head on this machine; this can.
"""

from __future__ import annotations

import signal
import sys
import time


def main() -> None:
    import ray._private.node
    import ray._private.parameter

    gcs, cpus, metrics, agent, runtime_env = sys.argv[1], float(sys.argv[2]), *map(int, sys.argv[3:6])
    params = ray._private.parameter.RayParams(
        node_ip_address="127.0.0.1", gcs_address=gcs, num_cpus=int(cpus), num_gpus=0,
        object_store_memory=150 * 1024 * 1024, min_worker_port=0, max_worker_port=0, node_manager_port=0,
        include_log_monitor=False, metrics_export_port=metrics, dashboard_agent_listen_port=agent,
        runtime_env_agent_port=runtime_env, resources={"hidden_node": 1000.0},
    )
    node = ray._private.node.Node(params, head=False, shutdown_at_exit=True, spawn_reaper=True)
    print(f"READY {node.node_id}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # shutdown_at_exit stops the node's processes
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
