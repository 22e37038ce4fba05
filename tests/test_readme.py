"""README is the user's guide, and it stays true: every `manage.py` command is in its command
table, with the same source of settings its `--help` gives, and every file it links exists."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import manage  # noqa: E402

README = (ROOT / "README.md").read_text(encoding="utf-8")


def _command_table(readme: str = README) -> dict[str, str]:
    """command -> its "Settings from" cell, from README's table under "## Commands"."""
    section = readme.split("\n## Commands\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        found = re.match(r"\| `python3 manage\.py ([a-z-]+)[^`]*` \| .* \| (.*) \|$", line)
        if found:
            rows[found.group(1)] = found.group(2).strip()
    return rows


def _help_settings() -> dict[str, str]:
    """command -> where its --help says its settings come from."""
    subparsers = next(a for a in manage.parser()._actions if a.dest == "command")
    out = {}
    for name, command in subparsers.choices.items():  # type: ignore[attr-defined]
        text = " ".join(command.format_help().split())
        found = re.search(r"settings: (.*)$", text)
        assert found, f"{name} --help does not say where its settings come from"
        out[name] = found.group(1)
    return out


def test_every_command_is_in_the_readme_table_with_its_settings_source() -> None:
    table, helps = _command_table(), _help_settings()
    assert sorted(table) == sorted(helps), "README's command table and manage.py's commands differ"
    for name, source in helps.items():
        assert table[name] == source, f"{name}: README says {table[name]!r}, --help says {source!r}"


def test_a_drifted_row_is_caught() -> None:
    broken = README.replace("| none (the tests set their own) |", "| local.settings.json |")
    assert _command_table(broken)["test"] != _help_settings()["test"]
    assert "serve" not in _command_table(re.sub(r"\| `python3 manage\.py serve.*\n", "", README))


def test_every_linked_file_exists() -> None:
    for readme in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = readme.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" in target:
                continue
            assert (readme.parent / target).exists(), f"{readme.relative_to(ROOT)} links {target}, which does not exist"


def test_the_readme_points_at_the_contract_in_this_repository() -> None:
    assert "](contract/extension-points.md)" in README
    assert "../shared" not in README
