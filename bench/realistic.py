"""What real HTTP clients send and what real backends answer: the `bench lb --realistic` workload.

wrk sends one bare `GET / HTTP/1.1` with a Host line, again and again; browsers, python-requests,
OkHttp and `ab -k` send a dozen header lines including `Connection: keep-alive`, a cookie, and a
different request line each time. This module holds those shapes once, for three users:

* `wrk_lua(port)`: a wrk script whose `request()` cycles through `HEADER_SETS` and makes every
  request line distinct (path templates with a per-thread counter in path and query string);
* `requests(n, host)`: the same requests in Python, for the callgrind micro-driver (bench/micro.py)
  and the tests;
* `FILES` / `nginx_locations()` / `response_for(path)`: the backend side, files of different
  types and sizes served with their own heads (Content-Type, ETag, Last-Modified, Cache-Control),
  by nginx or by the Python fallback backend (bench/backend.py).
"""

from __future__ import annotations

__all__ = ["FILES", "HEADER_SETS", "PATHS", "nginx_locations", "requests", "response_for", "wrk_lua"]

# (name, header lines without Host). Taken from what these clients send over HTTP/1.1 (Chrome and
# Firefox navigations and sub-resources, Safari on iOS, python-requests, OkHttp), cookies included.
HEADER_SETS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("chrome-navigate", (
        ("Connection", "keep-alive"),
        ("sec-ch-ua", '"Chromium";v="131", "Not_A Brand";v="24"'),
        ("sec-ch-ua-mobile", "?0"),
        ("sec-ch-ua-platform", '"Linux"'),
        ("Upgrade-Insecure-Requests", "1"),
        ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                       "Chrome/131.0.0.0 Safari/537.36"),
        ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
                   "image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"),
        ("Sec-Fetch-Site", "same-origin"),
        ("Sec-Fetch-Mode", "navigate"),
        ("Sec-Fetch-User", "?1"),
        ("Sec-Fetch-Dest", "document"),
        ("Accept-Encoding", "gzip, deflate, br, zstd"),
        ("Accept-Language", "en-US,en;q=0.9"),
        ("Cookie", "sessionid=8f2c1b7e9a4d4e0f; csrftoken=Zx81kQpL0aVv3Rt; theme=dark"),
    )),
    ("firefox-image", (
        ("User-Agent", "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"),
        ("Accept", "image/avif,image/webp,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5"),
        ("Accept-Language", "en-GB,en;q=0.5"),
        ("Accept-Encoding", "gzip, deflate, br, zstd"),
        ("Connection", "keep-alive"),
        ("Referer", "http://shop.example/products/"),
        ("Cookie", "_ga=GA1.1.1181236723.1733390000; cart=3f9a"),
        ("Sec-Fetch-Dest", "image"),
        ("Sec-Fetch-Mode", "no-cors"),
        ("Sec-Fetch-Site", "same-origin"),
        ("Priority", "u=5, i"),
    )),
    ("safari-ios-css", (
        ("Accept", "text/css,*/*;q=0.1"),
        ("Sec-Fetch-Site", "same-origin"),
        ("Accept-Encoding", "gzip, deflate"),
        ("Sec-Fetch-Mode", "no-cors"),
        ("Cookie", "sessionid=a1b2c3d4e5f6; lang=de"),
        ("User-Agent", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
                       "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"),
        ("Accept-Language", "de-DE,de;q=0.9"),
        ("Referer", "http://shop.example/"),
        ("Sec-Fetch-Dest", "style"),
        ("Connection", "keep-alive"),
    )),
    ("python-requests", (
        ("User-Agent", "python-requests/2.32.3"),
        ("Accept-Encoding", "gzip, deflate"),
        ("Accept", "*/*"),
        ("Connection", "keep-alive"),
        ("Cookie", "token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiJ9"),
    )),
    ("okhttp", (
        ("Accept", "application/json"),
        ("Cookie", "JSESSIONID=5B8E0F2A7C1D9E3F4A6B"),
        ("Connection", "Keep-Alive"),
        ("Accept-Encoding", "gzip"),
        ("User-Agent", "okhttp/4.12.0"),
    )),
    ("chrome-fetch", (
        ("Connection", "keep-alive"),
        ("sec-ch-ua-platform", '"Windows"'),
        ("User-Agent", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
                       "Gecko) Chrome/131.0.0.0 Safari/537.36"),
        ("Accept", "application/json, text/plain, */*"),
        ("sec-ch-ua", '"Google Chrome";v="131", "Chromium";v="131", "Not_A Brand";v="24"'),
        ("X-Requested-With", "XMLHttpRequest"),
        ("sec-ch-ua-mobile", "?0"),
        ("Sec-Fetch-Site", "same-origin"),
        ("Sec-Fetch-Mode", "cors"),
        ("Sec-Fetch-Dest", "empty"),
        ("Referer", "http://shop.example/products/17"),
        ("Accept-Encoding", "gzip, deflate, br, zstd"),
        ("Accept-Language", "fr-FR,fr;q=0.9,en-US;q=0.8,en;q=0.7"),
        ("Cookie", "sessionid=77e1f0c2aa; csrftoken=Qm9uam91cg; consent=1"),
    )),
)

# Request-line templates, one per header set (in order): "%d" is a per-thread counter, so every
# request line differs. The prefix picks the backend's answer (FILES).
PATHS = (
    "/products/%d?ref=home&utm_source=newsletter",
    "/img/products/%d.png",
    "/static/css/site.css?v=%d",
    "/api/v1/items/%d?fields=id,name,price&page=2",
    "/api/v1/users/%d/orders?limit=20",
    "/api/v1/cart?ts=%d",
)

# path prefix -> (file name, size in bytes, Content-Type, extra response header lines for nginx).
FILES = (
    ("/products/", "product.html", 7_412, "text/html", ('add_header Cache-Control "no-cache";',)),
    ("/img/", "product.png", 14_903, "image/png", ('add_header Cache-Control "max-age=86400";',)),
    ("/static/", "site.css", 3_218, "text/css", ('add_header Cache-Control "max-age=31536000";',)),
    ("/api/v1/items/", "item.json", 611, "application/json",
     ('add_header Cache-Control "no-store";', 'add_header Vary "Accept-Encoding";')),
    ("/api/v1/users/", "orders.json", 2_380, "application/json", ('add_header Cache-Control "private";',)),
    ("/api/v1/cart", "cart.json", 188, "application/json",
     ('add_header Cache-Control "no-store";', 'add_header X-Content-Type-Options "nosniff";')),
)


def _file_body(name: str, size: int) -> bytes:
    seed = (name.encode() + b" ") * (size // (len(name) + 1) + 1)
    return seed[:size]


def requests(n: int, host: str = "127.0.0.1:8080", start: int = 1) -> list[bytes]:
    """`n` requests as wrk_lua's script sends them (header sets in turn, counter from `start`)."""
    heads = []
    for i in range(n):
        k = i % len(HEADER_SETS)
        lines = "".join(f"{name}: {value}\r\n" for name, value in HEADER_SETS[k][1])
        path = PATHS[k] % (start + i)
        heads.append(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{lines}\r\n".encode())
    return heads


def _lua_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def wrk_lua() -> str:
    """`request()` for wrk: header sets in turn, every request line distinct. wrk.format adds the
    Host line from the URL (first, as browsers do)."""
    sets = ",\n".join(
        "  {" + ", ".join(f"[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers) + "}"
        for _name, headers in HEADER_SETS
    )
    paths = ", ".join(_lua_string(p) for p in PATHS)
    return f"""
local sets = {{
{sets}
}}
local paths = {{ {paths} }}
local n = 0
request = function()
  n = n + 1
  local k = n % #sets + 1
  return wrk.format("GET", string.format(paths[k], n), sets[k])
end
"""


def write_docroot(root) -> None:  # noqa: ANN001 - a pathlib.Path
    """The backends' files (FILES) under `root`."""
    root.mkdir(parents=True, exist_ok=True)
    for _prefix, name, size, _ctype, _extra in FILES:
        (root / name).write_bytes(_file_body(name, size))


def nginx_locations(root) -> str:  # noqa: ANN001 - a pathlib.Path
    """nginx `location` blocks serving FILES by path prefix (static files: nginx adds ETag,
    Last-Modified and Accept-Ranges itself); anything else gets `ok` (health checks)."""
    out = [f"        root {root};\n"]
    for prefix, name, _size, ctype, extra in FILES:
        lines = "".join(f"            {line}\n" for line in extra)
        out.append(f"        location {prefix} {{\n            default_type {ctype};\n{lines}"
                   f"            try_files /{name} =404;\n        }}\n")
    out.append('        location / {\n            return 200 "ok\\n";\n        }\n')
    return "".join(out)


def response_for(path: bytes) -> bytes:
    """The Python backend's answer to a request for `path`: the file's response, with a head
    like nginx's, or `ok` for anything else."""
    for prefix, name, size, ctype, extra in FILES:
        if path.startswith(prefix.encode()):
            more = "".join(
                line.removeprefix("add_header ").rstrip(";").replace(' "', ": ", 1).rstrip('"') + "\r\n"
                for line in extra
            )
            head = (f"HTTP/1.1 200 OK\r\nServer: bench-backend\r\nContent-Type: {ctype}\r\n"
                    f"Content-Length: {size}\r\nLast-Modified: Thu, 05 Dec 2026 06:00:00 GMT\r\n"
                    f"Connection: keep-alive\r\nETag: \"{size:x}-{len(name):x}\"\r\n{more}"
                    "Accept-Ranges: bytes\r\n\r\n")
            return head.encode() + _file_body(name, size)
    return (b"HTTP/1.1 200 OK\r\nServer: bench-backend\r\nContent-Type: text/plain\r\n"
            b"Content-Length: 3\r\nConnection: keep-alive\r\n\r\nok\n")
