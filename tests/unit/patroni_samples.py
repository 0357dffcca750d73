"""Samples of what a real Patroni 3.0.2 cluster (proxy/devstack/patroni.py) answers, shared by the
unit tests of the dbproxy's Patroni code (topology, switchover, failover operations)."""

from __future__ import annotations

# GET /cluster of a three-member cluster, sync mode on.
CLUSTER = {
    "members": [
        {"name": "node1", "role": "leader", "state": "running", "api_url": "http://127.0.0.1:22007/patroni",
         "host": "127.0.0.1", "port": 25509, "timeline": 3},
        {"name": "node2", "role": "replica", "state": "running", "api_url": "http://127.0.0.1:25137/patroni",
         "host": "127.0.0.1", "port": 30797, "timeline": 3, "lag": 0},
        {"name": "node3", "role": "sync_standby", "state": "running", "api_url": "http://127.0.0.1:31705/patroni",
         "host": "127.0.0.1", "port": 32342, "timeline": 3, "lag": 4096},
    ]
}  # fmt: skip
