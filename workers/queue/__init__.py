"""A message queue on Redis Streams with asyncio workers (docs/queue.md).

- job.py: the job codec (sans-IO); policy.py: retry/backoff decisions (pure)
- scripts.py: key names and the Lua scripts that make each step atomic
- client.py: the producer API (`QueueClient.enqueue`), stats, the dead-letter stream
- worker.py: consumers (XREADGROUP, heartbeats, XAUTOCLAIM, retries, SIGTERM drain)
- config.py: the worker's TOML model; metrics.py: /metrics; cli.py: `tierproxy queue ...`
"""

from workers.queue.client import QueueClient, QueueFull, QueueStats
from workers.queue.job import Job

__all__ = ["Job", "QueueClient", "QueueFull", "QueueStats"]
