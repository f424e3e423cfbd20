"""README.md and docs/*.md hold together: Python blocks compile, `kdistill` commands name real subcommands and flags,
links and anchors resolve, and the README links every page (the textbook blocks run in test_textbook.py)."""

import glob
import os
import re
import shlex

import pytest

from kdistill import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md"] + sorted(os.path.relpath(path, ROOT) for path in glob.glob(os.path.join(ROOT, "docs", "*.md")))
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def _text(page: str) -> str:
    with open(os.path.join(ROOT, page), encoding="utf-8") as handle:
        return handle.read()


def _blocks(page: str, languages: set[str]) -> list[tuple[int, str]]:
    """(line number, code) of each fenced block of `page` whose language is in `languages` ("" for an unmarked one)."""
    text = _text(page)
    return [
        (text.count("\n", 0, match.start()) + 1, match.group(2))
        for match in FENCE.finditer(text)
        if match.group(1) in languages
    ]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: str) -> set[str]:
    anchors, seen = set(), {}
    for line in FENCE.sub("", _text(page)).splitlines():
        if re.match(r"#{1,6} ", line):
            slug = _slug(line.lstrip("#"))
            anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return anchors


def test_there_are_docs_pages():
    assert len(PAGES) > 5, PAGES


@pytest.mark.parametrize("page", PAGES)
def test_every_python_block_compiles(page):
    blocks = _blocks(page, {"python"})
    for line, code in blocks:
        compile(code, f"{page}:{line}", "exec")


def _commands(page: str) -> list[tuple[int, list[str]]]:
    """(line, words) of each `kdistill ...` command in the shell and unmarked blocks of `page`; indented lines and trailing
    backslashes continue the command above (the synopsis in docs/cli-and-configs.md wraps that way)."""
    commands = []
    for start, code in _blocks(page, {"bash", "sh", "shell", "console", ""}):
        current, continued = None, False
        for offset, line in enumerate(code.splitlines()):
            words = line.split("#")[0].removeprefix("$ ").strip()
            if current is not None and (line[:1].isspace() or continued):
                current[1].append(words)
            elif words.startswith("kdistill "):
                current = (start + 1 + offset, [words])
                commands.append(current)
            else:
                current = None
            continued = line.rstrip().endswith("\\")
    return [
        (line, shlex.split(" ".join(part.rstrip("\\") for part in parts).replace("...", ""))[1:])
        for line, parts in commands
    ]


def _flags(parser) -> dict:
    return parser._option_string_actions


def _subcommands(parser) -> dict:
    return {
        name: sub
        for action in parser._actions
        if action.__class__.__name__ == "_SubParsersAction"
        for name, sub in action.choices.items()
    }


@pytest.mark.parametrize("page", PAGES)
def test_every_kdistill_command_in_a_shell_block_exists(page):
    """Each `kdistill SUBCOMMAND` is one of `kdistill --help`'s, and each --flag after it is that subcommand's (or a global one)."""
    parser = cli.build_parser()
    for line, words in _commands(page):
        where = f"{page}:{line}: kdistill {' '.join(words)}"
        words = [word.strip("[]|") for word in words]
        while words and words[0].startswith("-"):  # global flags before the subcommand
            action = _flags(parser).get(words.pop(0).split("=")[0])
            assert action is not None, where
            if action.nargs != 0 and words:
                words.pop(0)
        assert words, f"{where}: no subcommand"
        command = parser
        while _subcommands(command):
            assert words[0] in _subcommands(command), (
                f"{where}: {words[0]!r} is not one of {sorted(_subcommands(command))}"
            )
            command = _subcommands(command)[words.pop(0)]
        for word in words:
            flag = word.split("=")[0]
            if flag.startswith("--"):
                assert flag in _flags(command) or flag in _flags(parser), f"{where}: no flag {flag}"


def _links(page: str) -> list[str]:
    return re.findall(r"\]\(([^)\s]+)\)", FENCE.sub("", _text(page)))


@pytest.mark.parametrize("page", PAGES)
def test_every_local_link_and_anchor_resolves(page):
    folder = os.path.dirname(page)
    for link in _links(page):
        if re.match(r"[a-z]+:", link):
            continue
        path, _, anchor = link.partition("#")
        target = os.path.normpath(os.path.join(folder, path)) if path else page
        assert os.path.exists(os.path.join(ROOT, target)), f"{page}: {link} (no {target})"
        if anchor:
            assert target.endswith(".md"), f"{page}: {link}"
            assert anchor in _anchors(target), f"{page}: {link} (no heading with that anchor in {target})"


def test_the_readme_links_every_page_and_each_page_links_back():
    links = set(_links("README.md"))
    for page in PAGES[1:]:
        lines = _text(page).splitlines()
        assert lines[0].startswith("# ") and "](../README.md)" in lines[2], (
            f"{page}: a title, then a one-line summary with a link back"
        )
        assert page in {link.partition("#")[0] for link in links}, f"README.md does not link {page}"


def test_the_version_is_the_same_in_the_package_pyproject_and_the_changelog():
    import kdistill

    pyproject = re.search(r'^version = "([^"]+)"', _text("pyproject.toml"), re.M).group(1)
    first_heading = next(line for line in _text("CHANGELOG.md").splitlines() if line.startswith("## "))
    assert kdistill.__version__ == pyproject and first_heading.startswith(f"## {pyproject}")
