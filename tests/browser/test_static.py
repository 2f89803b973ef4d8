"""The page and its scripts are plain files the app serves from its own origin."""

from __future__ import annotations

import httpx


async def test_page_and_scripts_are_served(server) -> None:
    async with httpx.AsyncClient(base_url=server.http) as http:
        page = await http.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert 'src="static/app.js"' in page.text
        for path in ("/static/app.js", "/static/pcm16-worklet.js", "/static/style.css"):
            r = await http.get(path)
            assert r.status_code == 200, path
        assert (await http.get("/static/missing.js")).status_code == 404
        # the routes that were there before still answer
        assert (await http.get("/v1/health")).json()["status"] == "ok"
        assert (await http.get("/docs")).status_code == 200
