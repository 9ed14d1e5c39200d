"""`tfbisect report --post`: a real HTTP request to a loopback server that checks it."""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from test_report import report_data
from tfbisect import __version__
from tfbisect.core.errors import PostError
from tfbisect.report import github as github_module
from tfbisect.report.github import Target, _scrub, _shown, post_comment

from conftest import loopback

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "ghp_TESTTOKEN0123456789abcdefSECRET"


class _GitHub(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[dict[str, Any]]] = []
    status: ClassVar[int] = 201

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(body)})
        if self.status == 201:
            answer = {"id": 1, "html_url": "https://github.com/o/r/issues/7#issuecomment-1", "body": "..."}
        else:  # a hostile server echoing the credential back must not get it printed
            answer = {"message": f"Bad credentials {self.headers['Authorization']}"}
        payload = json.dumps(answer).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def github() -> Iterator[str]:
    _GitHub.seen.clear()
    with loopback(_GitHub) as url:
        yield url
    _GitHub.status = 201


def post(
    reports: Path, api: str, target: str = "o/r#7", token: str | None = TOKEN
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_TOKEN")}
    if token:
        env["GITHUB_TOKEN"] = token
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "tfbisect",
            "--reports",
            str(reports),
            "report",
            "--post",
            target,
            "--api-url",
            api,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def no_token_anywhere(done: subprocess.CompletedProcess[str], reports: Path) -> None:
    assert TOKEN not in done.stdout + done.stderr
    for path in reports.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_posts_the_summary_as_a_comment(tmp_path: Path, github: str) -> None:
    report_data(tmp_path)
    done = post(tmp_path, github)
    assert done.returncode == 0, done.stderr
    [request] = _GitHub.seen
    assert request["path"] == "/repos/o/r/issues/7/comments"
    assert request["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert request["headers"]["Accept"] == "application/vnd.github+json"
    # the summary as written, then one line saying which tfbisect made it
    summary = (tmp_path / "summary.md").read_text()
    posted = request["body"]["body"]
    assert posted.startswith(summary.rstrip()) and posted == github_module.signed(summary)
    assert posted.rstrip().splitlines()[-1] == f"<sub>Posted by tfbisect {__version__}.</sub>"
    assert "posted the summary: https://github.com/o/r/issues/7#issuecomment-1" in done.stdout
    no_token_anywhere(done, tmp_path)


def test_rejected_post_keeps_files_and_never_shows_the_token(tmp_path: Path, github: str) -> None:
    report_data(tmp_path)
    _GitHub.status = 401
    done = post(tmp_path, github)
    assert done.returncode == 11
    assert "GitHub answered 401" in done.stderr and "***" in done.stderr
    assert (tmp_path / "summary.md").is_file()
    no_token_anywhere(done, tmp_path)


def test_missing_token_fails_before_any_request(tmp_path: Path, github: str) -> None:
    report_data(tmp_path)
    done = post(tmp_path, github, token=None)
    assert done.returncode == 11 and "GITHUB_TOKEN" in done.stderr and not _GitHub.seen


def test_target_must_name_an_issue() -> None:
    assert Target.parse("tensorflow/tensorflow#40000") == Target("tensorflow", "tensorflow", 40000)
    with pytest.raises(PostError, match="OWNER/REPO#NUMBER"):
        Target.parse("tensorflow/tensorflow")


# -- hostile and odd servers: nothing but 201 Created with a comment is "posted", and the token
# -- never leaves the configured host nor comes back out in any message or file ----------------

COMMENT = {"id": 1, "html_url": "https://github.com/o/r/issues/7#issuecomment-1", "body": "hi"}


def token_forms(token: str = TOKEN) -> list[str]:
    """The token as a hostile server might echo it back, in the usual encodings."""
    return [
        token,
        urllib.parse.quote(f"Bearer {token}", safe=""),
        base64.b64encode(token.encode()).decode(),
        base64.b64encode(f"x-access-token:{token}".encode()).decode(),
    ]


def _encoded_echoes(authorization: str) -> str:
    """The Authorization header echoed as it came and in the usual encodings, and in a URL."""
    token = authorization.removeprefix("Bearer ")
    return " ".join([authorization, *token_forms(token), f"https://x-access-token:{token}@example.com/"])


class _Server(http.server.BaseHTTPRequestHandler):
    """Answers every request with `answer(handler)`: (status, headers, body); records what it saw."""

    seen: ClassVar[list[dict[str, Any]]] = []
    answer: ClassVar[Callable[[_Server], tuple[int, dict[str, str], bytes]]]

    def do_POST(self) -> None:
        self._handle()

    def do_GET(self) -> None:
        self._handle()

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        type(self).seen.append({"method": self.command, "path": self.path, "headers": dict(self.headers)})
        status, headers, body = type(self).answer(self)
        self.send_response(status)
        for name, value in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(name, value)
        self.end_headers()
        with contextlib.suppress(OSError):  # the client stopped reading (a huge body), as it should
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@contextlib.contextmanager
def serving(
    answer: Callable[[_Server], tuple[int, dict[str, str], bytes]],
) -> Iterator[tuple[str, type[_Server]]]:
    """A loopback server of its own answering with `answer`; yields its URL and its handler class."""
    handler: type[_Server] = type("Handler", (_Server,), {"seen": [], "answer": staticmethod(answer)})
    with loopback(handler) as url:
        yield url, handler


def json_answer(status: int, document: Any) -> Callable[[_Server], tuple[int, dict[str, str], bytes]]:
    return lambda _: (status, {"Content-Type": "application/json"}, json.dumps(document).encode())


def not_posted(done: subprocess.CompletedProcess[str], reports: Path, server: type[_Server]) -> None:
    """A failed post: one request, sent once; exit 11, a two-part message naming the written
    summary, the files kept, and the token nowhere."""
    [request] = server.seen
    assert request["method"] == "POST" and request["path"] == "/repos/o/r/issues/7/comments"
    assert done.returncode == 11, done.stderr
    assert "posted the summary" not in done.stdout
    assert "What to do:" in done.stderr
    assert f"the summary is written to {reports / 'summary.md'}" in done.stderr
    assert (reports / "summary.md").is_file() and (reports / "report.html").is_file()
    no_token_anywhere(done, reports)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_refused_and_the_token_never_reaches_the_other_host(
    tmp_path: Path, status: int
) -> None:
    report_data(tmp_path)
    with serving(json_answer(201, COMMENT)) as (elsewhere, other):
        location = f"{elsewhere}/repos/o/r/issues/7/comments"
        with serving(lambda _: (status, {"Location": location}, b"")) as (api, server):
            done = post(tmp_path, api)
    assert not any("Authorization" in request["headers"] for request in other.seen)
    assert other.seen == []  # no request at all: the redirect was not followed
    not_posted(done, tmp_path, server)
    assert server.seen[0]["headers"]["Authorization"] == f"Bearer {TOKEN}"  # only the configured host got it
    host = elsewhere.removeprefix("http://")
    assert f"answered {status} with a redirect to host {host}" in done.stderr
    assert "redirects are not followed with the token, so nothing was posted" in done.stderr


@pytest.mark.parametrize("status", [500, 201])
def test_a_server_echoing_the_headers_never_gets_the_token_printed(tmp_path: Path, status: int) -> None:
    def echo(handler: _Server) -> tuple[int, dict[str, str], bytes]:
        text = (
            f"\x1b[2J\x1b]0;pwned\x07{_encoded_echoes(handler.headers['Authorization'])}\n{handler.headers}"
        )
        return status, {"Content-Type": "text/plain"}, text.encode()

    report_data(tmp_path)
    with serving(echo) as (api, server):
        done = post(tmp_path, api)
    not_posted(done, tmp_path, server)
    for encoded in token_forms():
        assert encoded not in done.stdout + done.stderr
    assert "\x1b" not in done.stderr and "\x07" not in done.stderr  # no terminal escapes from a server
    if status == 500:
        assert "GitHub answered 500" in done.stderr and "***" in done.stderr and "\\x1b" in done.stderr
        assert "not known to be posted" in done.stderr
    else:
        assert "answered 201 to the comment on o/r#7, but with an answer that is not JSON" in done.stderr


def test_a_server_error_is_a_failure_that_keeps_the_files(tmp_path: Path) -> None:
    report_data(tmp_path)
    with serving(json_answer(500, {"message": "Server Error"})) as (api, server):
        done = post(tmp_path, api)
    not_posted(done, tmp_path, server)
    assert "GitHub answered 500 to the comment on o/r#7: Server Error" in done.stderr
    assert "look at the issue before posting again" in done.stderr


def test_a_201_that_echoes_the_token_in_the_comment_is_not_trusted(tmp_path: Path) -> None:
    def echo(handler: _Server) -> tuple[int, dict[str, str], bytes]:
        authorization = handler.headers["Authorization"]
        comment = {
            "id": 7,
            "html_url": f"https://github.com/o/r/issues/7#{authorization}",
            "body": authorization,
        }
        return 201, {"Content-Type": "application/json"}, json.dumps(comment).encode()

    report_data(tmp_path)
    with serving(echo) as (api, server):
        done = post(tmp_path, api)
    not_posted(done, tmp_path, server)
    assert "a comment address that contains the token" in done.stderr
    assert "revoke the token" in done.stderr


@pytest.mark.parametrize(
    ("status", "body", "said"),
    [
        (200, json.dumps(COMMENT), "GitHub answered 200"),
        (202, json.dumps(COMMENT), "GitHub answered 202"),
        (204, "", "GitHub answered 204"),
        (201, "", "an answer that is not JSON"),
        (201, "posted!", "an answer that is not JSON"),
        (201, json.dumps([COMMENT]), "JSON that is not a comment (a list, not an object)"),
        (201, json.dumps("ok"), "JSON that is not a comment (a str, not an object)"),
        (201, json.dumps({"html_url": COMMENT["html_url"]}), "a comment without an integer id"),
        (201, json.dumps({**COMMENT, "id": "1"}), "a comment without an integer id"),
        (201, json.dumps({**COMMENT, "id": True}), "a comment without an integer id"),
        (201, json.dumps({"id": 1}), "a comment without a web address"),
        (201, json.dumps({**COMMENT, "html_url": "javascript:alert(1)"}), "a comment without a web address"),
        (201, json.dumps({**COMMENT, "html_url": "https://x/\x1b[2J"}), "a comment without a web address"),
        (201, "[" * 100_000 + "]" * 100_000, "an answer that is not JSON"),
    ],
    ids=lambda value: value if isinstance(value, int) else repr(value)[:30],
)
def test_only_201_with_a_comment_is_posted(tmp_path: Path, status: int, body: str, said: str) -> None:
    report_data(tmp_path)
    with serving(lambda _: (status, {"Content-Type": "application/json"}, body.encode())) as (api, server):
        done = post(tmp_path, api)
    not_posted(done, tmp_path, server)
    assert said in done.stderr
    assert "not known to be posted" in done.stderr and "look at the issue before posting again" in done.stderr


@pytest.mark.parametrize("status", [201, 500])
def test_a_huge_answer_is_read_only_up_to_its_bound(tmp_path: Path, status: int) -> None:
    huge = b'{"message": "' + b"x" * (8 * 1024 * 1024) + b'"}'
    report_data(tmp_path)
    with serving(lambda _: (status, {"Content-Type": "application/json"}, huge)) as (api, server):
        done = post(tmp_path, api)
    not_posted(done, tmp_path, server)
    assert len(done.stderr) < 4000  # the server's text is cut, not printed whole
    if status == 201:
        assert "an answer larger than 1024 KiB" in done.stderr


def test_a_missing_token_says_nothing_was_posted_and_no_file_written(tmp_path: Path) -> None:
    report_data(tmp_path)
    with serving(json_answer(201, COMMENT)) as (api, server):
        done = post(tmp_path, api, token=None)
    assert done.returncode == 11 and not server.seen
    assert "No GitHub token in the environment" in done.stderr
    assert "TFBISECT_GITHUB_TOKEN, GITHUB_TOKEN, GH_TOKEN" in done.stderr
    assert "nothing was posted and no file was written" in done.stderr
    assert "What to do: export one of" in done.stderr
    assert not (tmp_path / "summary.md").exists() and not (tmp_path / "report.html").exists()
    assert "written" not in done.stdout


def test_a_token_with_a_line_break_is_refused_without_being_shown(tmp_path: Path) -> None:
    report_data(tmp_path)
    with serving(json_answer(201, COMMENT)) as (api, server):
        done = post(tmp_path, api, token=f"{TOKEN}\nX-Injected: 1")
    assert done.returncode == 11 and not server.seen
    assert "characters no token has" in done.stderr and "nothing was posted" in done.stderr
    no_token_anywhere(done, tmp_path)


@pytest.mark.parametrize("trickle", [False, True])
def test_a_server_that_never_answers_or_trickles_times_out(trickle: bool) -> None:
    stop = threading.Event()

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if trickle:  # headers, then one byte of a long body now and then
                self.send_response(201)
                self.send_header("Content-Length", "1000000")
                self.end_headers()
            while not stop.wait(0.2):
                if trickle:
                    try:
                        self.wfile.write(b"x")
                        self.wfile.flush()
                    except OSError:
                        return

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    with loopback(Slow) as api:
        started = time.monotonic()
        try:
            with pytest.raises(PostError) as info:
                post_comment(Target("o", "r", 7), "body", TOKEN, api=api, timeout=1.5)
        finally:
            stop.set()
    assert time.monotonic() - started < 10
    assert "no complete answer to the comment on o/r#7 within 1.5 s" in str(info.value)
    assert "not known to be posted" in str(info.value)
    assert TOKEN not in str(info.value) and info.value.__cause__ is None and info.value.__suppress_context__


def test_scrubbing_covers_the_usual_encodings() -> None:
    forms = [*token_forms(), TOKEN.upper(), urllib.parse.quote_plus(TOKEN), f"x-access-token:{TOKEN}@h"]
    scrubbed = _scrub(" ".join(["Bearer", *forms]), TOKEN)
    assert TOKEN.lower() not in scrubbed.lower()
    for encoded in forms:
        assert encoded not in scrubbed
    assert scrubbed.startswith("Bearer ***")
    assert _shown("a\x1b[31mred\x07\u202e", TOKEN) == "a\\x1b[31mred\\x07\\u202e"
    # the token is scrubbed before the text is cut, so a cut never leaves part of it
    assert "ghp_" not in _shown("x" * 290 + TOKEN, TOKEN, limit=300)


def test_the_api_url_must_be_http() -> None:
    with pytest.raises(PostError, match="not an http\\(s\\) URL"):
        post_comment(Target("o", "r", 7), "body", TOKEN, api="file:///etc/passwd")


def test_no_server_at_all_means_nothing_was_posted() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(PostError) as info:
        post_comment(Target("o", "r", 7), "body", TOKEN, api=f"http://127.0.0.1:{port}", timeout=5)
    assert f"Could not reach 127.0.0.1:{port}" in info.value.what and "nothing was posted" in info.value.what
    assert TOKEN not in str(info.value) and info.value.__cause__ is None


def test_an_answer_that_breaks_off_is_not_known_to_be_posted() -> None:
    def cut(handler: _Server) -> tuple[int, dict[str, str], bytes]:
        handler.close_connection = True
        return 201, {"Content-Length": "1000"}, b'{"id": 1, "html_url": "https://'  # then the line goes dead

    with serving(cut) as (api, server), pytest.raises(PostError) as info:
        post_comment(Target("o", "r", 7), "body", TOKEN, api=api, timeout=5)
    assert len(server.seen) == 1
    assert "broke off (IncompleteRead" in info.value.what and "not known to be posted" in info.value.what
    assert "look at the issue before posting again" in info.value.todo
