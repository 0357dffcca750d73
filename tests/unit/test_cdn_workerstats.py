"""The supervisor's merge of its cdn workers' /status snapshots (workers = N), and the config
rules of workers."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from proxy.cdn.config import CdnConfig
from proxy.cdn.workerstats import merge_status


def snap(pid, hits, misses, objects, top, policy="lru"):
    return {"pid": pid, "hits": hits, "misses": misses, "objects": objects, "bytes": objects * 100,
            "max_bytes": 1000, "policy": policy, "hit_ratio": 0.5, "evictions_by_policy": {policy: pid},
            "origins": [{"name": "a", "state": "up"}], "top_urls": top, "trace": None}


def test_counters_add_up_and_each_worker_is_kept():
    a = snap(1, 3, 1, 2, [{"url": "http://h/x", "hits": 3, "bytes": 10}])
    b = snap(2, 1, 3, 1, [{"url": "http://h/x", "hits": 1, "bytes": 10}, {"url": "http://h/y", "hits": 2, "bytes": 5}])
    m = merge_status([a, b])
    assert (m["hits"], m["misses"], m["objects"], m["bytes"], m["max_bytes"]) == (4, 4, 3, 300, 2000)
    assert m["hit_ratio"] == 0.5 and m["evictions_by_policy"] == {"lru": 3}
    assert m["top_urls"] == [{"url": "http://h/x", "hits": 4, "bytes": 10}, {"url": "http://h/y", "hits": 2, "bytes": 5}]
    assert [w["pid"] for w in m["workers"]] == [1, 2] and [w["objects"] for w in m["workers"]] == [2, 1]
    assert m["origins"] == [{"name": "a", "state": "up"}] and m["policy"] == "lru"


def test_no_worker_answered():
    m = merge_status([])
    assert m["workers"] == [] and m["hit_ratio"] == 0.0 and m["top_urls"] == []


def test_workers_config():
    assert CdnConfig(origins=["127.0.0.1:1"], workers=4).workers == 4
    for bad in ({"workers": 0}, {"workers": 65}, {"workers": 2, "cache": {"trace_file": "/tmp/x.trace"}}):
        with pytest.raises(ValidationError):
            CdnConfig(origins=["127.0.0.1:1"], **bad)
