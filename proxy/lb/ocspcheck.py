"""What `tierproxy check-config` says of each certificate's `ocsp_response_file`.

The daemon serves a certificate whose response is unusable (missing, unparsable, expired, for
another certificate: lb/ocsp.py decides) without stapling and logs why (lb/ocspstaple.py), as
HAProxy does; the config stays valid. So check-config does not fail on it either, but says it
beforehand: one warning per such file, naming the certificate and the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from proxy.core.tls import certificate_names
from proxy.lb.ocsp import OcspError, staple_for

if TYPE_CHECKING:
    from proxy.lb.frontconfig import ListenerConfig

__all__ = ["ocsp_warnings"]


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise OcspError(f"cannot read it: {exc.strerror or exc}") from None


def ocsp_warnings(listeners: Sequence[ListenerConfig], now: float) -> list[str]:
    """One line per certificate whose `ocsp_response_file` cannot be stapled at `now` (Unix
    seconds), saying which certificate, which file and why."""
    out = []
    for i, lst in enumerate(listeners):
        for j, cert in enumerate(lst.tls.certificates if lst.tls is not None else ()):
            if cert.ocsp_response_file is None:
                continue
            try:
                staple_for(_read(cert.ocsp_response_file), _read(cert.cert_file), now)
                continue
            except OcspError as exc:
                why = str(exc)
            names = ", ".join(certificate_names(cert.cert_file)) or "no DNS names"
            out.append(f"listeners[{i}].tls.certificates[{j}].ocsp_response_file: {cert.ocsp_response_file} "
                       f"cannot be stapled to certificate {cert.cert_file} ({names}): {why}; "
                       "the lb serves that certificate without stapling")  # fmt: skip
    return out
