"""`[cache.listen]` (qcache_notify.py): what a notification's payload invalidates, and the config."""

from __future__ import annotations

import pytest

from proxy.dbproxy.config import CacheConfig
from proxy.dbproxy.qcache_notify import notify_tables


def test_notify_tables():
    assert notify_tables("products") == {"products"}
    assert notify_tables("Products, shop.cats  x") == {"products", "cats", "x"}
    assert notify_tables('"Mixed"') == {"Mixed"}
    for everything in ("", "  ", "*", "a, *", "a b;c", "1bad"):
        assert notify_tables(everything) is None, everything


def test_listen_config():
    assert CacheConfig.model_validate({}).listen is None
    cfg = CacheConfig.model_validate({"listen": {"databases": ["app"]}})
    assert cfg.listen.channel == "tierproxy_cache" and cfg.listen.databases == ["app"]
    for bad in ({}, {"databases": []}, {"databases": ["app"], "channel": "Bad-Name"},
                {"databases": ["app"], "chanel": "x"}, {"databases": [""]}):  # fmt: skip
        with pytest.raises(ValueError):
            CacheConfig.model_validate({"listen": bad})
