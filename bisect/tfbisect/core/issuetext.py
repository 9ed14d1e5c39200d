"""Code and versions from an issue's text: the repro a reporter pasted, and where they saw it change.

An issue arrives as Markdown: its body, then its comments, oldest first.  `code_blocks` finds
the Python in them (```` ```python ````/```` ```py ```` fences, unlabelled fences and indented
blocks that parse as Python; pasted logs and tracebacks do not parse and are never taken),
`pick` chooses the repro, `versions` reads the TensorFlow versions the text names into a
suggested `--good`/`--bad`, and `script_metadata` reads a script's PEP 723 block (its extra
dependencies).  Code taken from an issue is a stranger's code: `mark` puts a header line on it
that `is_marked` recognises, and tfbisect runs a marked script in containers only unless the
user removes the line or trusts it explicitly.  Pure functions: no network, no files.
"""

from __future__ import annotations

import ast
import re
import tomllib
from dataclasses import dataclass

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version

from tfbisect.core.errors import ScenarioError
from tfbisect.core.textsafe import clip, printable

MARK_PREFIX = "# tfbisect: code taken from "
_MARK_TAIL = (
    "; a stranger's code: tfbisect runs it only in containers (no network, non-root, read-only root)"
    " unless you remove this line or pass --trust-script"
)
PYTHON_LANGUAGES = frozenset({"python", "py", "python3", "py3", "ipython", "pycon"})
# The TF issue template's heading over the repro: a block under it is the reporter's repro.
REPRO_HEADING = re.compile(r"^#{1,6}\s*standalone code to reproduce", re.IGNORECASE)
_HEADING = re.compile(r"^#{1,6}\s+\S")
_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\n]*)$")
_PROMPT = re.compile(r"^(>>>|\.\.\.)( |$)")
_TF_IMPORT = re.compile(r"^\s*(import|from)\s+(tensorflow|tf_keras)\b", re.MULTILINE)
_KERAS_IMPORT = re.compile(r"^\s*(import|from)\s+keras\b", re.MULTILINE)


def mark_line(source: str) -> str:
    """The header line that marks code taken from `source` (an issue's address, a file name)."""
    shown = " ".join(printable(source, newlines=False).split())
    return MARK_PREFIX + clip(shown, 200) + _MARK_TAIL


def mark(code: str, source: str) -> str:
    """`code` with the stranger's-code line on top (once)."""
    return code if is_marked(code) else mark_line(source) + "\n" + code


def is_marked(text: str) -> bool:
    """Whether a script carries the mark on any line: removing that line is how a user vouches for it."""
    return any(line.startswith(MARK_PREFIX) for line in text.splitlines())


@dataclass(frozen=True)
class CodeBlock:
    """One block of code found in the Markdown of one post (0: the issue's body, n: comment n)."""

    code: str
    post: int
    line: int  # the block's first line in its post, 1-based
    language: str  # the fence's language ("python", "" for none); "indented" for an indented block
    parses: bool  # the code parses as Python (and holds a statement, not just a word)
    under_repro_heading: bool  # it sits under the template's "Standalone code to reproduce" heading

    @property
    def imports_tensorflow(self) -> bool:
        return bool(_TF_IMPORT.search(self.code))

    @property
    def imports_keras(self) -> bool:
        return bool(_KERAS_IMPORT.search(self.code))


def code_blocks(posts: list[str]) -> list[CodeBlock]:
    """The code blocks of every post, in order.  A block is kept when it parses as Python and
    does something (an import, an assignment, a call …), whatever its fence says: the TF issue
    template renders its repro field as ```` ```shell ````.  So a pasted log, a traceback or a
    shell session is never a candidate; a Python-labelled block is kept even when it does not
    parse (`parses` is False), so that a caller can say why none was taken."""
    found: list[CodeBlock] = []
    for number, post in enumerate(posts):
        found.extend(_blocks_of(post, number))
    return found


def pick(blocks: list[CodeBlock]) -> CodeBlock | None:
    """The repro among the blocks, or None.  The rule: only blocks that parse and import
    TensorFlow (`tensorflow` or `tf_keras`; `keras` alone when none does); of those, the ones
    under the template's "Standalone code to reproduce the issue" heading first, else those of
    the earliest post that has any (the reporter's, not a later variation); and of those the
    longest (a repro is whole, the other blocks of its post are excerpts of it)."""
    runnable = [block for block in blocks if block.parses]
    candidates = [block for block in runnable if block.imports_tensorflow] or [
        block for block in runnable if block.imports_keras
    ]
    if not candidates:
        return None
    preferred = [block for block in candidates if block.under_repro_heading]
    if not preferred:
        first_post = min(block.post for block in candidates)
        preferred = [block for block in candidates if block.post == first_post]
    return max(preferred, key=lambda block: (len(block.code.strip()), -block.line))


def _blocks_of(post: str, number: int) -> list[CodeBlock]:
    lines = post.replace("\r\n", "\n").splitlines()
    found: list[CodeBlock] = []
    under_repro = False
    index = 0
    while index < len(lines):
        line = lines[index]
        if _HEADING.match(line):
            under_repro = bool(REPRO_HEADING.match(line))
        fence = _FENCE.match(line)
        if fence:
            end = _fence_end(lines, index, fence.group("fence"))
            body = [text[len(fence.group("indent")) :] for text in lines[index + 1 : end]]
            language = (fence.group("info").split() or [""])[0].lower()
            block = _block("\n".join(body), number, index + 2, language, under_repro)
            if block is not None:
                found.append(block)
            index = end + 1
            continue
        if _indented(line) and (index == 0 or not lines[index - 1].strip()):
            end = index
            while end < len(lines) and (_indented(lines[end]) or not lines[end].strip()):
                end += 1
            body = [text[4:] if text.startswith("    ") else text.lstrip("\t") for text in lines[index:end]]
            block = _block("\n".join(body).strip("\n"), number, index + 1, "indented", under_repro)
            if block is not None:
                found.append(block)
            index = end
            continue
        index += 1
    return found


def _fence_end(lines: list[str], start: int, fence: str) -> int:
    """The index of the line closing the fence opened at `start` (or past the end: an
    unclosed fence runs to the end of the post, as CommonMark has it)."""
    for index in range(start + 1, len(lines)):
        stripped = lines[index].strip()
        if stripped and set(stripped) == {fence[0]} and len(stripped) >= len(fence):
            return index
    return len(lines)


def _indented(line: str) -> bool:
    return line.startswith(("    ", "\t")) and bool(line.strip())


def _block(code: str, post: int, line: int, language: str, under_repro: bool) -> CodeBlock | None:
    labelled = language in PYTHON_LANGUAGES
    code = _without_prompts(code)
    parses = _parses(code)
    if not parses and not labelled:
        return None  # a log, a traceback, prose: not code
    return CodeBlock(code.strip("\n") + "\n", post, line, language, parses, under_repro)


def _without_prompts(code: str) -> str:
    """An interactive session's input (`>>> `/`... ` stripped, its output dropped), else `code`;
    notebook lines (`!pip install …`, `%matplotlib`) are left out either way."""
    lines = [line for line in code.splitlines() if not line.lstrip().startswith(("!", "%"))]
    if any(_PROMPT.match(line) for line in lines):
        lines = [_PROMPT.sub("", line, count=1) for line in lines if _PROMPT.match(line)]
    return "\n".join(lines)


_STATEMENTS = (
    ast.Import,
    ast.ImportFrom,
    ast.Assign,
    ast.AugAssign,
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.ClassDef,
    ast.Assert,
    ast.For,
    ast.While,
    ast.With,
    ast.Try,
    ast.Call,
)


def _parses(code: str) -> bool:
    """Parses as Python and does something: `loss: 0.5` or a lone word parse too, and are logs."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return any(isinstance(node, _STATEMENTS) for node in ast.walk(tree))


@dataclass(frozen=True)
class VersionHint:
    """What the text says about versions: the `--good`/`--bad` to suggest, and why."""

    good: str | None
    bad: str | None
    evidence: tuple[str, ...]  # the phrases each suggestion came from, as written

    def arguments(self, placeholder_good: str = "GOOD", placeholder_bad: str = "BAD") -> str:
        """`--good 2.8 --bad 2.9`, with placeholders for what the text does not say."""
        return f"--good {self.good or placeholder_good} --bad {self.bad or placeholder_bad}"


_VERSION = r"(?:(?:tf|tensorflow)(?:-gpu|-cpu)?[ \t]*(?:version)?[ \t:=v]*|v)?(?P<version>2\.\d{1,2}(?:\.\d{1,2})?(?:rc\d)?)\b"
_MENTION = re.compile(r"(?<![\w.])" + _VERSION + r"(?!\.?\d)", re.IGNORECASE)
_NIGHTLY = re.compile(r"\btf[-_]nightly\b|\bnightly\b", re.IGNORECASE)
_STATED = re.compile(
    r"(?:tensorflow|tf)[ \t]*(?:version|\.__version__)[ \t]*[:=\-]?[ \t]*(?:is[ \t]*)?v?"
    r"(?P<version>2\.\d{1,2}(?:\.\d{1,2})?(?:rc\d)?)",
    re.IGNORECASE,
)
_TEMPLATE_VERSION = re.compile(r"^#{1,6}\s*tensorflow version\s*$", re.IGNORECASE)
_CLAUSE = re.compile(r"[.;,!?\n]\s|[\n()]|\bbut\b|\bwhile\b|\bwhereas\b|\bhowever\b", re.IGNORECASE)
_BAD_WORDS = re.compile(
    r"n't work|not work|no longer|stopped|fail|broke|breaks|broken|error|raise|crash|regress|wrong|"
    r"bug|since|starting (?:from|with|in)|\bhappens\b|\boccurs\b|reproduc|segfault|incorrect",
    re.IGNORECASE,
)
_GOOD_WORDS = re.compile(
    r"no (?:error|issue|problem)|without (?:error|issue|problem)|\bworks?\b|\bworked\b|\bworking\b|"
    r"\bfine\b|\bok\b|\bcorrect(?:ly)?\b|\bpass(?:es|ed)?\b|as expected|was right",
    re.IGNORECASE,
)


def versions(posts: list[str]) -> VersionHint:
    """The `--good`/`--bad` the text suggests.  Each clause (a sentence, split at commas and at
    "but"/"while") naming one version is read by its words: "fails", "broken", "error",
    "doesn't work", "since" make it bad; "works", "fine", "no error" make it good.  The template's
    "### TensorFlow version" answer and "TF version: X" lines name the version the reporter is
    on, which is bad when no clause says otherwise.  A nightly is bad ("nightly") only when no
    numbered release is.  `--good` is the newest good version older than `--bad`."""
    good: dict[Version, str] = {}
    bad: dict[Version, str] = {}
    stated: dict[Version, str] = {}
    evidence: list[str] = []
    nightly_bad = ""
    for post in map(_prose, posts):
        for version, phrase in _stated(post):
            stated.setdefault(version, phrase)
        for clause in _CLAUSE.split(post):
            side = _side(clause)
            mentioned = _mentions(clause)
            if len(mentioned) == 1 and side is not None:
                (good if side == "good" else bad).setdefault(mentioned[0], " ".join(clause.split())[:120])
            elif not mentioned and side == "bad" and _NIGHTLY.search(clause) and not nightly_bad:
                nightly_bad = " ".join(clause.split())[:120]
    for version, phrase in stated.items():
        if version not in good:
            bad.setdefault(version, phrase)
    chosen_bad = min(bad) if bad else None
    older_good = [version for version in good if chosen_bad is None or version < chosen_bad]
    chosen_good = max(older_good) if older_good else None
    if chosen_good is not None:
        evidence.append(f"good {chosen_good}: {good[chosen_good]}")
    if chosen_bad is not None:
        evidence.append(f"bad {chosen_bad}: {bad[chosen_bad]}")
    elif nightly_bad:
        evidence.append(f"bad nightly: {nightly_bad}")
    bad_text = str(chosen_bad) if chosen_bad is not None else ("nightly" if nightly_bad else None)
    return VersionHint(
        str(chosen_good) if chosen_good is not None else None, bad_text, tuple(clip(e, 200) for e in evidence)
    )


# A 2.x that belongs to something else: "Python 2.7", "Keras 2.8.0", "protobuf 3.2" …
_OTHER = re.compile(
    r"(python|keras|numpy|protobuf|cuda|cudnn|bazel|gcc|clang|pip|jax|torch)[\s:=v-]*(version)?[\s:=]*$",
    re.IGNORECASE,
)


def _prose(post: str) -> str:
    """The post without its fenced blocks: code and logs name versions of everything."""
    kept: list[str] = []
    lines = post.replace("\r\n", "\n").splitlines()
    index = 0
    while index < len(lines):
        fence = _FENCE.match(lines[index])
        if fence:
            index = _fence_end(lines, index, fence.group("fence")) + 1
            kept.append("")
            continue
        kept.append(lines[index])
        index += 1
    return "\n".join(kept)


def _mentions(clause: str) -> list[Version]:
    """The TF versions a clause names (not Python's, Keras's …)."""
    found: list[Version] = []
    for match in _MENTION.finditer(clause):
        version = _version(match.group("version"))
        if version is not None and not _OTHER.search(clause[: match.start()]):
            found.append(version)
    return found


def _version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def _side(clause: str) -> str | None:
    """ "bad", "good" or None, by the clause's words; a negated good word ("doesn't work") is bad."""
    if re.search(r"n't work|not work|no longer work", clause, re.IGNORECASE):
        return "bad"
    if re.search(r"no (?:error|issue|problem)|without (?:error|issue|problem)", clause, re.IGNORECASE):
        return "good"
    if _BAD_WORDS.search(clause):
        return "bad"
    if _GOOD_WORDS.search(clause):
        return "good"
    return None


def _stated(post: str) -> list[tuple[Version, str]]:
    """The versions the reporter says they are on: "TF version: 2.10.0", or the first version
    under the template's "### TensorFlow version" heading."""
    found: list[tuple[Version, str]] = []
    for stated in _STATED.finditer(post):
        version = _version(stated.group("version"))
        if version is not None:
            found.append((version, " ".join(stated.group(0).split())))
    lines = post.splitlines()
    for index, line in enumerate(lines):
        if not _TEMPLATE_VERSION.match(line):
            continue
        for answer in lines[index + 1 : index + 6]:
            if _HEADING.match(answer):
                break
            match = _MENTION.search(answer)
            version = _version(match.group("version")) if match else None
            if version is not None:
                found.append((version, "### TensorFlow version: " + answer.strip()[:60]))
                break
    return found


@dataclass(frozen=True)
class ScriptMetadata:
    """A script's PEP 723 `script` block: the extra packages it needs, and the Python it asks for."""

    dependencies: tuple[str, ...]
    requires_python: str | None


_PEP723 = re.compile(r"(?m)^# /// (?P<type>[a-zA-Z0-9-]+)$\s(?P<content>(^#(| .*)$\s)+)^# ///$")


def script_metadata(code: str) -> ScriptMetadata | None:
    """The script's inline metadata (PEP 723), None when it has none; ScenarioError when it is
    malformed (two `script` blocks, TOML that does not parse, a dependency that is no requirement)."""
    blocks = [m for m in _PEP723.finditer(code) if m.group("type") == "script"]
    if not blocks:
        return None
    if len(blocks) > 1:
        raise ScenarioError(
            "The script has more than one `# /// script` metadata block.",
            "keep one (PEP 723 allows one per file).",
        )
    content = "".join(
        line[2:] if line.startswith("# ") else line[1:]
        for line in blocks[0].group("content").splitlines(keepends=True)
    )
    try:
        data = tomllib.loads(content)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(
            f"The script's `# /// script` block is not valid TOML: {exc}.",
            'fix it (e.g. `# dependencies = ["pandas<2"]`), as PEP 723 describes.',
        ) from exc
    dependencies = data.get("dependencies", [])
    if not isinstance(dependencies, list) or not all(isinstance(d, str) for d in dependencies):
        raise ScenarioError(
            "The script's `dependencies` is not a list of strings.",
            'write it as `# dependencies = ["pandas<2", "scipy"]`.',
        )
    for dependency in dependencies:
        try:
            Requirement(dependency)
        except InvalidRequirement as exc:
            raise ScenarioError(
                f"The script's dependency {dependency[:100]!r} is not a requirement: {exc}.",
                'write each as pip would take it, e.g. "pandas<2".',
            ) from exc
    requires = data.get("requires-python")
    return ScriptMetadata(tuple(dependencies), str(requires) if requires is not None else None)
