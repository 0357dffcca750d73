"""`tierproxy cdn` with `workers = 2`: two worker processes on one port (SO_REUSEPORT), each with its
own store, under a supervisor serving the admin port. A purge (by URL, by surrogate key) reaches
every worker's store; /status merges the workers; SIGHUP reloads them; SIGTERM drains an answer
being streamed. Real origin process, real curl, raw sockets."""

from __future__ import annotations

import os
import signal

from tests.integration import cdnproc
from tests.integration.cdnproc import purge
from tests.integration.lbproc import wait_for
from tests.integration.test_cdn import Cdn, Origin, curl
from tests.integration.test_cdn_streaming import RawClient, body_of

origin = cdnproc.origin
cdn = cdnproc.cdn_fixture(top="workers = 2", cache="max_bytes = 1048576")


def fetch_until(cdn: Cdn, origin: Origin, path: str, count: int) -> list[str]:
    """New connections (one curl each) until the origin has seen `count` requests for `path`:
    the kernel spreads connections over the workers, and each worker misses once on its own
    store. Returns the Cache-Status values seen."""
    seen = []

    def more() -> bool:
        status, headers, _ = curl(cdn, path)
        assert status == 200
        seen.append(headers["cache-status"])
        return origin.count(path.partition("?")[0])["requests"] >= count

    wait_for(more, 60, f"{count} origin requests for {path}")
    return seen


def test_each_worker_has_its_own_store_and_a_purge_reaches_every_one(cdn, origin):
    st = cdn.status()
    assert len(st["workers"]) == 2 and len({w["pid"] for w in st["workers"]}) == 2
    path = "/obj/w1?cc=max-age=300&skey=grp"
    seen = fetch_until(cdn, origin, path, 2)
    assert sum("fwd=uri-miss" in s for s in seen) == 2  # one miss per worker, hits otherwise
    st = cdn.status()
    assert st["objects"] == 2 and [w["objects"] for w in st["workers"]] == [1, 1]
    assert st["misses"] == 2 and st["hits"] == len(seen) - 2
    # By URL: gone from both stores, so each worker misses (once) again.
    assert purge(cdn, f"url=http://127.0.0.1:{cdn.port}/obj/w1%3Fcc%3Dmax-age%3D300%26skey%3Dgrp") == (
        200, {"purged": 2, "url": f"http://127.0.0.1:{cdn.port}/obj/w1?cc=max-age=300&skey=grp"})
    assert cdn.status()["objects"] == 0
    seen = fetch_until(cdn, origin, path, 4)
    assert sum("fwd=uri-miss" in s for s in seen) == 2
    # By surrogate key, the same.
    assert purge(cdn, "key=grp") == (200, {"purged": 2, "keys": ["grp"], "soft": False})
    assert cdn.status()["objects"] == 0
    fetch_until(cdn, origin, path, 6)
    assert cdn.status()["purges"] == 2


def test_sighup_reload_reaches_every_worker(cdn, origin):
    cdn.config.write_text(cdn.config.read_text().replace("max_bytes = 1048576", "max_bytes = 2097152"))
    cdn.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: [w["max_bytes"] for w in cdn.status()["workers"]] == [2097152, 2097152], 15, "the reload")
    st = cdn.status()
    assert st["max_bytes"] == 2 * 2097152 and st["reloads"] == 1
    assert curl(cdn, "/obj/w2?cc=max-age=300")[0] == 200


def test_a_purge_that_misses_a_worker_is_refused(tmp_path, origin):
    c = Cdn(tmp_path, origin, top="workers = 2")
    try:
        fetch_until(c, origin, "/obj/w3?cc=max-age=300", 2)
        pids = [w["pid"] for w in c.status()["workers"]]
        os.kill(pids[1], signal.SIGKILL)
        # One worker cannot purge: the object may still be served by it, so the purge fails loudly.
        status, _ = purge(c, "key=nothing")
        assert status == 503
        assert [w["pid"] for w in c.status()["workers"]] == pids[:1]
    finally:
        c.stop()
        c.lock.release()
        c.admin_lock.release()


def test_sigterm_drains_an_answer_being_streamed(cdn, origin):
    # Last in this module: it stops the cdn (the fixture then finds it exited with 0).
    path = "/big/drain?size=1310720&chunk=65536&delay=0.15"
    client = RawClient(cdn.port, path)
    assert client.status == 200 and client.some_body()
    cdn.proc.send_signal(signal.SIGTERM)
    assert client.rest() == body_of(1310720)  # finished, whole, after SIGTERM
    assert cdn.proc.wait(30) == 0
