"""GitHub's REST API: posting the summary as an issue comment, and reading an issue's text.

The token comes from the environment, goes to the configured API host only (redirects are
refused, never followed with it) and never appears in any output, log or file: messages are
built from the status and the server's own text, scrubbed of the token and its usual
encodings, with control characters escaped, and no exception that held it is chained. Only
GitHub's documented success (201 Created with the comment) counts as posted; the answer is
read with a size bound, and the whole exchange with a deadline.  Reading an issue
(`fetch_issue`, for `tfbisect new --from-issue`) goes through the same exchange: the token is
optional, and the issue and its pages of comments share one deadline and bounded counts.
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
from typing import IO, Any, NoReturn

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


def _read_bounded(stream: Any, deadline: float, limit: int = MAX_ANSWER_BYTES) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    while size <= limit and time.monotonic() < deadline:
        chunk = stream.read(min(64 * 1024, limit + 1 - size)) if stream is not None else b""
        if not chunk:
            missing = getattr(stream, "length", None)  # what the Content-Length promised and never came
            if isinstance(missing, int) and missing > 0:
                raise http.client.IncompleteRead(b"".join(chunks), missing)
            return b"".join(chunks), True
        chunks.append(chunk)
        size += len(chunk)
    if size <= limit:
        raise TimeoutError("the answer did not finish in time")
    return b"".join(chunks)[:limit], False


def _exchange(
    request: urllib.request.Request, scheme: str, timeout: float, limit: int = MAX_ANSWER_BYTES
) -> _Answer:
    """Send the request and read the answer, all within `timeout` seconds (name lookup, connect,
    a server that never answers or trickles its answer byte by byte): the work runs in a daemon
    thread that is abandoned, not waited for, when the time is up."""
    deadline = time.monotonic() + timeout
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            with _opener(scheme).open(request, timeout=timeout) as response:
                body, complete = _read_bounded(response, deadline, limit)
                outcome["answer"] = _Answer(response.status, response.headers, body, complete)
        except urllib.error.HTTPError as exc:
            try:
                body, complete = _read_bounded(exc, deadline, limit)
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


# -- reading an issue (`tfbisect new --from-issue`) --------------------------------------------

# An issue answer and each page of comments is read up to this size; GitHub caps a post at
# 65,536 characters, so a page of COMMENTS_PER_PAGE real comments fits well inside it.
MAX_ISSUE_ANSWER_BYTES = 4 * 1024 * 1024
COMMENTS_PER_PAGE = 50
MAX_COMMENT_PAGES = 4  # the first 200 comments: a repro and its versions are near the top


@dataclass(frozen=True)
class Issue:
    """An issue's text as GitHub holds it: the body, then the comments, oldest first."""

    target: Target
    title: str
    posts: tuple[str, ...]
    more_comments: bool  # comments past MAX_COMMENT_PAGES pages were not read

    @property
    def address(self) -> str:
        """The issue's web address, made from the target (never from the server's text)."""
        return f"https://github.com/{self.target.owner}/{self.target.repo}/issues/{self.target.number}"


def optional_token() -> str:
    """The token when one is set (checked as `token_from_env` checks it), else "": reading a
    public issue needs none (60 requests an hour without, 5,000 with)."""
    if any(os.environ.get(name, "").strip() for name in TOKEN_VARIABLES):
        return token_from_env()
    return ""


@dataclass(frozen=True)
class _Reader:
    """One issue's reading: where, with what, until when."""

    target: Target
    token: str
    api: str
    deadline: float
    timeout: float

    @property
    def issue(self) -> str:
        return f"{self.target.owner}/{self.target.repo}#{self.target.number}"

    @property
    def host(self) -> str:
        return _shown(urllib.parse.urlsplit(self.api).netloc.rpartition("@")[2], self.token)


_MARKDOWN_HINT = (
    "or save the issue's text (body and comments) as a Markdown file and use --from-markdown FILE"
)


def fetch_issue(target: Target, token: str = "", api: str = API, timeout: float = TIMEOUT_SECONDS) -> Issue:
    """The issue's title, body and comments (oldest first), all read within `timeout` seconds.
    Anything but GitHub's documented answers (200 with an issue, 200 with a list of comments)
    is a PostError that says what came back; nothing is followed elsewhere."""
    parts = urllib.parse.urlsplit(api)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PostError(
            f"The API address {_shown(api, token)} is not an http(s) URL, so the issue was not read.",
            f"give --api-url as https://HOST[/PATH] (default {API}).",
        )
    reader = _Reader(target, token, api, time.monotonic() + timeout, timeout)
    base = f"{api.rstrip('/')}/repos/{target.owner}/{target.repo}/issues/{target.number}"
    issue = _get_json(reader, base, "the issue")
    if not isinstance(issue, dict):
        _not_github(reader, f"JSON that is not an issue (a {type(issue).__name__}, not an object)")
    title, body = issue.get("title", ""), issue.get("body")
    if not isinstance(title, str) or not (body is None or isinstance(body, str)):
        _not_github(reader, "an issue whose title or body is not text")
    count = issue.get("comments")
    posts, more = [body or ""], False
    if not (isinstance(count, int) and not isinstance(count, bool) and count == 0):
        comments, more = _comments(reader, base)
        posts += comments
    return Issue(target, title, tuple(posts), more)


def _comments(reader: _Reader, base: str) -> tuple[list[str], bool]:
    """The comments' bodies, oldest first (GitHub's order), page by page up to the bound."""
    bodies: list[str] = []
    for page in range(1, MAX_COMMENT_PAGES + 1):
        url = f"{base}/comments?per_page={COMMENTS_PER_PAGE}&page={page}"
        found = _get_json(reader, url, f"page {page} of the comments")
        if not isinstance(found, list) or not all(
            isinstance(c, dict) and (c.get("body") is None or isinstance(c.get("body"), str)) for c in found
        ):
            _not_github(reader, f"page {page} of the comments that is not a list of comments")
        bodies += [comment.get("body") or "" for comment in found]
        if len(found) < COMMENTS_PER_PAGE:
            return bodies, False
    return bodies, True


def _get_json(reader: _Reader, url: str, what: str) -> Any:
    """GET `url` within what is left of the deadline; the decoded JSON of a complete 200 answer."""
    headers = {
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28",
        "User-Agent": "tfbisect",
    }
    if reader.token:
        headers["Authorization"] = f"Bearer {reader.token}"
    request = urllib.request.Request(url, method="GET", headers=headers)
    left = reader.deadline - time.monotonic()
    try:
        if left <= 0:
            raise TimeoutError("the time was up before it was asked for")
        answer = _exchange(request, urllib.parse.urlsplit(url).scheme, left, MAX_ISSUE_ANSWER_BYTES)
    except TimeoutError as exc:
        raise PostError(
            f"{reader.host} gave no complete answer for {what} of {reader.issue} within "
            f"{reader.timeout:g} s ({_shown(str(exc), reader.token)}); nothing was written.",
            f"check the network and try again, {_MARKDOWN_HINT}.",
        ) from None
    except urllib.error.URLError as exc:
        raise PostError(
            f"Could not reach {reader.host} to read {reader.issue}: {_shown(str(exc.reason), reader.token)}; "
            "nothing was written.",
            f"check the network (and --api-url), {_MARKDOWN_HINT}.",
        ) from None
    except Exception as exc:
        raise PostError(
            f"Reading {what} of {reader.issue} from {reader.host} broke off "
            f"({type(exc).__name__}: {_shown(str(exc), reader.token)}); nothing was written.",
            f"try again, {_MARKDOWN_HINT}.",
        ) from None
    _check_status(reader, answer, url, what)
    if not answer.complete:
        _not_github(reader, f"{what} larger than {MAX_ISSUE_ANSWER_BYTES // (1024 * 1024)} MiB")
    try:
        return jsonread.loads(answer.body)
    except (ValueError, RecursionError):
        _not_github(reader, f"{what} that is not JSON")


def _check_status(reader: _Reader, answer: _Answer, url: str, what: str) -> None:
    """Nothing when GitHub answered 200; else the PostError that says what the status means."""
    status, issue, token = answer.status, reader.issue, reader.token
    if status == 200:
        return
    if 300 <= status < 400:
        location = answer.headers.get("Location") or ""
        moved = urllib.parse.urlsplit(urllib.parse.urljoin(url, location))
        raise PostError(
            f"{reader.host} answered {status} for {issue} with a redirect to "
            + (f"{_shown(moved.netloc + moved.path, token)}" if location else "nowhere (no Location)")
            + " (a moved or transferred repository or issue); redirects are not followed, so nothing was written.",
            f"give the issue's current OWNER/REPO#N (as its page on github.com shows it), {_MARKDOWN_HINT}.",
        )
    remaining = answer.headers.get("X-RateLimit-Remaining")
    detail = _detail(answer.body, token)
    if status == 429 or (status == 403 and (remaining == "0" or "rate limit" in detail.lower())):
        raise PostError(
            f"GitHub's API rate limit is spent ({status} for {issue}: {detail or 'no message'}); nothing was written.",
            "wait for the limit to reset (an hour at most), or export GITHUB_TOKEN with a token "
            f"(5,000 requests an hour instead of 60), {_MARKDOWN_HINT}.",
        )
    if status == 404:
        raise PostError(
            f"GitHub has no issue {issue} (404 Not Found); nothing was written.",
            "check OWNER/REPO#N (the repository's owner and name, the issue's number); a private "
            f"repository needs a token that may read it in GITHUB_TOKEN; {_MARKDOWN_HINT}.",
        )
    raise PostError(
        f"GitHub answered {status} for {what} of {issue}"
        + (f": {detail}" if detail else "")
        + "; nothing was written.",
        (
            "check the token in GITHUB_TOKEN (or unset it: a public issue needs none)"
            if status in (401, 403)
            else "try again later"
        )
        + f", {_MARKDOWN_HINT}.",
    )


def _not_github(reader: _Reader, problem: str) -> NoReturn:
    raise PostError(
        f"{reader.host} answered with {problem} for {reader.issue}, which is not GitHub's answer; nothing was written.",
        f"check --api-url (default {API}) and try again, {_MARKDOWN_HINT}.",
    )
