"""`tfbisect new`: the skeleton, a wrapped script, a repro taken from an issue's Markdown or from
GitHub (a real HTTP server on 127.0.0.1 standing in for the API), and what hostile answers do."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest

from test_scaffold import FAKE_TF, run
from tfbisect.core import issuetext
from tfbisect.core.errors import PostError
from tfbisect.core.outcome import Outcome
from tfbisect.report import github

from conftest import loopback

ROOT = Path(__file__).resolve().parents[1]
ISSUES = ROOT / "tests" / "data" / "issues"
TOKEN = "ghp_TESTTOKEN0123456789abcdefSECRET"
Answer = tuple[int, dict[str, str], bytes]


def tfbisect(cwd: Path, *words: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_TOKEN")}
    env["PYTHONPATH"] = str(ROOT / "bisect")
    if token:
        env["GITHUB_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "tfbisect", *words],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def fake_tf(tmp_path: Path) -> Path:
    folder = tmp_path / "fake" / "tensorflow"
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text(FAKE_TF)
    return folder.parent


@pytest.fixture
def here(tmp_path: Path) -> Path:
    """An empty working folder (the user's), apart from the fake TensorFlow's."""
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


def written(folder: Path) -> list[Path]:
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())


# -- the skeleton and --from ----------------------------------------------------------------


def test_new_writes_a_scenario_that_runs_and_writes_a_valid_document(here: Path, fake_tf: Path) -> None:
    done = tfbisect(here, "new", "my_bug")
    assert done.returncode == 0, done.stderr
    assert written(here) == [Path("scenarios/my_bug.py")]
    assert "wrote scenarios/my_bug.py: a scenario" in done.stdout
    assert "tfbisect bisect --scenario my_bug" in done.stdout
    outcome, document, failure = run(here / "scenarios" / "my_bug.py", fake_tf)
    assert (outcome, failure) == (Outcome.NOT_REPRODUCED, None)
    assert document is not None and [p["name"] for p in document["probes"]] == ["repro", "control"]
    assert document["scenario"]["name"] == "my_bug"


def test_new_refuses_to_overwrite_unless_forced(here: Path) -> None:
    assert tfbisect(here, "new", "my_bug").returncode == 0
    path = here / "scenarios" / "my_bug.py"
    path.write_text("# mine\n")
    again = tfbisect(here, "new", "my_bug")
    assert again.returncode == 2 and "already exists" in again.stderr and "--force" in again.stderr
    assert path.read_text() == "# mine\n"
    forced = tfbisect(here, "new", "my_bug", "--force")
    assert forced.returncode == 0 and path.read_text().startswith('"""my_bug: ')


@pytest.mark.parametrize("where", ["bisect/tfbisect/mine.py", "bisect/tfbisect/data/mine.py"])
def test_new_never_writes_into_the_package(here: Path, where: str) -> None:
    done = tfbisect(here, "new", "mine", "--out", str(ROOT / where))
    assert done.returncode == 2 and "inside tfbisect's own installed files" in done.stderr
    assert not (ROOT / where).exists()


def test_a_bad_name_is_refused(here: Path) -> None:
    done = tfbisect(here, "new", "my-bug")
    assert done.returncode == 2 and "cannot name a scenario" in done.stderr and written(here) == []


def test_from_wraps_a_plain_script(here: Path, fake_tf: Path) -> None:
    script = here / "repro.py"
    script.write_text(
        'import tensorflow as tf\nx = tf.constant([1.0], dtype="float64")\nassert x.dtype == tf.float32\n'
    )
    done = tfbisect(here, "new", "wrapped", "--from", "repro.py", "--out", "wrapped.py")
    assert done.returncode == 0, done.stderr
    assert "the code from repro.py" in done.stdout
    assert "tfbisect bisect --scenario wrapped.py" in done.stdout
    outcome, document, _ = run(here / "wrapped.py", fake_tf)
    assert outcome is Outcome.REPRODUCED and document is not None
    assert document["probes"][0]["summary"].startswith("reproduced: AssertionError")
    assert not issuetext.is_marked((here / "wrapped.py").read_text())  # the user's own code


def test_plain_skeleton_script(here: Path, fake_tf: Path) -> None:
    done = tfbisect(here, "new", "mine", "--as", "script")
    assert done.returncode == 0, done.stderr
    assert "tfbisect bisect --script mine.py" in done.stdout
    ran = subprocess.run(
        [sys.executable, "mine.py"],
        cwd=here,
        env={"PYTHONPATH": str(fake_tf)},
        capture_output=True,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr


# -- --from-markdown ------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", sorted(p.stem for p in ISSUES.glob("*.md")))
@pytest.mark.parametrize("write_as", ["script", "scenario"])
def test_from_markdown_on_each_fixture(here: Path, fixture: str, write_as: str) -> None:
    text = (ISSUES / f"{fixture}.md").read_text()
    done = tfbisect(here, "new", "repro", "--from-markdown", str(ISSUES / f"{fixture}.md"), "--as", write_as)
    assert done.returncode == 0, done.stderr
    path = here / ("repro.py" if write_as == "script" else "scenarios/repro.py")
    code = path.read_text()
    compile(code, str(path), "exec", dont_inherit=True)
    assert code.splitlines()[0] == issuetext.mark_line(f"{fixture}.md")
    picked = issuetext.pick(issuetext.code_blocks([text]))
    assert picked is not None and picked.code.splitlines()[-1] in code
    hint = issuetext.versions([text])
    flag = "--script repro.py" if write_as == "script" else "--scenario repro"
    expected = f"tfbisect bisect {flag}" + (f" --good {hint.good}" if hint.good else "")
    expected += f" --bad {hint.bad}" if hint.bad and hint.bad != "nightly" else ""
    assert f"  {expected}\n" in done.stdout
    assert "--trust-script" in done.stdout
    for line in hint.evidence:
        assert f"versions: {line}" in done.stdout


@pytest.mark.parametrize(
    ("markdown", "said"),
    [
        (
            "It crashes.\n\n```\nTraceback (most recent call last):\n  oops\n```\n",
            "has no block of Python code",
        ),
        (
            "```python\nimport numpy as np\nprint(np.ones(2))\n```\n",
            "none that parses as Python and imports TensorFlow",
        ),
        ("```python\nimport tensorflow as tf\nx = (\n```\n", "(1 labelled Python do not parse)"),
    ],
)
def test_from_markdown_without_a_repro(here: Path, markdown: str, said: str) -> None:
    (here / "issue.md").write_text(markdown)
    done = tfbisect(here, "new", "repro", "--from-markdown", "issue.md")
    assert done.returncode == 5, done.stderr
    assert said in done.stderr and "What to do:" in done.stderr
    assert written(here) == [Path("issue.md")]


# -- --from-issue, against a loopback GitHub --------------------------------------------------

BODY = """### Issue type

Bug

### TensorFlow version

2.9.1

### Current behavior?

In TF 2.8 this works, but in 2.9 the dtype is wrong and my code fails.

### Standalone code to reproduce the issue

```shell
import tensorflow as tf
x = tf.constant([1.0], dtype="float64")
assert x.dtype == tf.float32, x.dtype
```
"""
ISSUE = {"number": 1, "title": 'Dense drops "float64" \\ in 2.9', "body": BODY, "comments": 2}
COMMENTS = [{"id": 1, "body": "Can you try nightly?"}, {"id": 2, "body": None}]


class _GitHub(http.server.BaseHTTPRequestHandler):
    """Answers GET requests with `answer(handler)`; records what it saw."""

    seen: ClassVar[list[dict[str, Any]]] = []
    answer: ClassVar[Callable[[_GitHub], Answer]]

    def do_GET(self) -> None:
        type(self).seen.append({"path": self.path, "headers": dict(self.headers)})
        status, headers, body = type(self).answer(self)
        self.send_response(status)
        for name, value in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(name, value)
        self.end_headers()
        with contextlib.suppress(OSError):  # the client stopped reading (a huge body), as it should
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def as_json(status: int, document: Any, headers: dict[str, str] | None = None) -> Answer:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(document).encode()


def github_of(issue: Answer, comments: Callable[[int], Answer] | None = None) -> Callable[[_GitHub], Answer]:
    """The issue's answer at /repos/o/r/issues/1, its comments' pages below it."""

    def answer(handler: _GitHub) -> Answer:
        if handler.path.startswith("/repos/o/r/issues/1/comments?"):
            page = int(handler.path.rpartition("page=")[2])
            return comments(page) if comments else as_json(200, COMMENTS if page == 1 else [])
        if handler.path == "/repos/o/r/issues/1":
            return issue
        return as_json(404, {"message": "Not Found"})

    return answer


def serving(answer: Callable[[_GitHub], Answer]) -> Any:
    handler: type[_GitHub] = type("Handler", (_GitHub,), {"seen": [], "answer": staticmethod(answer)})
    return handler, loopback(handler)


def from_issue(
    here: Path, answer: Callable[[_GitHub], Answer], *extra: str, token: str | None = None
) -> tuple[subprocess.CompletedProcess[str], type[_GitHub]]:
    handler, server = serving(answer)
    with server as api:
        done = tfbisect(here, "new", "X", "--from-issue", "o/r#1", "--api-url", api, *extra, token=token)
    return done, handler


def test_from_issue_writes_a_marked_script_and_the_bisect_command(here: Path, fake_tf: Path) -> None:
    done, server = from_issue(here, github_of(as_json(200, ISSUE)))
    assert done.returncode == 0, done.stderr
    assert [seen["path"] for seen in server.seen] == [
        "/repos/o/r/issues/1",
        "/repos/o/r/issues/1/comments?per_page=50&page=1",
    ]
    assert all("Authorization" not in seen["headers"] for seen in server.seen)  # no token: none sent
    assert server.seen[0]["headers"]["Accept"] == "application/vnd.github+json"
    assert written(here) == [Path("X.py")]
    code = (here / "X.py").read_text()
    compile(code, "X.py", "exec", dont_inherit=True)
    assert code.splitlines()[0] == issuetext.mark_line("https://github.com/o/r/issues/1")
    assert code.endswith("assert x.dtype == tf.float32, x.dtype\n")
    assert "wrote X.py: a plain repro script, the code from https://github.com/o/r/issues/1" in done.stdout
    assert "versions: good 2.8: In TF 2.8 this works" in done.stdout
    assert "  tfbisect bisect --script X.py --good 2.8 --bad 2.9\n" in done.stdout
    assert "runs it only in containers" in done.stdout and "--trust-script" in done.stdout
    # The script runs: the repro's assert fails on the stand-in TF, which is "bad" (exit 1).
    ran = subprocess.run(
        [sys.executable, "X.py"],
        cwd=here,
        env={"PYTHONPATH": str(fake_tf)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert ran.returncode == 1 and "AssertionError: float64" in ran.stderr


def test_from_issue_as_a_scenario_carries_the_mark_and_the_title(here: Path, fake_tf: Path) -> None:
    done, _ = from_issue(here, github_of(as_json(200, ISSUE)), "--as", "scenario")
    assert done.returncode == 0, done.stderr
    text = (here / "scenarios" / "X.py").read_text()
    assert issuetext.is_marked(text.splitlines()[0])
    assert "X: Dense drops 'float64' / in 2.9" in text  # the title, made safe for a docstring
    assert "tfbisect bisect --scenario X --good 2.8 --bad 2.9" in done.stdout
    outcome, document, _ = run(here / "scenarios" / "X.py", fake_tf)
    assert outcome is Outcome.REPRODUCED and document is not None


def test_a_token_is_sent_when_set_and_never_shown(here: Path) -> None:
    def echo(handler: _GitHub) -> Answer:
        return as_json(500, {"message": f"boom {handler.headers['Authorization']}"})

    done, server = from_issue(here, echo, token=TOKEN)
    assert server.seen[0]["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert done.returncode == 11 and TOKEN not in done.stdout + done.stderr and "***" in done.stderr
    assert written(here) == []


def test_comments_are_read_page_by_page_up_to_the_bound(here: Path) -> None:
    full = [{"id": n, "body": "me too"} for n in range(github.COMMENTS_PER_PAGE)]
    done, server = from_issue(here, github_of(as_json(200, ISSUE), lambda page: as_json(200, full)))
    assert done.returncode == 0, done.stderr
    assert len(server.seen) == 1 + github.MAX_COMMENT_PAGES
    assert (
        f"only the first {github.COMMENTS_PER_PAGE * github.MAX_COMMENT_PAGES} comments were read"
        in done.stdout
    )


def test_an_issue_without_comments_asks_for_none(here: Path) -> None:
    done, server = from_issue(here, github_of(as_json(200, {**ISSUE, "comments": 0})))
    assert done.returncode == 0, done.stderr
    assert [seen["path"] for seen in server.seen] == ["/repos/o/r/issues/1"]


HUGE = b'{"body": "' + b"x" * (github.MAX_ISSUE_ANSWER_BYTES + 1024) + b'"}'


@pytest.mark.parametrize(
    ("issue", "comments", "said"),
    [
        ((200, {}, HUGE), None, "the issue larger than 4 MiB"),
        ((200, {}, b"<html>hello</html>"), None, "the issue that is not JSON"),
        (as_json(200, [ISSUE]), None, "JSON that is not an issue (a list, not an object)"),
        (as_json(200, {**ISSUE, "body": 7}), None, "an issue whose title or body is not text"),
        (as_json(200, {**ISSUE, "title": ["t"]}), None, "an issue whose title or body is not text"),
        (as_json(200, ISSUE), as_json(200, {"body": "x"}), "page 1 of the comments that is not a list"),
        (as_json(200, ISSUE), as_json(200, [{"body": 1}]), "page 1 of the comments that is not a list"),
        (as_json(200, ISSUE), (200, {}, HUGE), "page 1 of the comments larger than 4 MiB"),
        (
            as_json(500, {"message": "Server Error"}),
            None,
            "GitHub answered 500 for the issue of o/r#1: Server Error",
        ),
        (as_json(404, {"message": "Not Found"}), None, "GitHub has no issue o/r#1 (404 Not Found)"),
        (
            as_json(403, {"message": "API rate limit exceeded"}, {"X-RateLimit-Remaining": "0"}),
            None,
            "GitHub's API rate limit is spent (403",
        ),
        (as_json(429, {"message": "slow down"}), None, "GitHub's API rate limit is spent (429"),
        (as_json(401, {"message": "Bad credentials"}), None, "GitHub answered 401 for the issue of o/r#1"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_hostile_answers_are_clear_errors_and_write_nothing(
    here: Path, issue: Answer, comments: Answer | None, said: str
) -> None:
    done, _ = from_issue(here, github_of(issue, (lambda page: comments) if comments else None))
    assert done.returncode == 11, done.stderr
    assert said in done.stderr, done.stderr
    assert "nothing was written" in done.stderr and "What to do:" in done.stderr
    assert "--from-markdown" in done.stderr or "GITHUB_TOKEN" in done.stderr
    assert len(done.stderr) < 3000 and done.stdout == ""
    assert written(here) == []


@pytest.mark.parametrize("status", [301, 302, 307])
def test_a_redirect_is_not_followed(here: Path, status: int) -> None:
    elsewhere, other = serving(github_of(as_json(200, ISSUE)))
    with other as url:
        done, server = from_issue(here, lambda _: (status, {"Location": f"{url}/repos/o/r/issues/1"}, b""))
    assert elsewhere.seen == [] and len(server.seen) == 1
    assert done.returncode == 11 and f"answered {status} for o/r#1 with a redirect" in done.stderr
    assert "redirects are not followed" in done.stderr and written(here) == []


@pytest.mark.parametrize("target", ["o/r", "o/r#", "o/r#x", "https://github.com/o/r/issues/1", "o r#1"])
def test_a_target_that_names_no_issue_is_a_usage_error(here: Path, target: str) -> None:
    done = tfbisect(here, "new", "X", "--from-issue", target, "--api-url", "http://127.0.0.1:9")
    assert (
        done.returncode == 2
        and "does not name an issue" in done.stderr
        and "OWNER/REPO#NUMBER" in done.stderr
    )
    assert written(here) == []


def test_no_server_is_a_network_error(here: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = tfbisect(here, "new", "X", "--from-issue", "o/r#1", "--api-url", f"http://127.0.0.1:{port}")
    assert done.returncode == 11 and f"Could not reach 127.0.0.1:{port} to read o/r#1" in done.stderr
    assert "check the network" in done.stderr and written(here) == []


def test_one_deadline_for_the_issue_and_its_comments() -> None:
    """A server that answers each request slowly: the whole reading stops at the deadline."""
    stop = threading.Event()

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            stop.wait(0.8)  # each answer takes 0.8 s; three of them do not fit in 2 s
            if "comments" in self.path:
                payload = json.dumps([{"body": "x"}] * github.COMMENTS_PER_PAGE).encode()
            else:
                payload = json.dumps(ISSUE).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    with loopback(Slow) as api:
        started = time.monotonic()
        try:
            with pytest.raises(PostError) as info:
                github.fetch_issue(github.Target("o", "r", 1), api=api, timeout=2.0)
        finally:
            stop.set()
    assert time.monotonic() - started < 4
    assert "gave no complete answer for page" in info.value.what and "within 2 s" in info.value.what


def test_the_api_url_must_be_http() -> None:
    with pytest.raises(PostError, match="not an http\\(s\\) URL"):
        github.fetch_issue(github.Target("o", "r", 1), api="file:///etc/passwd")


def test_a_token_is_optional_but_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """A token is optional, but a malformed one is refused before any request."""
    for name in ("TFBISECT_GITHUB_TOKEN", "GITHUB_TOKEN", "GH_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    assert github.optional_token() == ""
    monkeypatch.setenv("GH_TOKEN", TOKEN)
    assert github.optional_token() == TOKEN
    monkeypatch.setenv("GH_TOKEN", "a b")
    with pytest.raises(PostError, match="characters no token has"):
        github.optional_token()
