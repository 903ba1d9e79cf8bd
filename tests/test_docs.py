"""Every link in the repository's Markdown resolves inside the repository (files and anchors)."""

import glob
import os
import re

import pytest

from conftest import REPO

DOCS = sorted([os.path.join(REPO, "README.md"), os.path.join(REPO, "export", "README.md"),
               *glob.glob(os.path.join(REPO, "docs", "**", "*.md"), recursive=True)])
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def _anchors(path):
    """GitHub's heading anchors of a Markdown file: lower case, punctuation dropped, '-' for ' '."""
    with open(path, encoding="utf-8") as f:
        text = _FENCE.sub("", f.read())
    return {re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)}


def _links(path):
    with open(path, encoding="utf-8") as f:
        text = _FENCE.sub("", f.read())
    return [m.group(1) for m in _LINK.finditer(text)]


def test_anchor_slugs_match_github():
    assert "studies-table-i-over-methods-and-seeds" in _anchors(os.path.join(REPO, "README.md"))


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: os.path.relpath(p, REPO))
def test_every_relative_link_resolves_inside_the_repository(doc):
    bad = []
    for link in _links(doc):
        if re.match(r"^[a-z]+:", link):  # http:, https:, mailto:
            continue
        target, _, anchor = link.partition("#")
        path = os.path.normpath(os.path.join(os.path.dirname(doc), target)) if target else doc
        if not path.startswith(REPO + os.sep) or not os.path.exists(path):
            bad.append(f"{link} (no file {path} in the repository)")
        elif anchor and path.endswith(".md") and anchor not in _anchors(path):
            bad.append(f"{link} (no heading #{anchor} in {os.path.relpath(path, REPO)})")
    assert not bad, f"{os.path.relpath(doc, REPO)}: " + "; ".join(bad)
