"""Reading the Markdown of README.md and docs/: headings, links, code blocks and the command lines in them.

Shared by tests/test_docs.py (links, commands, headings) and tests/test_docs_quickstart.py (running them).
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
sys.path.insert(0, str(DOCS / "_ext"))

import embserve_docs  # noqa: E402  (docs/_ext: the generators the site build uses)

PROGS = ("embserve", "embserve-train", "embserve-server")
FENCE = re.compile(r"^(```+|~~~+)\s*\{?([\w-]*)\}?")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
# The spot in the README's quick start that the text-embedding work fills in.
TEXT_EMBEDDING_SPOT = ("<!-- text-embedding quick start -->", "<!-- /text-embedding quick start -->")


@dataclass(frozen=True)
class CodeBlock:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    in_text_embedding_spot: bool = False


def markdown_files() -> list[Path]:
    """README.md and every Markdown page of the manual (not the built site)."""
    return [REPO / "README.md", *sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)]


def code_blocks(path: Path) -> list[CodeBlock]:
    blocks: list[CodeBlock] = []
    fence: str | None = None
    lang, start, spot = "", 0, False
    body: list[str] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if fence is None:
            if line.strip() == TEXT_EMBEDDING_SPOT[0]:
                spot = True
            elif line.strip() == TEXT_EMBEDDING_SPOT[1]:
                spot = False
            elif m := FENCE.match(line):
                fence, lang, start, body = m.group(1), m.group(2), n, []
        elif line.startswith(fence):
            blocks.append(CodeBlock(path, start, lang, "\n".join(body), spot))
            fence = None
        else:
            body.append(line)
    return blocks


def prose(path: Path) -> list[tuple[int, str]]:
    """(line number, line) of every line outside code blocks."""
    out, fence = [], None
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if fence is None and (m := FENCE.match(line)):
            fence = m.group(1)
        elif fence is not None and line.startswith(fence):
            fence = None
        elif fence is None:
            out.append((n, line))
    return out


def headings(path: Path) -> list[str]:
    return [re.sub(r"^#+\s+", "", line).strip() for _, line in prose(path) if re.match(r"^#{1,6} ", line)]


def slug(heading: str) -> str:
    """The anchor GitHub and MyST (myst_heading_anchors) give a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def links(path: Path) -> list[tuple[int, str]]:
    """(line, target) of every Markdown link and image outside code blocks."""
    return [(n, m.group(1) or m.group(2)) for n, line in prose(path) for m in LINK.finditer(re.sub(r"`[^`]*`", "", line))]


# ------------------------------------------------------------------------------------ command lines


@dataclass(frozen=True)
class Command:
    where: str  # "FILE:LINE"
    prog: str
    args: tuple[str, ...]
    line: str
    in_text_embedding_spot: bool


def _logical_lines(block: CodeBlock) -> list[tuple[int, str]]:
    """Lines of a shell or console block with continuations joined; console output left out."""
    lines: list[tuple[int, str]] = []
    pending, first = "", 0
    console = block.lang == "console" or (block.lang == "" and any(line.startswith("$ ") for line in block.text.splitlines()))
    for i, raw in enumerate(block.text.splitlines(), block.line + 1):
        line = raw.rstrip()
        if not pending:
            if console:
                if not line.startswith("$ "):
                    continue  # output
                line = line[2:]
            first = i
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append((first, pending + line))
        pending = ""
    return lines


def commands(blocks: list[CodeBlock]) -> list[Command]:
    """Every invocation of embserve, embserve-train or embserve-server in shell-like code blocks."""
    found: list[Command] = []
    for block in blocks:
        if block.lang not in ("", "bash", "sh", "console", "shell"):
            continue
        for lineno, line in _logical_lines(block):
            try:
                tokens = shlex.split(line, comments=True)
            except ValueError:
                continue  # not shell (an output line in a bare block)
            segment: list[str] = []
            for tok in [*tokens, ";"]:
                if tok in (";", "|", "&&", "||", "&"):
                    for j, t in enumerate(segment):
                        # In a bare block that is not a console session, only a line that starts with the
                        # program is a command (the others are drawings and listings).
                        if Path(t).name in PROGS and (j == 0 or block.lang != "") and (j == 0 or segment[j - 1] != "install"):
                            where = f"{block.path.relative_to(REPO)}:{lineno}"
                            found.append(Command(where, Path(t).name, tuple(segment[j + 1 :]), line, block.in_text_embedding_spot))
                            break
                    segment = []
                else:
                    segment.append(tok)
    return found


def option_strings(parser: argparse.ArgumentParser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings}


def check_command(cmd: Command) -> str | None:
    """None when the command names a real subcommand and real flags; else what is wrong."""
    parser = embserve_docs.build_parser(cmd.prog)
    subs = embserve_docs.subcommands(parser)
    args = list(cmd.args)
    if subs:
        if not args or args[0].startswith("-"):
            ok = all(a.split("=")[0] in option_strings(parser) for a in args if a.startswith("-"))
            return None if args and ok else f"{cmd.where}: {cmd.prog} without a subcommand: {cmd.line}"
        if args[0] not in subs:
            return f"{cmd.where}: {cmd.prog} has no subcommand {args[0]!r} (it has {', '.join(subs)}): {cmd.line}"
        parser, args = subs[args[0]], args[1:]
    known = option_strings(parser)
    for a in args:
        if a.startswith("-") and a != "-" and not re.fullmatch(r"-[\d.]+", a) and a.split("=")[0] not in known:
            return f"{cmd.where}: {cmd.prog} {cmd.args[0] if subs else ''} has no option {a.split('=')[0]!r}: {cmd.line}"
    return None
