# PostgreSQL 15 under Patroni for the compose stack (docker-compose.yml: patroni1..3; their configs
# are patroni/patroni-node*.yml, mounted at /etc/patroni). Debian's own packages: patroni 3.0.2 with
# its etcd3 client (python3-etcd for the etcd v2 one). Build from deploy/compose/:
#   docker build -f patroni.Dockerfile -t tierproxy-patroni .
FROM debian:bookworm-slim
# The postgres user made first with a fixed uid (999, as the official postgres image has), so that
# USER can be numeric; no "main" cluster from the package's postinst: Patroni runs initdb itself.
# hadolint ignore=DL3008
RUN groupadd --system --gid 999 postgres \
 && useradd --system --uid 999 --gid postgres --home-dir /var/lib/postgresql --shell /bin/bash postgres \
 && mkdir -p /etc/postgresql-common \
 && echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf \
 && apt-get update \
 && apt-get install -y --no-install-recommends postgresql-15 patroni python3-etcd \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data \
 && install -d -o postgres -g postgres -m 2775 /var/run/postgresql
USER 999:999
WORKDIR /var/lib/postgresql
# /health is 200 while this node's PostgreSQL runs (leader or replica): what the dbproxy needs of
# it before starting; the dbproxy itself follows who leads (etcd), not this check.
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=20 \
  CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8008/health', timeout=2)"]
EXPOSE 5432 8008
ENTRYPOINT ["patroni"]
CMD ["/etc/patroni/patroni-node1.yml"]
