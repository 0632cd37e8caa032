"""Static guards on the web console's own browser code: nothing builds markup from strings
(every agent or user text goes in as text), no inline script or style in the page, and
every page the router names exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

STATIC = Path(__file__).resolve().parents[2] / "console" / "web" / "static"
FORBIDDEN = ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "Function(")


def scripts() -> list[Path]:
    return sorted(STATIC.rglob("*.js"))


@pytest.mark.parametrize("script", scripts(), ids=lambda p: str(p.relative_to(STATIC)))
def test_no_markup_from_strings(script: Path) -> None:
    code = "\n".join(
        line for line in script.read_text().splitlines() if not line.lstrip().startswith("//")
    )
    for word in FORBIDDEN:
        assert word not in code, f"{script.name} uses {word}"


def test_the_page_has_no_inline_script_or_style() -> None:
    html = (STATIC / "index.html").read_text()
    assert re.findall(r"<script\b[^>]*>", html) == ['<script type="module" src="/assets/app.js">']
    assert "<style" not in html and " style=" not in html
    assert not re.search(r"\son[a-z]+=", html)


def test_every_routed_page_exists() -> None:
    app = (STATIC / "app.js").read_text()
    modules = re.findall(r'module: "\./(pages/[a-z-]+\.js)"', app)
    assert len(modules) >= 9
    for module in modules:
        assert (STATIC / module).is_file(), module
