"""Every code block of README.md and docs/**/*.md runs as written.

The conventions (the team's RULES, "Documentation code blocks"), read from an HTML comment on
the line(s) just before a fenced block:

- a ```python block runs as written in a fresh subprocess whose cwd is a fresh temp folder;
- ``<!-- continue -->``: the block runs in the same process, after the previous python block
  of the same file (names carry over);
- ``<!-- file: NAME.py -->``: the block is written to NAME.py in the temp folder instead of
  being run (multi-process examples); every block of that document finds it there;
- ``<!-- skip: REASON -->``: not run (it must still be valid Python); the reason is required;
- ```bash / ```console / ```text blocks are shown, not run, unless ``<!-- run -->`` (with
  ``<!-- continue -->`` too, a run shell block runs in the folder of the python block before it,
  after it). A ```console block runs its ``$ `` lines; the output lines shown under a command
  must appear, in order, in what it printed.

A failing block is reported as ``path:line``; its traceback points at the line of the
markdown file itself (the code is compiled with the document as its file name, padded so
line numbers match).

The markdown is parsed with markdown-it-py (the CommonMark parser MyST uses for the docs site),
so a fence inside a list item or a longer fence is read exactly as the site renders it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCUMENTS = [README, *sorted(p for p in (ROOT / "docs").rglob("*.md")
                             if not any(part.startswith(("_", ".")) for part in p.relative_to(ROOT).parts))]

PYTHON = frozenset({"python", "py", "python3"})
SHELL = frozenset({"bash", "sh", "shell", "console"})
MARKERS = frozenset({"continue", "file", "skip", "run"})
NOT_REASONS = re.compile(r"\b(slow|long|later|todo|fixme|broken|flaky|fails?)\b", re.IGNORECASE)
SESSION_TIMEOUT_S = 420
"""A session that launches a viewer may wait up to its launch_timeout (120 s) for it, twice if it
dies: seen at 240 s on this machine with six test suites running at once (load average 12)."""
_MARKER = re.compile(r"<!--\s*([A-Za-z-]+)\s*(?::\s*(.*?))?\s*-->")
_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\.py")


@dataclass(frozen=True)
class Block:
    """One fenced code block: where it is, its language, its code and its markers."""

    document: Path
    name: str  # the document's path as shown in messages, relative to the repository
    line: int  # 1-based line of the first line of code (the one after the opening fence)
    language: str
    code: str
    markers: dict[str, str]

    @property
    def where(self) -> str:
        return f"{self.name}:{self.line}"

    @property
    def is_python(self) -> bool:
        return self.language in PYTHON

    def step(self) -> dict[str, object]:
        return {"where": self.where, "document": str(self.document), "line": self.line,
                "language": self.language, "code": self.code}


@dataclass
class Session:
    """Blocks run one after another in one process (a block and its continued blocks)."""

    blocks: list[Block]
    files: dict[str, str] = field(default_factory=dict)  # NAME.py -> code, from file blocks

    @property
    def where(self) -> str:
        return self.blocks[0].where


@dataclass
class Document:
    path: Path
    blocks: list[Block]
    sessions: list[Session]
    skipped: list[Block]
    problems: list[str]


def read_blocks(path: Path, root: Path = ROOT) -> tuple[list[Block], list[str]]:
    """The fenced blocks of ``path`` with the markers in the HTML comments right before each."""
    name = str(path.relative_to(root))
    tokens = MarkdownIt("commonmark").parse(path.read_text(encoding="utf-8"))
    blocks: list[Block] = []
    problems: list[str] = []
    pending: dict[str, str] = {}
    for token in tokens:
        if token.type == "html_block":
            line = token.map[0] + 1 if token.map else 0
            for marker, value in _MARKER.findall(token.content):
                if marker not in MARKERS:
                    problems.append(f"{name}:{line}: unknown marker "
                                    f"'<!-- {marker} -->' (known: {', '.join(sorted(MARKERS))})")
                pending[marker] = value
            continue
        if token.type == "fence" and token.map is not None:
            language = token.info.split()[0].lower() if token.info.strip() else ""
            blocks.append(Block(path, name, token.map[0] + 2, language, token.content, pending))
        pending = {}  # a marker applies only to the block right after it
    return blocks, problems


def _check_block(block: Block, previous_python: Block | None) -> list[str]:
    """What is wrong with ``block``'s markers (empty when nothing is)."""
    problems = []
    markers = block.markers
    if markers and not (block.is_python or block.language in SHELL):
        problems.append(f"markers {sorted(markers)} on a ```{block.language or '(plain)'} block, "
                        "which is never run")
    if "skip" in markers:
        reason = markers["skip"]
        if not reason:
            problems.append("<!-- skip: REASON --> needs a reason, e.g. 'needs a CUDA GPU'")
        elif NOT_REASONS.search(reason):
            problems.append(f"'{reason}' is not a reason to skip a block: make the example small and "
                            "runnable, or say what this machine lacks")
        if len(markers) > 1:
            problems.append("a skipped block takes no other marker")
    if "file" in markers:
        if not block.is_python:
            problems.append("<!-- file: NAME.py --> is for python blocks")
        if not _FILE_NAME.fullmatch(markers["file"]):
            problems.append(f"<!-- file: {markers['file']} -->: give a plain NAME.py")
        if "continue" in markers or "run" in markers:
            problems.append("a file block is written, not run: it takes no continue/run")
    if "run" in markers and block.language not in SHELL:
        problems.append("<!-- run --> is for bash/console blocks (python blocks always run)")
    if "continue" in markers:
        if block.language in SHELL and "run" not in markers:
            problems.append("<!-- continue --> on a shell block that is not run (add <!-- run -->)")
        if previous_python is None:
            problems.append("<!-- continue --> but no python block before it in this file")
        elif "file" in previous_python.markers:
            problems.append(f"<!-- continue --> after {previous_python.where}, a file block, which is not "
                            "run: drop the marker (file blocks are written into the folder of every block)")
        elif "skip" in previous_python.markers:
            problems.append(f"<!-- continue --> after {previous_python.where}, which is skipped")
    if block.is_python:
        try:
            compile(block.code, block.where, "exec")
        except SyntaxError as error:
            problems.append(f"not valid Python: {error.msg} (line {block.line + (error.lineno or 1) - 1})")
    return [f"{block.where}: {problem}" for problem in problems]


def read_document(path: Path, root: Path = ROOT) -> Document:
    """``path``'s blocks grouped into the sessions that run them, and what is wrong in them."""
    blocks, problems = read_blocks(path, root)
    sessions: list[Session] = []
    skipped: list[Block] = []
    files: dict[str, str] = {}
    previous_python: Block | None = None
    for block in blocks:
        block_problems = _check_block(block, previous_python)
        problems += block_problems
        if block.is_python:
            previous_python = block
        if block_problems:
            continue
        markers = block.markers
        if "skip" in markers:
            skipped.append(block)
        elif "file" in markers:
            files[markers["file"]] = block.code
        elif block.is_python or "run" in markers:
            if "continue" in markers and sessions:
                sessions[-1].blocks.append(block)
            else:
                sessions.append(Session([block]))
    for name in files:
        if not any(name in block.code for block in blocks if block.markers.get("file") != name):
            problems.append(f"{path.relative_to(root)}: file block {name} is never run by another block")
    for session in sessions:
        session.files = files
    return Document(path, blocks, sessions, skipped, problems)


# Runs in the session's subprocess: python blocks are exec'd in one namespace, shell blocks
# run in the same folder; the first failure names its block and exits 1.
_DRIVER = r'''
import json, linecache, os, re, subprocess, sys, traceback

def fail(where, text):
    sys.stderr.write(text.rstrip() + "\n")
    sys.stderr.write(f"DOCS-BLOCK-FAILED {where}\n")
    sys.exit(1)

def run_python(step, namespace):
    document = step["document"]
    lines = open(document, encoding="utf-8").read().splitlines(True)
    linecache.cache[document] = (sum(map(len, lines)), None, lines, document)
    code = "\n" * (step["line"] - 1) + step["code"]  # line numbers of the markdown file
    try:
        exec(compile(code, document, "exec"), namespace)
    except BaseException:
        fail(step["where"], traceback.format_exc())

def run_shell(command, where):
    result = subprocess.run(["bash", "-eo", "pipefail", "-c", command], capture_output=True, text=True)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    if result.returncode != 0:
        fail(where, f"$ {command}\nexited with status {result.returncode}")
    return result.stdout + result.stderr

def run_console(step):
    commands = []  # [command, [expected output lines]]
    for line in step["code"].splitlines():
        if line.startswith("$ "):
            commands.append([line[2:], []])
        elif commands and commands[-1][0].endswith("\\"):
            commands[-1][0] = commands[-1][0][:-1] + "\n" + line
        elif commands and line.strip():
            commands[-1][1].append(line.strip())
    for command, expected in commands:
        output = [" ".join(line.split()) for line in run_shell(command, step["where"]).splitlines()]
        position = 0
        for wanted in expected:
            wanted = " ".join(wanted.split())
            while position < len(output) and wanted not in output[position]:
                position += 1
            if position == len(output):
                fail(step["where"], f"$ {command}\ndid not print, in this order, the line: {wanted}")
            position += 1

namespace = {"__name__": "__main__"}
for step in json.load(open(sys.argv[1], encoding="utf-8")):
    if step["language"] in ("python", "py", "python3"):
        run_python(step, namespace)
    elif step["language"] == "console":
        run_console(step)
    else:
        run_shell(step["code"], step["where"])
'''


@dataclass
class Outcome:
    returncode: int | None  # None: timed out
    output: str
    cwd: Path


def _stop_leftovers(tmp: Path) -> None:
    """End what the blocks left running outside their process group: a viewer started with
    ``launch=True`` runs in a session of its own and outlives the pipeline, as it should for a
    user. Each such process inherited the session's own TMPDIR, which is how it is found."""
    marker = f"TMPDIR={tmp}".encode()
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker in environ.read_bytes().split(b"\0"):
                os.kill(int(environ.parent.name), signal.SIGKILL)
        except (OSError, ValueError):
            continue  # gone already, or not ours to read


def run_session(session: Session, folder: Path) -> Outcome:
    """Run ``session`` in a fresh process with ``folder/work`` as its cwd."""
    work, runner, tmp = folder / "work", folder / "runner", folder / "tmp"
    for directory in (work, runner, tmp):
        directory.mkdir(parents=True)
    for name, code in session.files.items():
        (work / name).write_text(code, encoding="utf-8")
    (runner / "driver.py").write_text(_DRIVER, encoding="utf-8")
    (runner / "steps.json").write_text(json.dumps([block.step() for block in session.blocks]),
                                       encoding="utf-8")
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # python, polystore
    env["TMPDIR"] = str(tmp)  # what a block leaves in the temp folder (viewer logs) stays its own
    env["MPLBACKEND"] = "Agg"
    env.pop("PYTHONPATH", None)
    process = subprocess.Popen(
        [sys.executable, str(runner / "driver.py"), str(runner / "steps.json")],
        cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=SESSION_TIMEOUT_S)
        returncode: int | None = process.returncode
    except subprocess.TimeoutExpired:
        returncode = None
        output = ""
    finally:
        with contextlib.suppress(ProcessLookupError):  # what the blocks started in their group goes too
            os.killpg(process.pid, signal.SIGKILL)
        if returncode is None:
            output, _ = process.communicate()
        _stop_leftovers(tmp)
    return Outcome(returncode, output, work)


def _failure(session: Session, outcome: Outcome) -> str:
    found = re.findall(r"DOCS-BLOCK-FAILED (\S+)", outcome.output)
    where = found[-1] if found else session.where
    if outcome.returncode is None:
        return f"{session.where}: did not finish within {SESSION_TIMEOUT_S} s\n{outcome.output[-6000:]}"
    return f"{where}: the block failed (exit status {outcome.returncode})\n{outcome.output[-6000:]}"


PARSED = {path: read_document(path) for path in DOCUMENTS}
SESSIONS = [session for document in PARSED.values() for session in document.sessions]
SKIPPED = [block for document in PARSED.values() for block in document.skipped]
_outcomes: dict[str, Outcome] = {}


@pytest.fixture(scope="module")
def session_outcome(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[Session], Outcome]]:
    """Runs a session once per test run (the README checks below reuse the quick start's)."""
    def outcome(session: Session) -> Outcome:
        if session.where not in _outcomes:
            folder = tmp_path_factory.mktemp(re.sub(r"\W+", "_", session.where))
            _outcomes[session.where] = run_session(session, folder)
        return _outcomes[session.where]
    yield outcome


def test_every_document_is_read() -> None:
    assert README in PARSED and len(PARSED) >= 10
    assert sum(block.is_python for block in PARSED[README].blocks) >= 2


def test_markers_are_valid_and_python_blocks_compile() -> None:
    problems = [problem for document in PARSED.values() for problem in document.problems]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("session", SESSIONS, ids=[session.where for session in SESSIONS])
def test_block_runs(session: Session, session_outcome: Callable[[Session], Outcome]) -> None:
    outcome = session_outcome(session)
    if outcome.returncode != 0:
        pytest.fail(_failure(session, outcome), pytrace=False)


@pytest.mark.parametrize("block", SKIPPED, ids=[block.where for block in SKIPPED])
def test_skipped_block(block: Block) -> None:
    pytest.skip(f"{block.where}: {block.markers['skip']}")


def test_readme_quick_start_leaves_its_files(session_outcome: Callable[[Session], Outcome]) -> None:
    quick_start = next(session for session in PARSED[README].sessions if session.blocks[0].is_python)
    outcome = session_outcome(quick_start)
    assert outcome.returncode == 0, _failure(quick_start, outcome)
    assert (outcome.cwd / "plate/A01/site1.tif").is_file()
    assert (outcome.cwd / "results/A01/doubled.npy").is_file()


# The runner's own rules, checked on small documents written here.
def _document(tmp_path: Path, text: str) -> Document:
    docs = tmp_path / "docs"
    docs.mkdir(exist_ok=True)
    path = docs / "example.md"
    path.write_text(text, encoding="utf-8")
    return read_document(path, root=tmp_path)


def test_runner_groups_continued_blocks_and_writes_files(tmp_path: Path) -> None:
    document = _document(tmp_path, (
        "# t\n\n<!-- file: worker.py -->\n```python\nprint('worker', 6 * 7)\n```\n\n"
        "```python\nx = 1\n```\n\n<!-- continue -->\n```python\nimport subprocess, sys\n"
        "out = subprocess.run([sys.executable, 'worker.py'], capture_output=True, text=True).stdout\n"
        "assert out == 'worker 42\\n' and x == 1\n```\n\n"
        "<!-- continue -->\n<!-- run -->\n```console\n$ python worker.py\nworker 42\n```\n\n"
        "```bash\nexit 1  # shown, not run\n```\n"
    ))
    assert not document.problems
    assert [[block.line for block in session.blocks] for session in document.sessions] == [[9, 14, 22]]
    outcome = run_session(document.sessions[0], tmp_path / "run")
    assert outcome.returncode == 0, outcome.output


def test_runner_names_the_failing_line(tmp_path: Path) -> None:
    document = _document(tmp_path, "text\n\n```python\nx = 1\n\ny = undefined_name\n```\n")
    outcome = run_session(document.sessions[0], tmp_path / "run")
    assert outcome.returncode == 1
    assert f'{tmp_path / "docs/example.md"}", line 6' in outcome.output
    assert "y = undefined_name" in outcome.output  # the markdown line itself, in the traceback
    assert _failure(document.sessions[0], outcome).startswith("docs/example.md:4: the block failed")


def test_runner_checks_console_output(tmp_path: Path) -> None:
    document = _document(tmp_path, "<!-- run -->\n```console\n$ echo one\ntwo\n```\n")
    outcome = run_session(document.sessions[0], tmp_path / "run")
    assert outcome.returncode == 1 and "did not print, in this order, the line: two" in outcome.output


@pytest.mark.parametrize(("text", "problem"), [
    ("<!-- skip -->\n```python\nx\n```\n", "needs a reason"),
    ("<!-- skip: too slow -->\n```python\nx\n```\n", "is not a reason"),
    ("<!-- contineu -->\n```python\nx\n```\n", "unknown marker"),
    ("<!-- continue -->\n```python\nx\n```\n", "no python block before it"),
    ("```python\nprocess 1   process 2\n```\n", "not valid Python"),
    ("<!-- file: a.py -->\n```python\nx = 1\n```\n", "never run by another block"),
    ("<!-- run -->\n```python\nx = 1\n```\n", "for bash/console blocks"),
    ("<!-- skip: needs a GPU -->\n```python\nx = 1\n```\n<!-- continue -->\n```python\nx\n```\n",
     "which is skipped"),
    ("<!-- file: a.py -->\n```python\nx = 1\n```\n<!-- continue -->\n```python\nimport a\n```\n",
     "drop the marker"),
])
def test_runner_rejects_bad_markers(tmp_path: Path, text: str, problem: str) -> None:
    problems = _document(tmp_path, text).problems
    assert any(problem in found for found in problems), problems
