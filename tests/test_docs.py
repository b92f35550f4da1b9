"""The documentation: the mkdocs site builds with every link and anchor resolved, and README.md stays a short landing
page whose relative links all point at files of the repository."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# Inline links and images, `[text](target)` / `![alt](target "title")`; link text may hold brackets of code spans.
MARKDOWN_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def relative_link_targets(markdown: str) -> list[str]:
    """Targets of the inline links that point into the repository (no scheme, not a bare `#anchor`)."""
    without_code = re.sub(r"```.*?```", "", markdown, flags=re.DOTALL)
    targets = MARKDOWN_LINK.findall(without_code)
    return [target for target in targets if not re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:|#", target)]


def test_site_builds_strictly(tmp_path):
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip('mkdocs is not installed: pip install -e ".[docs]" (CI installs it)')
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(site)],
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # The API reference is rendered from the docstrings, not left as `:::` text.
    pipelines = (site / "api" / "pipelines" / "index.html").read_text()
    assert 'id="pixelgen_diffusers.pipelines.pipeline_pixelgen_c2i.PixelGenC2IPipeline.__call__"' in pipelines
    assert ":::" not in pipelines


def test_readme_is_a_short_landing_page():
    lines = README.read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move details into docs/ and link them"


def test_readme_relative_links_point_at_existing_files():
    targets = relative_link_targets(README.read_text())
    assert any(target.startswith("docs/") for target in targets)
    missing = [target for target in targets if not (ROOT / target.split("#")[0]).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


def test_link_finder_sees_links_and_skips_urls_and_code():
    markdown = (
        "[a](docs/a.md#x) ![b](docs/b.png) [c](https://example.com) [d](#anchor) [`e` [f]](LICENSE)\n"
        "```bash\n[g](not/a/link.md)\n```\n"
    )
    assert relative_link_targets(markdown) == ["docs/a.md#x", "docs/b.png", "LICENSE"]
