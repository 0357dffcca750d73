"""A small static site for the web workers' `/static/` tree: the page the demo serves through
`tierproxy cdn`, and the page the browser test loads through it.

`write_static_site(directory)` writes `index.html` (not versioned: the cdn keeps it under RFC
9111's heuristic freshness and revalidates it), a stylesheet and a script whose names carry a
hash of their content (`app.<12 hex>.css`, `app.<12 hex>.js`, `logo.<12 hex>.png`: versioned
assets, stored with a long TTL and `immutable` by `cache.versioned_pattern`). The script reports in the
page what loaded: the stylesheet's effect on a computed style, itself, and the image's decoded
size, so a headless browser's DOM shows that every asset arrived. No external assets.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

__all__ = ["VERSIONED_PATTERN", "StaticSite", "png", "write_static_site"]

# The cdn's cache.versioned_pattern for these names: a dot, 8 or more hex digits, a dot, a type.
VERSIONED_PATTERN = r"[.][0-9a-f]{8,}[.](css|js|png)$"

CSS = b"""body { font-family: sans-serif; margin: 2em; }
#css { color: rgb(0, 128, 0); }
"""

JS = b"""document.getElementById("js").textContent = "script ran";
document.getElementById("css").textContent = "stylesheet: " + getComputedStyle(document.getElementById("css")).color;
var img = document.getElementById("logo");
function seen() { document.getElementById("img").textContent = "image: " + img.naturalWidth + "x" + img.naturalHeight; }
if (img.complete) { seen(); } else { img.addEventListener("load", seen); }
"""


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A solid-colour RGB PNG (PNG spec: signature, IHDR, one IDAT, IEND)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + bytes(rgb) * width  # filter type 0 per scanline
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(row * height))
            + chunk(b"IEND", b""))


@dataclass(frozen=True)
class StaticSite:
    directory: Path
    css: str  # paths under /static/
    js: str
    image: str
    page: str = "index.html"

    @property
    def assets(self) -> list[str]:
        return [self.css, self.js, self.image]


def _versioned(stem: str, ext: str, body: bytes) -> str:
    return f"{stem}.{hashlib.sha256(body).hexdigest()[:12]}.{ext}"


def write_static_site(directory: Path) -> StaticSite:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    logo = png(24, 16, (40, 120, 200))
    css, js, image = _versioned("app", "css", CSS), _versioned("app", "js", JS), _versioned("logo", "png", logo)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>tierproxy demo: static files</title>
<link rel="icon" href="data:,"><link rel="stylesheet" href="/static/{css}"></head><body>
<h1>Static files through tierproxy cdn</h1>
<p><img id="logo" src="/static/{image}" width="32" height="32" alt="logo"></p>
<p id="css">stylesheet not applied</p><p id="js">script did not run</p><p id="img">image not loaded</p>
<script src="/static/{js}"></script>
</body></html>
"""
    (directory / css).write_bytes(CSS)
    (directory / js).write_bytes(JS)
    (directory / image).write_bytes(logo)
    (directory / "index.html").write_text(page)
    return StaticSite(directory, css, js, image)
