"""`python -m proxy.core.healthcheck [URL]`: a container's HEALTHCHECK of its own daemon.

GET URL (default `$TIERPROXY_HEALTH_URL`), exit 0 on a 2xx answer and 1 otherwise, printing why.
For the lb's admin port beyond loopback (TLS and a bearer token even for reads: proxy/core/
adminguard.py) `$TIERPROXY_HEALTH_TOKEN_FILE` names the token file, and an https URL is fetched
without verifying the certificate: the check talks to its own container over loopback, where a
self-signed admin certificate is the norm. Standard library only: it runs in the slim image.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.error
import urllib.request

__all__ = ["check", "main"]


def check(url: str, token: str | None = None, timeout: float = 2.0) -> tuple[bool, str]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    ctx = ssl._create_unverified_context() if url.startswith("https:") else None  # loopback self-check
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:
            return 200 <= resp.status < 300, f"{url}: {resp.status}"
    except urllib.error.HTTPError as exc:
        return False, f"{url}: {exc.code}"
    except (OSError, ValueError) as exc:
        return False, f"{url}: {exc}"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    url = args[0] if args else os.environ.get("TIERPROXY_HEALTH_URL", "")
    if not url:
        print("healthcheck: no URL (argument or $TIERPROXY_HEALTH_URL)", file=sys.stderr)
        return 2
    token = None
    token_file = os.environ.get("TIERPROXY_HEALTH_TOKEN_FILE")
    if token_file:
        try:
            with open(token_file, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as exc:
            print(f"healthcheck: {token_file}: {exc}", file=sys.stderr)
            return 1
    ok, why = check(url, token)
    print(why)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
