"""Posting the summary as an issue comment through GitHub's REST API.

The token comes from the environment, goes to the configured API host only (redirects are
refused, never followed with it) and never appears in any output, log or file: messages are
built from the status and the server's own text, scrubbed of the token and its usual
encodings, with control characters escaped, and no exception that held it is chained. Only
GitHub's documented success (201 Created with the comment) counts as posted; the answer is
read with a size bound, and the whole exchange with a deadline.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import threading
import time
import unicodedata
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import IO, Any

from tfbisect import __version__
from tfbisect.core import jsonread
from tfbisect.core.errors import PostError
from tfbisect.core.limits import TOKEN_VARIABLES
from tfbisect.core.textsafe import clip

API = "https://api.github.com"
_TARGET = re.compile(r"^(?P<owner>[A-Za-z0-9_.-]+)/(?P<repo>[A-Za-z0-9_.-]+)#(?P<number>\d+)$")
# What is read of an answer (a comment's JSON is a few KiB), and how long the exchange may take.
MAX_ANSWER_BYTES = 1024 * 1024
TIMEOUT_SECONDS = 30.0
# What of the server's own text goes into a message.
SHOWN_CHARS = 300
_TOKEN_CHARS = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces: what every token is made of
_COMMENT_URL = re.compile(r"https?://[\x21-\x7e]+")


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
            if not _TOKEN_CHARS.fullmatch(value):
                raise PostError(
                    f"The token in {name} has characters no token has (spaces, line breaks or control "
                    "characters), so nothing was posted and no file was written.",
                    f"set {name} to the token alone, or run `tfbisect report` without --post to write the files.",
                )
            return value
    raise PostError(
        f"No GitHub token in the environment ({', '.join(TOKEN_VARIABLES)} are all unset or empty), "
        "so nothing was posted and no file was written.",
        f"export one of {', '.join(TOKEN_VARIABLES)} with a token that may comment on the issue, "
        "or run `tfbisect report` without --post to only write the files.",
    )


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """A 3xx is an answer, never followed: following it would send the token elsewhere."""

    def redirect_request(
        self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str, headers: Message, newurl: str
    ) -> None:
        return None  # urllib then raises HTTPError with the 3xx


def _opener(scheme: str) -> urllib.request.OpenerDirector:
    """HTTP(S) only, no redirects, no other schemes; a plain-HTTP API is reached directly, never
    through a proxy that would see the token (HTTPS goes through a proxy's tunnel, encrypted)."""
    opener = urllib.request.OpenerDirector()
    handlers: list[urllib.request.BaseHandler] = [
        urllib.request.ProxyHandler() if scheme == "https" else urllib.request.ProxyHandler({}),
        urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
        _RefuseRedirects(),
    ]
    for handler in handlers:
        opener.add_handler(handler)
    return opener


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: Message
    body: bytes
    complete: bool  # False: the body was larger than MAX_ANSWER_BYTES and only its start was read


def _read_bounded(stream: Any, deadline: float) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    while size <= MAX_ANSWER_BYTES and time.monotonic() < deadline:
        chunk = stream.read(min(64 * 1024, MAX_ANSWER_BYTES + 1 - size)) if stream is not None else b""
        if not chunk:
            missing = getattr(stream, "length", None)  # what the Content-Length promised and never came
            if isinstance(missing, int) and missing > 0:
                raise http.client.IncompleteRead(b"".join(chunks), missing)
            return b"".join(chunks), True
        chunks.append(chunk)
        size += len(chunk)
    if size <= MAX_ANSWER_BYTES:
        raise TimeoutError("the answer did not finish in time")
    return b"".join(chunks)[:MAX_ANSWER_BYTES], False


def _exchange(request: urllib.request.Request, scheme: str, timeout: float) -> _Answer:
    """Send the request and read the answer, all within `timeout` seconds (name lookup, connect,
    a server that never answers or trickles its answer byte by byte): the work runs in a daemon
    thread that is abandoned, not waited for, when the time is up."""
    deadline = time.monotonic() + timeout
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            with _opener(scheme).open(request, timeout=timeout) as response:
                body, complete = _read_bounded(response, deadline)
                outcome["answer"] = _Answer(response.status, response.headers, body, complete)
        except urllib.error.HTTPError as exc:
            try:
                body, complete = _read_bounded(exc, deadline)
            except Exception:
                body, complete = b"", True
            finally:
                exc.close()
            outcome["answer"] = _Answer(exc.code, exc.headers, body, complete)
        except Exception as exc:  # handed to the caller, which shows it scrubbed
            outcome["error"] = exc

    worker = threading.Thread(target=work, name="tfbisect-post", daemon=True)
    worker.start()
    worker.join(timeout)
    if "answer" in outcome:
        answer: _Answer = outcome["answer"]
        return answer
    if "error" in outcome:
        raise outcome["error"]
    raise TimeoutError(f"no complete answer within {timeout:g} s")


def signed(body: str) -> str:
    """The comment as posted: the summary, then one line saying which tfbisect made it."""
    return f"{body.rstrip()}\n\n<sub>Posted by tfbisect {__version__}.</sub>\n"


def post_comment(
    target: Target,
    body: str,
    token: str,
    api: str = API,
    timeout: float = TIMEOUT_SECONDS,
    summary_path: Path | None = None,
) -> str:
    """POST the comment; returns its URL. Anything but 201 Created with the comment is a PostError."""
    issue = f"{target.owner}/{target.repo}#{target.number}"
    by_hand = (
        f"the summary is written to {summary_path} and can be pasted by hand."
        if summary_path is not None
        else "the summary file can be pasted by hand."
    )
    parts = urllib.parse.urlsplit(api)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PostError(
            f"The API address {_shown(api, token)} is not an http(s) URL, so nothing was posted.",
            f"give --api-url as https://HOST[/PATH] (default {API}); {by_hand}",
        )
    host = _shown(parts.netloc.rpartition("@")[2], token)
    url = f"{api.rstrip('/')}/repos/{target.owner}/{target.repo}/issues/{target.number}/comments"
    request = urllib.request.Request(
        url,
        data=json.dumps({"body": signed(body)}).encode("utf-8"),
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
        answer = _exchange(request, parts.scheme, timeout)
    except TimeoutError as exc:
        raise PostError(
            f"{host} gave no complete answer to the comment on {issue} within {timeout:g} s "
            f"({_shown(str(exc), token)}), so it is not known to be posted.",
            f"look at the issue before posting again, check the network and --api-url; {by_hand}",
        ) from None
    except urllib.error.URLError as exc:  # no connection: the request never reached the server
        raise PostError(
            f"Could not reach {host}: {_shown(str(exc.reason), token)}; nothing was posted.",
            f"check the network and --api-url; {by_hand}",
        ) from None
    except Exception as exc:  # the exchange broke off after the request went out
        raise PostError(
            f"The exchange with {host} broke off ({type(exc).__name__}: {_shown(str(exc), token)}), "
            "so the comment is not known to be posted.",
            f"look at the issue before posting again, check the network and --api-url; {by_hand}",
        ) from None
    return _posted_url(answer, token, host, issue, url, by_hand)


def _posted_url(answer: _Answer, token: str, host: str, issue: str, url: str, by_hand: str) -> str:
    """The comment's URL when the answer is GitHub's documented success, else a PostError."""
    status = answer.status
    if 300 <= status < 400:
        location = answer.headers.get("Location") or ""
        target = urllib.parse.urlsplit(urllib.parse.urljoin(url, location)).netloc.rpartition("@")[2]
        raise PostError(
            f"{host} answered {status} with a redirect to "
            + (f"host {_shown(target, token)}" if location else "nowhere (no Location)")
            + "; redirects are not followed with the token, so nothing was posted.",
            f"point --api-url at the API itself (default {API}); {by_hand}",
        )
    if status != 201:
        detail = _detail(answer.body, token)
        refused = 400 <= status < 500  # GitHub refused the request: nothing was created
        raise PostError(
            f"GitHub answered {status} to the comment on {issue}"
            + (f": {detail}" if detail else "")
            + (
                "; nothing was posted"
                if refused
                else "; only 201 Created means posted, so the comment is not known to be posted"
            )
            + ".",
            "check that the token may comment on that repository and that the issue exists"
            + ("" if refused else "; look at the issue before posting again")
            + f"; {by_hand}",
        )
    problem = ""
    comment: Any = None
    if not answer.complete:
        problem = f"an answer larger than {MAX_ANSWER_BYTES // 1024} KiB"
    else:
        try:
            comment = jsonread.loads(answer.body)
        except (ValueError, RecursionError):
            problem = "an answer that is not JSON"
    if not problem:
        html_url = comment.get("html_url") if isinstance(comment, dict) else None
        if not isinstance(comment, dict):
            problem = f"JSON that is not a comment (a {type(comment).__name__}, not an object)"
        elif not (isinstance(comment.get("id"), int) and not isinstance(comment.get("id"), bool)):
            problem = "a comment without an integer id"
        elif isinstance(html_url, str) and _scrub(html_url, token) != html_url:
            problem = "a comment address that contains the token (so it is not GitHub's)"
        elif not (isinstance(html_url, str) and len(html_url) <= 2048 and _COMMENT_URL.fullmatch(html_url)):
            problem = "a comment without a web address (html_url)"
        else:
            return html_url
    raise PostError(
        f"{host} answered 201 to the comment on {issue}, but with {problem}, so the comment is not known to be posted.",
        "look at the issue before posting again and check --api-url; if that server is not GitHub's, "
        f"revoke the token; {by_hand}",
    )


def _detail(raw: bytes, token: str) -> str:
    """The server's own message (GitHub's `message`, else the start of the body), safe to print."""
    text = raw.decode("utf-8", "replace")
    try:
        document = jsonread.loads(text)
    except (ValueError, RecursionError):
        document = None
    if isinstance(document, dict) and isinstance(document.get("message"), str):
        text = document["message"]
    return _shown(text, token)


def _shown(text: str, token: str, limit: int = SHOWN_CHARS) -> str:
    """Server (or user) text as it may be printed: the token scrubbed first (so a cut cannot
    leave part of it), control characters escaped, then cut to `limit` characters."""
    # Control and format characters go first, so that a token split by a zero-width space or
    # an escape sequence is whole again when it is scrubbed; then scrub, then escape the rest.
    first = _scrub(text, token)
    joined = "".join(ch for ch in first if not unicodedata.category(ch).startswith("C") or ch in "\n\t")
    again = _scrub(joined, token)
    shown = _escape(again if again != joined else first)
    # `limit` characters of the text itself, the mark after them (as these messages always were).
    return shown if len(shown) <= limit else clip(shown, limit + 3, mark="...")


def _escape(text: str) -> str:
    """Control and format characters (terminal escapes, bidi overrides, line breaks) as \\x.. escapes."""
    return "".join(
        ch if not unicodedata.category(ch).startswith("C") else ch.encode("unicode_escape").decode("ascii")
        for ch in text
    )


def _encodings(token: str) -> set[str]:
    """The token as a server might echo it back: as is, URL-quoted, JSON-escaped, and base64 of it
    and of the `x-access-token:TOKEN` basic credential (with and without padding, URL-safe too)."""
    forms = {
        token,
        urllib.parse.quote(token, safe=""),
        urllib.parse.quote_plus(token),
        json.dumps(token)[1:-1],
    }
    for secret in (token, f"x-access-token:{token}", f":{token}", f"{token}:"):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = encode(secret.encode("utf-8")).decode("ascii")
            forms |= {encoded, encoded.rstrip("=")}
    return {form for form in forms if form}


def _scrub(text: str, token: str) -> str:
    if not token:
        return text
    pattern = "|".join(re.escape(form) for form in sorted(_encodings(token), key=len, reverse=True))
    text = re.sub(pattern, "***", text, flags=re.IGNORECASE)
    # A part of the token is a secret too (an echo that drops a character, a cut message).
    width = min(12, max(8, len(token) // 2))
    parts = {token[i : i + width] for i in range(len(token) - width + 1)} if len(token) >= 16 else set()
    if parts:
        text = re.sub("|".join(re.escape(p) for p in sorted(parts)), "***", text, flags=re.IGNORECASE)
    return text
