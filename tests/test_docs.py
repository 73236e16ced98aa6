"""The documentation: the mkdocs site builds in strict mode, and the README stays short.

``mkdocs build --strict`` fails on a broken link or anchor, a nav entry without its page,
a page of docs/ left out of the nav (mkdocs.yml's ``validation``) and any warning, e.g. a
generated page (docs/hooks/generated.py: the OpenAPI routes, every command's --help) that
cannot be built.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

#: The README opens with exactly these lines (the title, then the two commands).
OPENING = """# autopeft

```bash
make demo   # creates .venv, installs, runs a real AutoPEFT search: local server + 2 workers, MiniLM-L6, synthetic task
make test   # creates .venv, installs, runs the whole suite (SQLite and a private PostgreSQL server)
```
"""
MAX_README_LINES = 300


def _build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config),
         "--site-dir", str(site)],
        cwd=config.parent, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    built = _build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert built.returncode == 0, built.stdout + built.stderr
    site = tmp_path / "site"
    document = json.loads((site / "api" / "openapi.json").read_text())
    assert "/v1/leases" in document["paths"]
    routes = (site / "api" / "routes" / "index.html").read_text()
    assert "POST /v1/studies" in routes and "GET /metrics" in routes
    help_page = (site / "cli" / "help" / "index.html").read_text()
    for command in ("submit", "watch", "pareto", "download", "export", "launch slurm"):
        assert f"usage: autopeft {command}" in help_page, command


def test_a_broken_link_or_an_omitted_page_fails_the_build(tmp_path: Path) -> None:
    """The strict build is a real check: the same site with one fault each must fail."""
    for fault, expected in [
        ("link", "not found among documentation files"),
        ("anchor", "does not contain an anchor"),
        ("omitted", "not included in the \"nav\""),
    ]:
        copy = tmp_path / fault
        shutil.copytree(ROOT / "docs", copy / "docs")
        shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
        index = copy / "docs" / "index.md"
        if fault == "link":
            index.write_text(index.read_text() + "\n[gone](no_such_page.md)\n")
        elif fault == "anchor":
            index.write_text(index.read_text() + "\n[gone](design.md#no-such-heading)\n")
        else:
            (copy / "docs" / "orphan.md").write_text("# Not in the nav\n")
        built = _build(copy / "mkdocs.yml", copy / "site")
        assert built.returncode != 0, fault
        assert expected in built.stdout + built.stderr, (fault, built.stdout + built.stderr)


def test_the_readme_opens_with_the_two_commands_and_is_short() -> None:
    text = README.read_text()
    assert text.startswith(OPENING)
    assert len(text.splitlines()) <= MAX_README_LINES


def test_the_readme_links_exist() -> None:
    text = README.read_text()
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if "://" not in t]
    assert local, "the README links its docs"
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, missing
