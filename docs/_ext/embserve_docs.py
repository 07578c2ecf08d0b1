"""Sphinx extension: reference pages generated at build time, and a check that nothing public went missing.

- ``<!-- generated: proto -->`` in a page becomes the reference of proto/embserve/v1/*.proto: every
  service, RPC, message, field, enum and value with its comment (:func:`proto_markdown`).
- ``<!-- generated: cli PROG -->`` becomes the help of console script PROG and of each of its
  subcommands, straight from its argparse parser (:func:`cli_markdown`).
- After reading every page, each name in ``embserve_client.__all__`` must have been documented by
  autodoc somewhere; a missing one is a warning, which ``sphinx-build -W`` turns into a failure.

Nothing is written into the source tree: the text is substituted when Sphinx reads the page.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
PROTO_DIR = ROOT / "proto" / "embserve" / "v1"
MARKER = re.compile(r"<!-- generated: (proto|cli [\w-]+) -->")

# Console script -> module whose build_parser() makes its argparse parser.
PARSERS = {
    "embserve": "embserve_client.cli",
    "embserve-server": "embserve_server.cli",
    "embserve-train": "embserve_trainer.cli",
}


# ---------------------------------------------------------------------------------------------- proto


@dataclass
class ProtoItem:
    """One service, rpc, message, enum, field or enum value, with its comment."""

    kind: str
    name: str
    doc: str = ""
    type: str = ""  # field: its type (with "repeated"/"optional"); rpc: "Request -> Response"
    number: str = ""
    children: list[ProtoItem] = field(default_factory=list)


_BLOCK = re.compile(r"^(service|message|enum)\s+(\w+)\s*\{\s*(\})?$")
_RPC = re.compile(r"^rpc\s+(\w+)\s*\(\s*(stream\s+)?([\w.]+)\s*\)\s*returns\s*\(\s*(stream\s+)?([\w.]+)\s*\)\s*;$")
_FIELD = re.compile(r"^((?:repeated|optional)\s+)?([\w.<>, ]+?)\s+(\w+)\s*=\s*(\d+)\s*;$")
_VALUE = re.compile(r"^(\w+)\s*=\s*(-?\d+)\s*;$")


def parse_proto(text: str) -> tuple[str, list[ProtoItem]]:
    """The file's header comment and its top-level items, each with the comment above (or after) it.

    Handles what embserve's protos use: services with unary or streaming rpcs, messages with scalar,
    message, enum, repeated and optional fields, enums. A construct it does not know is an error, so
    the reference never silently drops part of the contract.
    """
    header: list[str] = []
    pending: list[str] = []
    stack: list[ProtoItem] = []
    top: list[ProtoItem] = []
    seen_code = False
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith("//"):
            text = raw.strip()[2:]
            pending.append(text[1:] if text.startswith(" ") else text)
            continue
        code, _, trailing = line.partition("//")
        code, trailing = code.strip(), trailing.strip()
        if not code:
            if not seen_code and pending:
                header, pending = pending, []
            continue
        seen_code = True
        doc = " ".join([*pending, trailing]).strip() if code.split()[0] != "syntax" else "\n".join(pending)
        pending = []
        if code.split()[0] in ("syntax", "package", "import", "option"):
            if not header and doc and not top:
                header = [doc]  # the file's comment sits right above `syntax`
            continue
        if m := _BLOCK.match(code):
            item = ProtoItem(m.group(1), m.group(2), doc)
            (stack[-1].children if stack else top).append(item)
            if not m.group(3):
                stack.append(item)
        elif code == "}":
            if not stack:
                raise ValueError(f"line {lineno}: '}}' closes nothing")
            stack.pop()
        elif stack and stack[-1].kind == "service" and (m := _RPC.match(code)):
            req = ("stream " if m.group(2) else "") + m.group(3)
            resp = ("stream " if m.group(4) else "") + m.group(5)
            stack[-1].children.append(ProtoItem("rpc", m.group(1), doc, f"{req} -> {resp}"))
        elif stack and stack[-1].kind == "message" and (m := _FIELD.match(code)):
            stack[-1].children.append(ProtoItem("field", m.group(3), doc, (m.group(1) or "") + m.group(2).strip(), m.group(4)))
        elif stack and stack[-1].kind == "enum" and (m := _VALUE.match(code)):
            stack[-1].children.append(ProtoItem("value", m.group(1), doc, number=m.group(2)))
        else:
            raise ValueError(f"line {lineno}: the proto reference generator does not know {code!r}")
    if stack:
        raise ValueError(f"{stack[-1].kind} {stack[-1].name} is never closed")
    return "\n".join(header), top


def _cell(text: str) -> str:
    """A comment as one table cell: Markdown's special characters escaped, backquoted code kept."""
    parts = re.split(r"(`[^`]*`)", " ".join(text.split()))
    for i in range(0, len(parts), 2):
        parts[i] = re.sub(r"([\\_*<>\[\]|])", r"\\\1", parts[i])
    return "".join(parts).replace("`|`", "`\\|`") or "—"


def _type_link(type_: str, names: set[str]) -> str:
    words = type_.split()
    base = words[-1]
    linked = f"[{base}](#{base.lower()})" if base in names else f"`{base}`"
    return " ".join([*words[:-1], linked])


def proto_markdown(proto_dir: Path = PROTO_DIR) -> str:
    """Markdown reference of every .proto file under ``proto_dir``: services, messages, enums."""
    out: list[str] = []
    for path in sorted(proto_dir.glob("*.proto")):
        header, items = parse_proto(path.read_text(encoding="utf-8"))
        names = {i.name for i in items if i.kind in ("message", "enum")}
        out += [f"## {path.name}", "", "```text", header, "```", ""]
        for kind, title in (("service", "Services"), ("message", "Messages"), ("enum", "Enums")):
            group = [i for i in items if i.kind == kind]
            if not group:
                continue
            out += [f"### {title}", ""]
            for item in group:
                out += [f"#### {item.name}", "", _cell(item.doc) if item.doc else "", ""]
                if kind == "service":
                    out += ["| RPC | request → response | what |", "| --- | --- | --- |"]
                    for rpc in item.children:
                        req, resp = rpc.type.split(" -> ")
                        out.append(f"| `{rpc.name}` | {_type_link(req, names)} → {_type_link(resp, names)} | {_cell(rpc.doc)} |")
                elif kind == "message":
                    if not item.children:
                        out.append("No fields.")
                    else:
                        out += ["| field | type | number | what |", "| --- | --- | --- | --- |"]
                        for f in item.children:
                            out.append(f"| `{f.name}` | {_type_link(f.type, names)} | {f.number} | {_cell(f.doc)} |")
                else:
                    out += ["| value | number | what |", "| --- | --- | --- |"]
                    for v in item.children:
                        out.append(f"| `{v.name}` | {v.number} | {_cell(v.doc)} |")
                out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- CLI


def build_parser(prog: str) -> argparse.ArgumentParser:
    """The argparse parser of console script ``prog`` (its module's ``build_parser()``)."""
    parser: argparse.ArgumentParser = importlib.import_module(PARSERS[prog]).build_parser()
    return parser


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Subcommand name -> its parser (empty for a parser without subcommands)."""
    for action in parser._actions:  # argparse keeps no public list of subparsers
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def cli_markdown(prog: str) -> str:
    """Markdown: the help of ``prog`` and of each subcommand, as argparse prints it (100 columns)."""
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal: fix the width so builds agree
    try:
        parser = build_parser(prog)
        out = [f"## {prog}", "", "```text", parser.format_help().rstrip(), "```", ""]
        for name, sub in subcommands(parser).items():
            out += [f"### {prog} {name}", "", "```text", sub.format_help().rstrip(), "```", ""]
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- Sphinx


def _substitute(app: Any, docname: str, source: list[str]) -> None:
    def generate(m: re.Match[str]) -> str:
        what = m.group(1)
        return proto_markdown() if what == "proto" else cli_markdown(what.split()[1])

    source[0] = MARKER.sub(generate, source[0])


def public_names_missing(documented: set[str]) -> list[str]:
    """Names in ``embserve_client.__all__`` that no autodoc directive documented."""
    client = importlib.import_module("embserve_client")
    return sorted(n for n in client.__all__ if f"embserve_client.{n}" not in documented)


def _check_public_names(app: Any, env: Any) -> None:
    from sphinx.util import logging

    documented = set(env.get_domain("py").objects)
    for name in public_names_missing(documented):
        logging.getLogger(__name__).warning(
            "embserve_client.%s is in embserve_client.__all__ but no reference page documents it "
            "(add it to docs/reference/client.md)", name, type="embserve", subtype="reference"
        )


def setup(app: Any) -> dict[str, Any]:
    app.connect("source-read", _substitute)
    app.connect("env-check-consistency", _check_public_names)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
