"""Posting the summary as an issue comment through GitHub's REST API.

The token comes from the environment and never appears in any output, log or file: error
messages are built from the status and GitHub's own message only, then scrubbed anyway.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass

from tfbisect.errors import TfbisectError

API = "https://api.github.com"
TOKEN_VARIABLES = ("TFBISECT_GITHUB_TOKEN", "GITHUB_TOKEN", "GH_TOKEN")
_TARGET = re.compile(r"^(?P<owner>[A-Za-z0-9_.-]+)/(?P<repo>[A-Za-z0-9_.-]+)#(?P<number>\d+)$")


class PostError(TfbisectError):
    exit_code = 11


@dataclass(frozen=True)
class Target:
    owner: str
    repo: str
    number: int

    @classmethod
    def parse(cls, text: str) -> Target:
        match = _TARGET.match(text.strip())
        if not match:
            raise PostError(
                f"{text!r} does not name an issue.",
                "write it as OWNER/REPO#NUMBER, e.g. tensorflow/tensorflow#40000.",
            )
        return cls(match["owner"], match["repo"], int(match["number"]))


def token_from_env() -> str:
    for name in TOKEN_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    raise PostError(
        "No GitHub token in the environment, so the comment was not posted (the summary file is written).",
        f"export one of {', '.join(TOKEN_VARIABLES)} with a token that may comment on the issue.",
    )


def post_comment(target: Target, body: str, token: str, api: str = API, timeout: float = 30) -> str:
    """POST the comment; returns its URL."""
    url = f"{api.rstrip('/')}/repos/{target.owner}/{target.repo}/issues/{target.number}/comments"
    request = urllib.request.Request(
        url,
        data=json.dumps({"body": body}).encode("utf-8"),
        method="POST",
        headers={
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
            "Content-Type": "application/json",
            "User-Agent": "tfbisect",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        detail = _message(exc.read())
        raise PostError(
            _scrub(
                f"GitHub answered {exc.code} to the comment on {target.owner}/{target.repo}#{target.number}: {detail}",
                token,
            ),
            "check that the token may comment on that repository and that the issue exists; "
            "the summary file is written and can be pasted by hand.",
        ) from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise PostError(
            _scrub(f"Could not reach {api}: {exc}", token),
            "check the network; the summary file is written and can be pasted by hand.",
        ) from None
    return str(answer.get("html_url", url))


def _message(raw: bytes) -> str:
    try:
        return str(json.loads(raw).get("message", ""))[:300]
    except ValueError:
        return raw[:300].decode("utf-8", "replace")


def _scrub(text: str, token: str) -> str:
    return text.replace(token, "***") if token else text
