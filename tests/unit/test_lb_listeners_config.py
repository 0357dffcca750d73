"""[[listeners]], TLS, PROXY protocol and admin TLS settings: validated at load with located
errors; `tierproxy check-config` refuses what the daemon would refuse."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from proxy.core.config import ConfigError, load_config
from proxy.lb.config import LbConfig
from proxy.lb.tlsterm import match_name
from tests.integration.tlsutil import make_ca

POOL = '[pools.web]\n[[pools.web.backends]]\nname = "w1"\naddress = "127.0.0.1:8001"\n'


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    ca = make_ca(tmp_path_factory.mktemp("pki"))
    return ca, ca.issue("site", ["site.test", "*.site.test"]), ca.issue("other", ["other.test"])


def load(tmp_path: Path, text: str) -> LbConfig:
    p = tmp_path / "lb.toml"
    p.write_text(text)
    return load_config(p, LbConfig)


def errors(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    return info.value.lines


def https(pair, extra: str = "", tls_extra: str = "") -> str:
    return (f'[[listeners]]\nname = "s"\naddress = "127.0.0.1:8443"\nprotocol = "https"\n{extra}'
            f'[listeners.tls]\n{tls_extra}certificates = [{{ cert_file = "{pair.cert}", key_file = "{pair.key}" }}]\n')  # fmt: skip


def test_listen_alone_is_one_plain_listener(tmp_path):
    cfg = load(tmp_path, 'listen = "127.0.0.1:8080"\n' + POOL)
    [lst] = cfg.all_listeners
    assert (lst.name, lst.address, lst.protocol) == ("default", "127.0.0.1:8080", "http")


def test_several_listeners_load(tmp_path, pki):
    _ca, site, _other = pki
    text = ('[[listeners]]\nname = "p"\naddress = "127.0.0.1:8080"\nredirect_https = true\n'
            + https(site, "hsts_max_age = 60\n") + POOL)  # fmt: skip
    cfg = load(tmp_path, text)
    assert [x.name for x in cfg.all_listeners] == ["p", "s"]
    assert cfg.all_listeners[1].tls.certificates[0].names() == ["site.test", "*.site.test"]


def test_listener_errors_are_located(tmp_path, pki):
    _ca, site, other = pki
    assert errors(tmp_path, 'listen = "127.0.0.1:8080"\n' + https(site) + POOL) == [
        "lb.toml: listen: give either listen or [[listeners]], not both"]
    assert errors(tmp_path, '[[listeners]]\nname = "s"\naddress = "127.0.0.1:8443"\nprotocol = "https"\n' + POOL) == [
        "lb.toml: listeners[0].tls: protocol 'https' needs a [listeners.tls] table with certificates"]
    assert errors(tmp_path, https(site, "colour = 1\n") + POOL) == ["lb.toml: listeners[0].colour: unknown key"]
    assert errors(tmp_path, https(site, "routes = [{ pool = 'nope' }]\n") + POOL) == [
        "lb.toml: listeners[0].routes[0].pool: no pool named 'nope'"]
    assert errors(tmp_path, '[[listeners]]\nname = "p"\naddress = "127.0.0.1:8080"\nhsts_max_age = 5\n' + POOL) == [
        "lb.toml: listeners[0].hsts_max_age: HSTS is sent only over https (RFC 6797 7.2)"]
    assert errors(tmp_path, '[[listeners]]\nname = "p"\naddress = "127.0.0.1:8080"\nhttp2 = true\n' + POOL) == [
        "lb.toml: listeners[0].http2: HTTP/2 is offered by ALPN on https listeners only"]
    assert errors(tmp_path, '[[listeners]]\nname = "p"\naddress = "127.0.0.1:8080"\nh2c = true\nredirect_https = true\n' + POOL) == [
        "lb.toml: listeners[0].h2c: HTTP/2 prior knowledge is for a plain http listener that serves (no redirect_https)"]
    assert errors(tmp_path, '[[listeners]]\nname = "p"\naddress = "127.0.0.1:8080"\nproxy_protocol = true\n' + POOL) == [
        "lb.toml: listeners[0].proxy_protocol_from: name the networks PROXY headers may come from"]
    two = https(site) + https(site).replace('name = "s"', 'name = "t"')
    assert errors(tmp_path, two + POOL) == ["lb.toml: listeners[1]: listener name and address must be unique"]
    # a key that is not the certificate's
    bad = https(site).replace(str(site.key), str(other.key))
    [line] = errors(tmp_path, bad + POOL)
    assert line.startswith("lb.toml: listeners[0].tls.certificates[0]: cannot use cert_file") and "KEY_VALUES_MISMATCH" in line
    [line] = errors(tmp_path, https(site, tls_extra='ciphers = "NOPE-CIPHER"\n') + POOL)
    assert line == "lb.toml: listeners[0].tls.ciphers: no usable cipher in 'NOPE-CIPHER'"


def test_backend_tls_and_proxy_protocol_options(tmp_path, pki):
    ca, _site, other = pki
    text = POOL.replace("[pools.web]\n", '[pools.web]\nproxy_protocol = "v2"\n') + f'[pools.web.tls]\nca_file = "{ca.cert}"\nserver_name = "b.test"\n'
    cfg = load(tmp_path, 'listen = "127.0.0.1:8080"\n' + text)
    assert cfg.pools["web"].proxy_protocol == "v2" and cfg.pools["web"].tls.server_name == "b.test"
    assert errors(tmp_path, POOL + f'[pools.web.tls]\ncert_file = "{other.cert}"\n') == [
        "lb.toml: pools.web.tls.cert_file: a client certificate needs both cert_file and key_file"]
    assert errors(tmp_path, POOL.replace("[pools.web]\n", '[pools.web]\nproxy_protocol = "v3"\n'))[0].startswith("lb.toml: pools.web.proxy_protocol: Input should be")


def test_admin_beyond_loopback_needs_tls_and_client_certs_or_a_token(tmp_path, pki):
    ca, site, _other = pki
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    refusal = ("lb.toml: admin.address: 0.0.0.0:9080 is not loopback: it needs [admin.tls] and either "
               "admin.tls.client_ca_file (client certificates) or admin.token_file")
    assert errors(tmp_path, '[admin]\naddress = "0.0.0.0:9080"\n' + POOL) == [refusal]
    assert errors(tmp_path, f'[admin]\naddress = "0.0.0.0:9080"\ntoken_file = "{token}"\n' + POOL) == [refusal]
    tls = f'[admin.tls]\ncert_file = "{site.cert}"\nkey_file = "{site.key}"\n'
    assert errors(tmp_path, '[admin]\naddress = "0.0.0.0:9080"\n' + tls + POOL) == [refusal]
    load(tmp_path, f'[admin]\naddress = "0.0.0.0:9080"\ntoken_file = "{token}"\n' + tls + POOL)
    load(tmp_path, '[admin]\naddress = "0.0.0.0:9080"\n' + tls + f'client_ca_file = "{ca.cert}"\n' + POOL)
    # check-config says the same and exits 2
    p = tmp_path / "lb.toml"
    p.write_text('[admin]\naddress = "0.0.0.0:9080"\n' + POOL)
    run = subprocess.run([sys.executable, "-m", "proxy.cli", "check-config", str(p)], capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert run.returncode == 2 and refusal in run.stderr, run.stderr


def test_sni_names_match_exactly_or_one_wildcard_label():
    names = {"a.test": 0, "*.b.test": 1, "x.b.test": 2}
    assert match_name(names, "A.test.") == 0
    assert match_name(names, "x.b.test") == 2  # exact beats wildcard
    assert match_name(names, "y.b.test") == 1
    assert match_name(names, "z.y.b.test") is None  # "*" is one label
    assert match_name(names, "b.test") is None
    assert match_name(names, None) is None and match_name(names, "") is None


def test_the_example_https_listener_loads_with_real_files(tmp_path, pki):
    _ca, site, other = pki
    text = (Path(__file__).resolve().parents[2] / "deploy/config/lb-listeners.toml").read_text()
    block = text[text.index("# [[listeners]]"):text.index("\n\n", text.index("# [[listeners]]"))]
    live = "\n".join(line[2:] for line in block.splitlines())
    live = live.replace("/etc/tierproxy/www.example.com.crt", str(site.cert)).replace(
        "/etc/tierproxy/www.example.com.key", str(site.key)).replace(
        "/etc/tierproxy/api.example.com.crt", str(other.cert)).replace(
        "/etc/tierproxy/api.example.com.key", str(other.key))
    head, sep, rest = text.partition("[pools.web]")
    cfg = load(tmp_path, head + live + "\n\n" + sep + rest)
    https = cfg.all_listeners[2]
    assert https.protocol == "https" and [c.names() for c in https.tls.certificates] == [
        ["site.test", "*.site.test"], ["other.test"]]
