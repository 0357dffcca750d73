"""An ORM's statement mix for `bench dbproxy --workloads orm`: what applications send, not pgbench.

pgbench's own workloads inline one number per statement and nothing else. Applications behind an
ORM (Django, Rails, SQLAlchemy, Hibernate with inlined literals) send string literals, IN lists of
varying length, quoted identifiers, and comments that tag the statement with where it came from
(sqlcommenter/marginalia: `/* controller=users,action=show */`, often with a per-request id), at
the start or the end. Every such text is new to a proxy that keys its work by the exact text.

* `SETUP_SQL`: the schema (app_users with 10,000 rows, app_events), run once through pgbench;
* `SCRIPT`: the pgbench custom script (`-M simple`: pgbench substitutes :variables into the text,
  quotes and comments included, so every transaction sends different literals and comments; no
  other colon may follow a letter or digit);
* `statements(n)`: the same statements in Python, values drawn the same way, for the callgrind
  micro-driver (bench/micro.py) and the classifier tests.
"""

from __future__ import annotations

import random
import re

__all__ = ["SCRIPT", "SETUP_SQL", "statements"]

USERS = 10_000

SETUP_SQL = f"""DROP TABLE IF EXISTS app_events;
DROP TABLE IF EXISTS app_users;
CREATE TABLE app_users (id int PRIMARY KEY, email text NOT NULL UNIQUE, name text NOT NULL, org_id int NOT NULL, active boolean NOT NULL, created_at timestamptz NOT NULL);
INSERT INTO app_users SELECT g, 'u' || g || '@example.com', 'User ' || g, g % 100, g % 7 <> 0, timestamptz '2026-01-01' + g * interval '1 minute' FROM generate_series(1, {USERS}) g;
CREATE INDEX app_users_org ON app_users (org_id);
CREATE TABLE app_events (id bigserial PRIMARY KEY, user_id int NOT NULL, kind text NOT NULL, payload text, created_at timestamptz NOT NULL DEFAULT now());
"""

# One transaction of the script: a page view of an app (look-ups by e-mail, a list, a prefetch by
# IN list, a count) and a write (an event row) with the tags an ORM's comment plug-in adds.
_VARS = {"uid": (1, USERS), "org": (0, 99), "rid": (1, 999_999_999), "a": (1, USERS), "b": (1, USERS),
         "c": (1, USERS), "d": (1, USERS), "e": (1, USERS), "f": (1, USERS), "g": (1, USERS)}
_STATEMENTS = (
    "/* controller='users',action='show',request_id=':rid' */ SELECT \"app_users\".\"id\", "
    "\"app_users\".\"email\", \"app_users\".\"name\", \"app_users\".\"org_id\" FROM \"app_users\" WHERE "
    "\"app_users\".\"email\" = 'u:uid@example.com' LIMIT 1;",
    "SELECT \"app_users\".\"id\", \"app_users\".\"name\" FROM \"app_users\" WHERE \"app_users\".\"org_id\" = "
    ":org AND \"app_users\".\"active\" = true AND \"app_users\".\"name\" <> 'User :uid' ORDER BY "
    "\"app_users\".\"id\" DESC LIMIT 20 /* controller='users',action='index',request_id=':rid' */;",
    "SELECT \"app_users\".* FROM \"app_users\" WHERE \"app_users\".\"id\" IN (:a, :b, :c);",
    "SELECT \"app_users\".* FROM \"app_users\" WHERE \"app_users\".\"id\" IN (:a, :b, :c, :d, :e, :f, :g) "
    "AND \"app_users\".\"email\" LIKE 'u%@example.com';",
    "-- app=shop route=/orgs/:org/members\nSELECT COUNT(*) AS \"__count\" FROM \"app_users\" WHERE "
    "\"app_users\".\"org_id\" = :org AND \"app_users\".\"created_at\" >= '2026-01-02';",
    "/* controller='sessions',action='create',request_id=':rid' */ INSERT INTO \"app_events\" "
    "(\"user_id\", \"kind\", \"payload\") VALUES (:uid, 'login', 'ip=10.1.:org.7 agent=Mozilla/5.0') "
    "RETURNING \"app_events\".\"id\";",
)

SCRIPT = "".join(f"\\set {name} random({lo}, {hi})\n" for name, (lo, hi) in _VARS.items()) + \
    "".join(s + "\n" for s in _STATEMENTS)

_VAR = re.compile(r":([a-z]+)")


def statements(n: int, seed: int = 17) -> list[bytes]:
    """`n` statements as pgbench sends them for SCRIPT (transactions in turn), as bytes."""
    rng = random.Random(seed)
    out: list[bytes] = []
    while len(out) < n:
        values = {name: str(rng.randint(lo, hi)) for name, (lo, hi) in _VARS.items()}
        for stmt in _STATEMENTS:
            out.append(_VAR.sub(lambda m: values[m.group(1)], stmt).encode())
    return out[:n]
