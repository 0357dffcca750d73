"""Which addresses a backend may have (`allowed_backend_networks`): pure checks, plus name lookup.

The admin API can add backends at runtime; whoever reaches it must not be able to point the
balancer's traffic (and its health checks) at a cloud metadata service (169.254.169.254 on most
clouds, a link-local address) and so read what the balancer's machine may read there. AWS's IPv6
endpoint fd00:ec2::254 is unique-local, not link-local: where it matters, list the networks the
backends live in, which shuts out everything else.

* Default (no `allowed_backend_networks`): any address but link-local (169.254.0.0/16, fe80::/10).
* With `allowed_backend_networks = ["10.0.0.0/8", ...]`: only addresses inside those networks
  (a link-local network listed there is allowed).
* The unspecified address (0.0.0.0, ::) is never a backend: connecting to it reaches this machine.

A name is resolved and every address it gives must pass; a name that does not resolve now passes
(connecting to it will fail, and the health check says so). Names are checked when a backend is
configured or added, not on each connection.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Sequence

__all__ = ["LINK_LOCAL", "address_refusal", "host_refusal", "parse_networks", "resolved_refusal"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

LINK_LOCAL: tuple[Network, ...] = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """CIDR strings to networks (host bits allowed: "10.1.2.3/8" means 10.0.0.0/8)."""
    out = []
    for v in values:
        try:
            out.append(ipaddress.ip_network(v, strict=False))
        except ValueError:
            raise ValueError(f"{v!r} is not a network (expected CIDR, e.g. '10.0.0.0/8')") from None
    return tuple(out)


def _ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        addr = ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped  # ::ffff:169.254.169.254 is 169.254.169.254
    return addr


def address_refusal(ip: str, allowed: Sequence[Network] | None) -> str | None:
    """Why `ip` (an IP literal) may not be a backend address, or None if it may."""
    addr = _ip(ip)
    if addr is None:
        return f"{ip!r} is not an IP address"
    if addr.is_unspecified:
        return f"{ip} is the unspecified address, not a backend"
    if allowed is None:
        for net in LINK_LOCAL:
            if addr.version == net.version and addr in net:
                return (f"{ip} is link-local ({net}: where cloud metadata services answer); "
                        "list its network in allowed_backend_networks to allow it")  # fmt: skip
        return None
    if not any(addr.version == net.version and addr in net for net in allowed):
        return f"{ip} is outside allowed_backend_networks ({', '.join(str(n) for n in allowed)})"
    return None


def resolved_refusal(host: str, addresses: Iterable[str], allowed: Sequence[Network] | None) -> str | None:
    """Why the name `host`, resolving to `addresses`, may not be a backend, or None."""
    for ip in addresses:
        why = address_refusal(ip, allowed)
        if why is not None:
            return f"{host} resolves to {why}"
    return None


def host_refusal(host: str, allowed: Sequence[Network] | None) -> str | None:
    """Why `host` (IP literal or name, resolved here: blocking) may not be a backend, or None."""
    if _ip(host) is not None:
        return address_refusal(host, allowed)
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return None  # does not resolve now: connecting fails, the health check says why
    return resolved_refusal(host, (str(i[4][0]) for i in infos), allowed)
