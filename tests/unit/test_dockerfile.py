"""The Dockerfile's invariants, read from the file (no Docker engine needed).

No engine runs where the tests run, so the image cannot be built here; these
tests pin what a cluster relies on instead: a pinned base, a numeric non-root
user, `rollbackd` as the entry point, writable paths that match the chart,
and a build context that carries the runtime package but nothing else: no
tests, no `rollbackd.testing`, no demo or test extra.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case
    args: str


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with line continuations joined and comments dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    """Instructions grouped per build stage, each starting with its FROM."""
    result: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def global_args(instructions: list[Instruction]) -> dict[str, str]:
    """ARG defaults declared before the first FROM (the ones FROM may use)."""
    args: dict[str, str] = {}
    for instruction in instructions:
        if instruction.keyword == "FROM":
            break
        if instruction.keyword == "ARG":
            name, _, default = instruction.args.partition("=")
            args[name] = default.strip('"')
    return args


def base_image(from_instruction: Instruction, args: dict[str, str]) -> str:
    image = from_instruction.args.split()[0]
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), image)


def is_pinned(image: str) -> bool:
    """A digest, or a tag that names a version (not latest, not absent)."""
    if "@sha256:" in image:
        return True
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:  # no tag (the colon belonged to a registry port)
        return False
    return tag != "latest" and bool(re.match(r"\d", tag))


def ignore_matches(pattern: str, path: str) -> bool:
    """Docker's .dockerignore matching: `*` stays in one path segment, `**`
    crosses them, and a pattern that matches a directory covers its contents."""
    pattern = pattern.strip("/")
    regex = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            regex += ".*"
            i += 2
        elif pattern[i] == "*":
            regex += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            regex += "[^/]"
            i += 1
        else:
            regex += re.escape(pattern[i])
            i += 1
    return re.fullmatch(regex + "(?:/.*)?", path) is not None


def is_excluded(path: str, patterns: list[str]) -> bool:
    """The last matching pattern decides; `!` re-includes."""
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        if ignore_matches(pattern.removeprefix("!"), path):
            excluded = not negated
    return excluded


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    return stages(instructions)[-1]


@pytest.fixture(scope="module")
def ignore_patterns() -> list[str]:
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _last(stage: list[Instruction], keyword: str) -> Instruction:
    found = [i for i in stage if i.keyword == keyword]
    assert found, f"the final stage has no {keyword}"
    return found[-1]


# --- the parsing helpers themselves ----------------------------------------------


def test_parser_joins_continued_lines_and_skips_comments() -> None:
    parsed = parse_dockerfile("# c\nFROM a:1 AS b\nRUN x \\\n  # inside\n  && y\nUSER 1\n")
    assert parsed == [
        Instruction("FROM", "a:1 AS b"),
        Instruction("RUN", "x && y"),
        Instruction("USER", "1"),
    ]


@pytest.mark.parametrize(
    ("image", "pinned"),
    [
        ("python:3.11-slim-bookworm", True),
        ("python@sha256:" + "0" * 64, True),
        ("python:latest", False),
        ("python", False),
        ("registry.local:5000/python", False),
        ("python:slim", False),
    ],
)
def test_pinned_means_a_version_tag_or_a_digest(image: str, pinned: bool) -> None:
    assert is_pinned(image) is pinned


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("*", ".venv/bin/python", True),
        ("rollbackd/", "rollbackd/cli.py", True),
        ("**/__pycache__", "rollbackd/sources/__pycache__/x.pyc", True),
        ("**/*.sqlite", "journal.sqlite", True),
        ("*.md", "docs/a.md", False),
    ],
)
def test_ignore_matching_follows_docker_rules(pattern: str, path: str, matches: bool) -> None:
    assert ignore_matches(pattern, path) is matches


# --- the image ----------------------------------------------------------------


def test_every_base_image_is_a_pinned_slim_python_3_11(instructions: list[Instruction]) -> None:
    args = global_args(instructions)
    images = [base_image(s[0], args) for s in stages(instructions)]
    assert len(images) >= 2, "expected a builder stage and a runtime stage"
    for image in images:
        assert is_pinned(image), f"{image!r} is not pinned to a version or digest"
        assert image.startswith("python:3.11-slim"), image


def test_runtime_user_is_numeric_and_not_root(final_stage: list[Instruction]) -> None:
    user, _, group = _last(final_stage, "USER").args.partition(":")
    assert user.isdigit() and int(user) == 65532
    assert not group or (group.isdigit() and int(group) != 0)
    # Nothing after USER may run as root again.
    after = final_stage[final_stage.index(_last(final_stage, "USER")) :]
    assert all(i.keyword != "RUN" for i in after)


def test_entrypoint_is_rollbackd_running_the_mounted_config(
    final_stage: list[Instruction],
) -> None:
    assert json.loads(_last(final_stage, "ENTRYPOINT").args) == ["rollbackd"]
    assert json.loads(_last(final_stage, "CMD").args) == [
        "run",
        "--config",
        "/etc/rollbackd/rollbackd.yaml",
    ]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["rollbackd"] == "rollbackd.cli:main"


def test_runtime_needs_no_writable_root(final_stage: list[Instruction]) -> None:
    env = " ".join(i.args for i in final_stage if i.keyword == "ENV")
    for setting in ("HOME=/tmp", "TMPDIR=/tmp", "PYTHONDONTWRITEBYTECODE=1"):
        assert setting in env
    assert json.loads(_last(final_stage, "VOLUME").args) == ["/var/lib/rollbackd"]
    journal_copy = [
        i for i in final_stage if i.keyword == "COPY" and i.args.endswith(" /var/lib/rollbackd")
    ]
    assert len(journal_copy) == 1 and "--chown=65532:65532" in journal_copy[0].args


def test_runtime_stage_takes_only_the_built_venv(final_stage: list[Instruction]) -> None:
    copies = [i for i in final_stage if i.keyword in {"COPY", "ADD"}]
    assert copies and all(i.keyword == "COPY" and "--from=builder" in i.args for i in copies)


def test_build_smoke_tests_the_installed_package(instructions: list[Instruction]) -> None:
    """A wheel missing its data files must break the build, not the running pod."""
    builder = stages(instructions)[0]
    runs = " ".join(i.args for i in builder if i.keyword == "RUN")
    assert "/opt/rollbackd/bin/rollbackd --help" in runs
    assert "openapi.yaml" in runs


def test_builder_installs_only_the_runtime_dependencies(instructions: list[Instruction]) -> None:
    builder = stages(instructions)[0]
    installs = [
        i.args for i in builder if i.keyword == "RUN" and "/opt/rollbackd/bin/pip install" in i.args
    ]
    assert len(installs) == 1
    target = installs[0].split("pip install", 1)[1].split("&&", 1)[0].split()
    assert target == ["."], f"the image installs {target}, not the bare package"


def test_build_fails_when_the_image_carries_test_or_demo_code(
    instructions: list[Instruction],
) -> None:
    """The build itself proves the image has no pytest, jsonpatch or rollbackd.testing,
    and that `rollbackd demo` there names the extra it needs."""
    builder = stages(instructions)[0]
    runs = " ".join(i.args for i in builder if i.keyword == "RUN")
    assert "('pytest', 'jsonpatch', 'rollbackd.testing')" in runs
    assert '/opt/rollbackd/bin/rollbackd demo 2>&1 | grep -q "needs the demo extra"' in runs


def test_test_and_demo_packages_are_extras_not_runtime_dependencies() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]

    def names(requirements: list[str]) -> set[str]:
        return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requirements}

    runtime = names(project["dependencies"])
    extras = project["optional-dependencies"]
    assert not runtime & {"jsonpatch", "pytest", "pytest-asyncio", "hypothesis"}
    assert "jsonpatch" in names(extras["demo"])
    assert "rollbackd[demo]" in extras["test"] and "pytest" in names(extras["test"])
    assert "rollbackd[test]" in extras["dev"]


def test_no_healthcheck_kubernetes_probes_do_that(instructions: list[Instruction]) -> None:
    assert all(i.keyword != "HEALTHCHECK" for i in instructions)


# --- the build context ----------------------------------------------------------


def _context_sources(instructions: list[Instruction]) -> list[str]:
    sources: list[str] = []
    for instruction in instructions:
        if instruction.keyword != "COPY" or "--from=" in instruction.args:
            continue
        *paths, _destination = instruction.args.split()
        sources += [p for p in paths if not p.startswith("--")]
    return sources


def test_build_copies_files_that_exist_and_are_in_the_context(
    instructions: list[Instruction], ignore_patterns: list[str]
) -> None:
    sources = _context_sources(instructions)
    assert set(sources) == {"pyproject.toml", "README.md", "rollbackd"}
    for source in sources:
        assert (REPO / source).exists(), source
        assert not is_excluded(source, ignore_patterns), f"{source} is dockerignored"
    assert not is_excluded("rollbackd/cli.py", ignore_patterns)
    assert not is_excluded("rollbackd/openapi.yaml", ignore_patterns)


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".tools/bin/helm",
        ".git/config",
        "tests/unit/test_dockerfile.py",
        "helm/rollbackd/values.yaml",
        "rollbackd/__pycache__/cli.cpython-311.pyc",
        "journal.sqlite",
        "rollbackd/journal.sqlite-wal",
        "rollbackd/testing/__init__.py",
        "rollbackd/testing/kubesim/server.py",
    ],
)
def test_context_leaves_out_everything_else(ignore_patterns: list[str], path: str) -> None:
    assert is_excluded(path, ignore_patterns)
