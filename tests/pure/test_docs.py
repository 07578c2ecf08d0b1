"""The manual and the README stay true: nothing of the old README lost, links and anchors resolve,
every documented command line names real subcommands and flags, the reference covers the public API."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
from docs_text import (
    DOCS,
    REPO,
    TEXT_EMBEDDING_SPOT,
    Command,
    check_command,
    code_blocks,
    commands,
    embserve_docs,
    headings,
    links,
    markdown_files,
    slug,
)

# The section headings of the 1,015-line README before it became a front page
# (`git show 897eea3:README.md`, headings outside code blocks). Each must have a home in docs/.
OLD_README_HEADINGS = [
    "embserve",
    "Quick start",
    "Coming from gensim",
    "Training and evaluating tables",
    "Language-model token tables",
    "Learning a table the way a language model does (`--model nexttoken`)",
    "Skip-gram vs the next-token LM on GCIDE (one run, `bench/bench_lm.py`)",
    "The map of meaning: explore a table in the browser",
    "Watching a map form: one table, many versions",
    "The same map from the command line",
    "Operations",
    "docker-compose",
    "Monitoring",
    "What the tests check",
    "Kubernetes: replicas, client-side load balancing, rolling table updates",
    "Limits and security",
    "Limits",
    "TLS",
    "Tokens",
    "The HTTP port (metrics and explorer)",
    "Bad bundles and disk faults",
    "Performance",
    "Soak",
    "Layout",
    "Importing tables",
    "Malformed input",
    "Big files",
    "Concurrent writers",
    "Memory",
    "Bundle format 1",
    "API (embserve.v1)",
    "Development",
]

# Figures that must keep the command that produced them and its date, wherever they moved.
DATED_FIGURES = {
    "30.5 s vs gensim's": ("bench/bench_import.py", "2026-11-29"),
    "**0 failed valid calls": ("bench/bench_soak.py", "2026-11-29"),
    "0.09× of the 2,289 MiB": ("bench/bench_clustered.py", "2026-11-29"),
    "272.8 MiB to a server": ("bench/bench_memory.py", "2026-11-29"),
    "3.52 s vs gensim's 42.4 s": ("bench/bench_gensim_face.py", "2026-11-29"),
    "| 859 | 841 | 11,552": ("bench/bench_lm.py", "2026-11-29"),
    "| 230 / 252 |": ("bench/bench_lookup.py", "2026-11-29"),
    "0 of 1,124 across the rolling update": ("bench/bench_cluster.py", "2026-11-29"),
    "11 to 2,010 threads": ("bench/bench_slowloris.py", None),
    "| **10,039** | 204.9 |": ("bench/bench_infinity.py", "2026-12-06"),
}


# Pages another branch is adding right now (issue 24's list), which a merged page may already name.
# Remove each name as its page lands; the site's toctree globs pick the page up by itself.
BEING_ADDED: set[str] = set()


def docs_pages() -> list[Path]:
    return [p for p in markdown_files() if p.parent != REPO]


def test_every_section_of_the_old_readme_has_a_home_in_the_manual() -> None:
    found = {h for page in docs_pages() for h in headings(page)}
    missing = [h for h in OLD_README_HEADINGS if h not in found]
    assert not missing, f"old README sections with no heading in docs/: {missing}"


@pytest.mark.parametrize("figure", sorted(DATED_FIGURES))
def test_a_moved_figure_keeps_its_command_and_date(figure: str) -> None:
    command, date = DATED_FIGURES[figure]
    for page in docs_pages():
        text = page.read_text(encoding="utf-8")
        if figure in text:
            paragraph = next(p for p in re.split(r"\n\s*\n", text) if figure in p)
            # A table row's command and date sit in the paragraph above the table.
            context = text[max(0, text.index(paragraph) - 1500) : text.index(paragraph) + len(paragraph)]
            assert command in context, f"{page.name}: {figure!r} lost its command {command}"
            if date:
                assert date in context, f"{page.name}: {figure!r} lost its date {date}"
            return
    pytest.fail(f"figure {figure!r} is in no page of docs/")


def test_readme_is_a_front_page() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert 100 <= len(lines) <= 220, f"README.md has {len(lines)} lines; the front page should stay near 150-200"
    first_screen = "\n".join(lines[:40])
    for what in ("make serve", "make test", "docs/explorer.png", "## Quick start"):
        assert what in first_screen, f"{what!r} is not in the README's first screen (40 lines)"
    assert TEXT_EMBEDDING_SPOT[0] in text and TEXT_EMBEDDING_SPOT[1] in text


@pytest.mark.parametrize("page", markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_and_anchors_resolve(page: Path) -> None:
    problems = []
    for lineno, target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue  # http:, https:, mailto:: not checked offline
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if not dest.exists():
            problems.append(f"{page.name}:{lineno}: {target} -> {dest} does not exist")
            continue
        if anchor and dest.suffix == ".md" and anchor not in {slug(h) for h in headings(dest)}:
            problems.append(f"{page.name}:{lineno}: {target}: no heading in {dest.name} has the anchor #{anchor}")
    assert not problems, "\n".join(problems)


def documented_commands() -> list[Command]:
    return [c for page in markdown_files() for c in commands(code_blocks(page))]


def test_the_docs_show_commands_of_every_program() -> None:
    progs = {c.prog for c in documented_commands()}
    assert progs == {"embserve", "embserve-train", "embserve-server"}


def test_every_documented_command_names_a_real_subcommand_and_flags() -> None:
    cmds = [c for c in documented_commands() if not c.in_text_embedding_spot]
    assert len(cmds) > 25
    problems = [p for c in cmds if (p := check_command(c))]
    assert not problems, "\n".join(problems)


def test_the_checker_refuses_a_made_up_subcommand_and_flag() -> None:
    bad_sub = Command("x:1", "embserve", ("simlar", "cat"), "embserve simlar cat", False)
    bad_flag = Command("x:2", "embserve-train", ("import", "--formt", "npy"), "embserve-train import --formt npy", False)
    bad_server = Command("x:3", "embserve-server", ("--tabels", "t"), "embserve-server --tabels t", False)
    good = Command("x:4", "embserve", ("similar", "king", "--negative", "man", "-n", "3"), "", False)
    assert "no subcommand 'simlar'" in (check_command(bad_sub) or "")
    assert "no option '--formt'" in (check_command(bad_flag) or "")
    assert "no option '--tabels'" in (check_command(bad_server) or "")
    assert check_command(good) is None


def test_text_embedding_quick_start_commands() -> None:
    """The README's marked spot: checked like every other command once `embserve embed` exists."""
    cmds = [c for c in documented_commands() if c.in_text_embedding_spot]
    assert [c.args[0] for c in cmds] == ["embed"], "the text-embedding spot shows `embserve embed ...`"
    if "embed" not in embserve_docs.subcommands(embserve_docs.build_parser("embserve")):
        pytest.skip("`embserve embed` is not in this tree yet (the embed branch adds it); its flags are checked once it is")
    problems = [p for c in cmds if (p := check_command(c))]
    assert not problems, "\n".join(problems)


def test_client_reference_documents_every_public_name() -> None:
    client = importlib.import_module("embserve_client")
    page = (DOCS / "reference" / "client.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\.\. auto(?:class|exception|data|function):: embserve_client\.(\w+)$", page, re.M))
    missing = sorted(set(client.__all__) - documented)
    assert not missing, f"in embserve_client.__all__ but not in docs/reference/client.md: {missing}"
    # The build-time check says the same thing from Sphinx's own record of what it documented.
    assert embserve_docs.public_names_missing({f"embserve_client.{n}" for n in documented}) == []
    assert embserve_docs.public_names_missing(set()) == sorted(client.__all__)


def test_proto_reference_has_every_message_field_enum_and_rpc() -> None:
    """Oracle: protoc's own parse (the generated descriptors) against the generator's page."""
    pb2 = importlib.import_module("embserve_client.pb.embserve.v1.embserve_pb2")
    page = embserve_docs.proto_markdown()
    fd = pb2.DESCRIPTOR
    for message in fd.message_types_by_name.values():
        section = page.split(f"\n#### {message.name}\n", 1)
        assert len(section) == 2, f"message {message.name} has no section"
        body = section[1].split("\n#### ", 1)[0]
        for f in message.fields:
            assert re.search(rf"^\| `{f.name}` \| .* \| {f.number} \|", body, re.M), f"{message.name}.{f.name} missing"
    for enum in fd.enum_types_by_name.values():
        body = page.split(f"\n#### {enum.name}\n", 1)[1].split("\n#### ", 1)[0]
        for v in enum.values:
            assert f"| `{v.name}` | {v.number} |" in body
    for service in fd.services_by_name.values():
        body = page.split(f"\n#### {service.name}\n", 1)[1].split("\n#### ", 1)[0]
        for m in service.methods:
            assert f"| `{m.name}` | [{m.input_type.name}](#{m.input_type.name.lower()})" in body
    assert "Vectors for many keys or ids" in page  # comments come along
    assert "| `MISSING_POLICY_SUBWORD` | 4 | compose from character n-grams (fastText tables only) |" in page


def test_proto_parser_refuses_what_it_does_not_know() -> None:
    with pytest.raises(ValueError, match="does not know"):
        embserve_docs.parse_proto('syntax = "proto3";\nmessage A {\n  map<string, int32> m = 1;\n  oneof x {\n}\n')


def test_cli_reference_has_every_subcommand() -> None:
    for prog in ("embserve", "embserve-train", "embserve-server"):
        text = embserve_docs.cli_markdown(prog)
        assert f"## {prog}\n" in text and "usage:" in text
        for name in embserve_docs.subcommands(embserve_docs.build_parser(prog)):
            assert f"### {prog} {name}\n" in text
        assert f"<!-- generated: cli {prog} -->" in (DOCS / "reference" / "cli.md").read_text(encoding="utf-8")


def test_files_of_the_repository_name_only_pages_that_exist() -> None:
    """A comment or message that sends the reader to a page of docs/ (a compose file, a manifest, code) must
    find the page there: the manual's pages moved, and three such pointers once led nowhere."""
    problems = []
    roots = ["README.md", "Makefile", "Dockerfile", "docker-compose.yml", "deploy", "scripts", "proto", "docs",
             "format", "client", "index", "server", "trainer", "bench", "tests"]
    files = [p for r in roots for p in ([REPO / r] if (REPO / r).is_file() else sorted((REPO / r).rglob("*")))]
    for path in files:
        name = str(path.relative_to(REPO))
        if not path.is_file() or path.suffix in (".png", ".npy", ".faiss", ".gz", ".pyc") or "_build" in path.parts:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for m in re.finditer(r"(?<![\w/.])docs/([\w./-]+?\.md)\b", text):
            if not (DOCS / m.group(1)).is_file() and m.group(1) not in BEING_ADDED:
                problems.append(f"{name}: names docs/{m.group(1)}, which does not exist")
    assert not problems, "\n".join(problems)


def test_the_layout_names_only_modules_that_exist() -> None:
    """docs/development.md's Layout maps every module: a module renamed or moved must be renamed there."""
    block = next(b for b in code_blocks(DOCS / "development.md") if "format/embserve_format/" in b.text)
    package: Path | None = None
    named, problems = set(), []
    for line in block.text.splitlines():
        if m := re.match(r"^(\w+/embserve_\w+)/\s", line):
            package = REPO / m.group(1)
            continue
        if package is None or not line.startswith(" "):
            continue
        for module in re.findall(r"(?<![\w/.])(\w+)\.py\b", line):
            named.add((package, module))
            if not (package / f"{module}.py").is_file():
                problems.append(f"{package.relative_to(REPO)}/{module}.py is in the Layout but does not exist")
    assert not problems, "\n".join(problems)
    for package in {p for p, _ in named}:
        modules = {p.stem for p in package.glob("*.py")} - {"__init__"}
        unmapped = sorted(modules - {m for p, m in named if p == package})
        assert not unmapped, f"{package.relative_to(REPO)}: modules missing from docs/development.md's Layout: {unmapped}"


def test_files_the_docs_name_exist() -> None:
    """A test, bench script, script or manifest the README or the manual names (tests/…/test_x.py,
    bench/bench_x.py, deploy/…) is where it says: tests were regrouped and modules renamed before."""
    pattern = re.compile(r"(?<![\w/.])((?:tests|bench|scripts|deploy|proto|format|client|index|server|trainer)/[\w./-]*\.(?:py|sh|ya?ml|json|md|proto|txt))\b")
    problems = []
    for page in markdown_files():
        for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            for path in pattern.findall(line):
                if not (REPO / path).exists():
                    problems.append(f"{page.relative_to(REPO)}:{n}: {path} does not exist")
    assert not problems, "\n".join(problems)
