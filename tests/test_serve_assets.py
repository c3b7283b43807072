"""The page of ``charrnn serve`` ships inside the package (checked without
the serve extra, so that the installed wheel is checked too) and names
nothing outside the server."""

from __future__ import annotations

import importlib.resources
import re

ASSETS = ("index.html", "app.js", "style.css")


def test_the_page_and_its_assets_are_package_data():
    static = importlib.resources.files("charrnn_ext.serve") / "static"
    for name in ASSETS:
        text = (static / name).read_text(encoding="utf-8")
        assert len(text) > 500, name
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.IGNORECASE), name  # no other host
        assert "@import" not in text and "url(" not in text, name


def test_the_script_finds_every_element_it_uses_on_the_page():
    static = importlib.resources.files("charrnn_ext.serve") / "static"
    html = (static / "index.html").read_text(encoding="utf-8")
    script = (static / "app.js").read_text(encoding="utf-8")
    used = set(re.findall(r'\$\("([a-z_-]+)"\)', script))
    assert {"prime", "length", "temperature", "top_k", "top_p", "seed", "greedy", "sample", "stop"} <= used
    assert {"output", "status", "explain", "explain-text", "explain-view"} <= used
    for element in used:
        assert f'id="{element}"' in html, element
    for slider in ("temperature", "top_p"):  # the value shown beside each slider
        assert f'id="{slider}-value"' in html
