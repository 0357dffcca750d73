"""Config keys of issue 12's fault handling (max_message_bytes, [auth] login throttling,
pool.server_reuse, timeouts.query_cancel_grace): defaults, bounds, unknown values refused; and
dbadmin's reading of DROP/ALTER DATABASE statements."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.core.config import ConfigError, load_config
from proxy.dbproxy.config import DbProxyConfig
from proxy.dbproxy.dbadmin import target_database

MINIMAL = """
{head}
[primary]
address = "127.0.0.1:5432"
[backend_auth]
user = "tierproxy"
[auth]
{auth}
[auth.users.app]
password = "pw"
{tail}
"""


def _load(tmp_path: Path, head: str = "", auth: str = "", tail: str = "") -> DbProxyConfig:
    p = tmp_path / "dbproxy.toml"
    p.write_text(MINIMAL.format(head=head, auth=auth, tail=tail))
    return load_config(p, DbProxyConfig)


def test_defaults(tmp_path: Path) -> None:
    cfg = _load(tmp_path)
    assert cfg.max_message_bytes == 256 * 1024 * 1024
    assert cfg.auth.failed_login_delay_ms == 500
    assert cfg.auth.max_failed_logins_per_minute == 20
    assert cfg.pool.server_reuse == "discard"
    assert cfg.timeouts.query_cancel_grace == 2.0


def test_values_are_taken(tmp_path: Path) -> None:
    cfg = _load(tmp_path, head="max_message_bytes = 1048576",
                auth="failed_login_delay_ms = 0\nmax_failed_logins_per_minute = 0",
                tail='[pool]\nserver_reuse = "fresh"\n[timeouts]\nquery = 5\nquery_cancel_grace = 0.5')  # fmt: skip
    assert (cfg.max_message_bytes, cfg.auth.failed_login_delay_ms, cfg.auth.max_failed_logins_per_minute,
            cfg.pool.server_reuse, cfg.timeouts.query_cancel_grace) == (1048576, 0, 0, "fresh", 0.5)  # fmt: skip


@pytest.mark.parametrize(("kwargs", "where"), [
    ({"head": "max_message_bytes = 1073741825"}, "max_message_bytes"),  # over PostgreSQL's 1 GiB
    ({"head": "max_message_bytes = 100"}, "max_message_bytes"),
    ({"auth": "failed_login_delay_ms = -1"}, "auth.failed_login_delay_ms"),
    ({"auth": "max_failed_logins_per_minute = -5"}, "auth.max_failed_logins_per_minute"),
    ({"tail": '[pool]\nserver_reuse = "reset"'}, "pool.server_reuse"),
    ({"tail": "[timeouts]\nquery_cancel_grace = 0"}, "timeouts.query_cancel_grace"),
    ({"tail": "[timeouts]\ncancel_grace = 1"}, "timeouts.cancel_grace"),  # unknown key
])  # fmt: skip
def test_bad_values_are_refused_with_their_key(tmp_path: Path, kwargs: dict[str, str], where: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, **kwargs)
    assert any(where in line for line in info.value.lines), info.value.lines


@pytest.mark.parametrize(("sql", "db"), [
    ("DROP DATABASE shop", "shop"),
    ('drop database if exists "Shop 2" with (force)', "Shop 2"),
    ("/* c */ DROP DATABASE shop;", "shop"),
    ("ALTER DATABASE shop RENAME TO store", "shop"),
    ("ALTER DATABASE shop SET work_mem = '1MB'", None),
    ("ALTER TABLE shop RENAME TO store", None),
    ("DROP TABLE shop", None),
    ("DROP DATABASE", None),  # a syntax error: the server answers it
    ("DROP DATABASE a; DROP DATABASE b", None),  # refused by the server as a transaction block
])  # fmt: skip
def test_target_database(sql: str, db: str | None) -> None:
    assert target_database(sql) == db
