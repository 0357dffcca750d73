"""The admin guard's decisions (proxy/core/adminguard.py) and backend address policy
(proxy/lb/netpolicy.py), as pure functions."""

from __future__ import annotations

import pytest

from proxy.core.adminguard import AdminGuard, read_token
from proxy.lb.netpolicy import address_refusal, parse_networks

JSON = "application/json; charset=utf-8"


@pytest.mark.parametrize("host", ["127.0.0.1:9080", "localhost:9080", "LOCALHOST", "[::1]:9080",
                                  "10.1.2.3:8000", "admin.localhost:9080", "lb1.internal:9080"])
def test_hosts_that_cannot_be_a_rebound_name_pass(host: str) -> None:
    guard = AdminGuard("127.0.0.1", allowed_hosts=["lb1.internal"])
    assert guard.check("POST", host, None, JSON, None) is None


@pytest.mark.parametrize("host", [None, "", "evil.example:9080", "127.0.0.1.evil.example", "localhost.evil.example"])
def test_other_names_are_refused_for_reads_and_changes(host: str | None) -> None:
    guard = AdminGuard("127.0.0.1")
    assert guard.check("GET", host, None, None, None)[0] == 403
    assert guard.check("DELETE", host, None, JSON, None)[0] == 403


def test_origin_must_be_the_api_itself_and_changes_must_be_json() -> None:
    guard = AdminGuard("127.0.0.1")
    assert guard.check("POST", "127.0.0.1:9080", "http://127.0.0.1:9080", JSON, None) is None
    assert guard.check("POST", "127.0.0.1:9080", "null", JSON, None)[0] == 403
    assert guard.check("POST", "127.0.0.1:9080", "http://127.0.0.1:9081", JSON, None)[0] == 403
    for ct in (None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        assert guard.check("POST", "127.0.0.1:9080", None, ct, None)[0] == 415
    assert guard.check("GET", "127.0.0.1:9080", None, "text/plain", None) is None


def test_token_needed_for_changes_only(tmp_path) -> None:
    path = tmp_path / "t"
    path.write_text("  abc123  \n")
    guard = AdminGuard("127.0.0.1", token=read_token(path))
    assert guard.check("GET", "127.0.0.1:9080", None, None, None) is None
    assert guard.check("POST", "127.0.0.1:9080", None, JSON, None)[0] == 401
    assert guard.check("POST", "127.0.0.1:9080", None, JSON, "Bearer abc12")[0] == 401
    assert guard.check("POST", "127.0.0.1:9080", None, JSON, "bearer abc123") is None
    path.write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        read_token(path)


def test_backend_address_policy() -> None:
    assert address_refusal("10.0.0.5", None) is None
    assert address_refusal("127.0.0.1", None) is None
    assert "link-local" in address_refusal("169.254.169.254", None)
    assert "link-local" in address_refusal("fe80::a", None)
    assert "unspecified" in address_refusal("::", None)
    nets = parse_networks(["10.0.0.0/8", "169.254.170.0/24"])
    assert address_refusal("10.9.9.9", nets) is None
    assert address_refusal("169.254.170.2", nets) is None  # listed explicitly: allowed
    assert "outside" in address_refusal("169.254.169.254", nets)
    assert "outside" in address_refusal("::1", nets)
    assert "unspecified" in address_refusal("0.0.0.0", parse_networks(["0.0.0.0/0"]))
