"""Write docs/cli.md: every `stylex` command's `--help`, as the command line prints it at 100 columns.

python scripts/cli_reference.py          # rewrite docs/cli.md
python scripts/cli_reference.py --check  # exit 1 when docs/cli.md is not what the code says (a test runs this)
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from stylex.cli import main

OUT = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
WIDTH = 100


def _commands(group: click.Group, path: list[str]) -> list[tuple[list[str], click.Command]]:
    """(name path, command) of every command below `group`, depth first, in click's listing order."""
    found: list[tuple[list[str], click.Command]] = []
    ctx = click.Context(group, info_name=" ".join(path))
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        found.append(([*path, name], command))
        if isinstance(command, click.Group):
            found.extend(_commands(command, [*path, name]))
    return found


def _help(path: list[str]) -> str:
    """`stylex ... --help` as the command line prints it (through click's runner: the help option's names come from
    the group's settings, `-h, --help`, which a hand-made context missed)."""
    from click.testing import CliRunner

    result = CliRunner().invoke(main, [*path[1:], "--help"], prog_name="stylex", terminal_width=WIDTH)
    if result.exit_code != 0:
        raise RuntimeError(f"{' '.join(path)} --help failed: {result.output}")
    return result.output.rstrip("\n")


def markdown() -> str:
    """The whole reference, as docs/cli.md holds it."""
    commands = _commands(main, ["stylex"])
    lines = [
        "# Command reference",
        "",
        "Every command's `--help`, as `stylex` prints it (written by `python scripts/cli_reference.py`; a test checks",
        "that it matches the code). The README and [the tutorial](tutorial.md) say when to use which.",
        "",
        *[f"- [`{' '.join(p)}`](#{'-'.join(p)})" for p, _ in commands],
        "",
        '<a id="stylex"></a>',
        "",
        "## `stylex`",
        "",
        "```text",
        _help(["stylex"]),
        "```",
    ]
    for path, _command in commands:
        lines += ["", f'<a id="{"-".join(path)}"></a>', "", f"## `{' '.join(path)}`", "", "```text", _help(path), "```"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    text = markdown()
    if "--check" in sys.argv[1:]:
        if not OUT.is_file() or OUT.read_text(encoding="utf-8") != text:
            sys.exit(f"{OUT} is not what the code says; run `python scripts/cli_reference.py` and commit it.")
        print(f"{OUT} is up to date.")
    else:
        OUT.write_text(text, encoding="utf-8")
        print(f"wrote {OUT} ({len(text.splitlines())} lines)")
