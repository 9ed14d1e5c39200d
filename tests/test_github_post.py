"""`tfbisect report --post`: a real HTTP request to a loopback server that checks it."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from test_report import report_data
from tfbisect.github import PostError, Target

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
            answer = {"html_url": "https://github.com/o/r/issues/7#issuecomment-1"}
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
    assert request["body"]["body"] == (tmp_path / "summary.md").read_text()
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
