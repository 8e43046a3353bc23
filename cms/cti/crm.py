"""The /crm page: a static HTML+JS client of the CTI API, served outside /api/v1."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

__all__ = ["add_crm_routes"]

WEB = Path(__file__).parent / "web"
_FILES = {"crm.html": "text/html", "crm.js": "text/javascript", "crm.css": "text/css"}
# Only our own scripts, styles and API; the page needs nothing from elsewhere.
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self' ws: wss:; "
        "frame-ancestors 'none'")


def _serve(name: str) -> web.Response:
    return web.Response(body=(WEB / name).read_bytes(), content_type=_FILES[name],
                        charset="utf-8",
                        headers={"Content-Security-Policy": _CSP, "Cache-Control": "no-cache"})


async def crm_page(request: web.Request) -> web.StreamResponse:
    """GET /crm: the page."""
    return _serve("crm.html")


async def crm_asset(request: web.Request) -> web.StreamResponse:
    """GET /crm/{name}: its script and style sheet (nothing else)."""
    name = request.match_info["name"]
    if name not in _FILES:
        raise web.HTTPNotFound()
    return _serve(name)


def add_crm_routes(app: web.Application) -> None:
    """Serve the page at /crm of `app`."""
    app.router.add_get("/crm", crm_page)
    app.router.add_get("/crm/{name}", crm_asset)
