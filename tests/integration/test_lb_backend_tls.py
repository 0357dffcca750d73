"""TLS to backends per pool: a real nginx over TLS that requires a client certificate; the
balancer verifies the backend's certificate and name, and health checks go over TLS too."""

from __future__ import annotations

import pytest

from proxy.devstack.ports import allocate_port
from tests.integration.lbproc import wait_for
from tests.integration.nginxutil import Nginx
from tests.integration.tlsutil import curl, make_ca

pytestmark = pytest.mark.integration


def test_tls_to_backends_verifies_names_and_presents_a_client_certificate(lb_factory, tmp_path):
    ca = make_ca(tmp_path / "pki")
    backend = ca.issue("backend", ["backend.test"])
    client = ca.issue("balancer", ["balancer.test"], client=True)
    lock = allocate_port()
    nginx = Nginx(tmp_path / "nginx", lock.port,
                  f' ssl;\n        ssl_certificate {backend.cert};\n        ssl_certificate_key {backend.key};\n'
                  f'        ssl_client_certificate {ca.cert};\n        ssl_verify_client on;\n'
                  '        default_type text/plain;\n'
                  '        location / { return 200 "tls $ssl_protocol sni=$ssl_server_name client=$ssl_client_s_dn\\n"; }')  # fmt: skip
    try:
        def pool(name: str, server_name: str, with_cert: bool = True) -> str:
            cert = f'cert_file = "{client.cert}"\nkey_file = "{client.key}"\n' if with_cert else ""
            return (f'[pools.{name}]\nretries = 0\n[pools.{name}.health]\ntype = "{"http" if name == "good" else "none"}"\n'
                    f'path = "/"\ninterval = 0.5\ntimeout = 0.5\n'
                    f'[pools.{name}.tls]\nca_file = "{ca.cert}"\nserver_name = "{server_name}"\n{cert}'
                    f'[[pools.{name}.backends]]\nname = "n"\naddress = "{nginx.address}"\n')  # fmt: skip

        body = ('[[routes]]\npool = "wrongname"\npath_prefix = "/wrong"\n'
                '[[routes]]\npool = "nocert"\npath_prefix = "/nocert"\n'
                + pool("good", "backend.test") + pool("wrongname", "other.test")
                + pool("nocert", "backend.test", with_cert=False))  # fmt: skip
        lb = lb_factory(body)
        # the first health check ran over TLS (with the client certificate): the backend is up
        wait_for(lambda: lb.backend("good", "n")["state"] == "up", 10, "the TLS health check to pass")
        r = curl(lb.url("/"))
        # (nginx's default ssl_protocols end at TLSv1.2 on this Debian)
        assert r.returncode == 0 and r.stdout in ("tls TLSv1.2 sni=backend.test client=CN=balancer.test\n",
                                                  "tls TLSv1.3 sni=backend.test client=CN=balancer.test\n"), r.stdout
        # a name the backend's certificate does not have: refused by verification -> 502
        assert curl("-o", "/dev/null", "-w", "%{http_code}", lb.url("/wrong")).stdout == "502"
        # no client certificate: nginx refuses the request (400 from nginx, passed on)
        r = curl("-w", " %{http_code}", lb.url("/nocert"))
        assert r.stdout.endswith(" 400") and "No required SSL certificate" in r.stdout
    finally:
        nginx.stop()
        lock.release()
