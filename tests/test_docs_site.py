"""The manual builds: ``mkdocs build --strict`` fails on a broken link, a missing anchor, a page
left out of the nav, or an API reference to an object that does not exist.

The build needs mkdocs, mkdocs-material and mkdocstrings[python] (the ``test`` and ``docs``
extras install them); without them the build test is skipped, saying so. The links of the
README and SECURITY.md, which live outside the site, are checked here without mkdocs.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _missing_build_tools() -> list[str]:
    wanted = {"mkdocs": "mkdocs", "material": "mkdocs-material", "mkdocstrings": "mkdocstrings",
              "mkdocstrings_handlers.python": "mkdocstrings-python"}
    missing = []
    for module, dist in wanted.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            missing.append(dist)
    return missing


def _build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    """``mkdocs build --strict`` of ``config`` into ``site``. Not ``--quiet``: it hides warnings
    from the count that makes a strict build fail."""
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config),
                           "-d", str(site)], capture_output=True, text=True, timeout=600,
                          cwd=config.parent, env=env)


def _skip_without_build_tools() -> None:
    missing = _missing_build_tools()
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (pip install -e '.[docs]')")


def test_the_strict_build_fails_on_a_broken_link(tmp_path: Path) -> None:
    _skip_without_build_tools()
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text("# t\n\nSee [a page that is not there](gone.md).\n")
    (tmp_path / "mkdocs.yml").write_text("site_name: t\n")
    done = _build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert done.returncode != 0 and "gone.md" in done.stderr


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    _skip_without_build_tools()
    done = _build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    site = tmp_path / "site"
    assert (site / "index.html").is_file()
    cluster_page = (site / "reference" / "cluster" / "index.html").read_text(encoding="utf-8")
    assert 'id="gossip.Cluster.join"' in cluster_page            # the reference rendered the API
    assert ":class:`" not in cluster_page and ":meth:`" not in cluster_page   # roles became links
    security = (site / "security" / "index.html").read_text(encoding="utf-8")
    assert "Reporting a vulnerability" in security               # SECURITY.md is included


@pytest.mark.parametrize("document", ["README.md", "SECURITY.md"])
def test_links_outside_the_site_point_at_files_that_exist(document: str) -> None:
    text = (ROOT / document).read_text(encoding="utf-8")
    targets = [t for t in _LINK.findall(text) if not re.match(r"[a-z]+:", t) and not t.startswith("#")]
    missing = [t for t in targets if not (ROOT / t.split("#", 1)[0]).exists()]
    assert not missing, f"{document} links to files that do not exist: {missing}"
    if document == "README.md":
        assert any(t.startswith("docs/") for t in targets)
