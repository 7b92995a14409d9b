"""One client for OpenAI-compatible ``/chat/completions`` endpoints (vLLM, llama.cpp's server, Ollama, hosted APIs),
used by the HTTP judge (`http.py`) and by a Constitutional AI feedback model served over HTTP, which critiques and
revises through `chat_many`.

The standard library only (urllib, a thread pool for batches). Each request has a ``timeout`` (for the connection
and each read); connection errors, timeouts, HTTP 429 and 5xx are retried up to ``max_retries`` times with
exponential backoff and jitter (a numeric ``Retry-After`` is honoured up to ``max_backoff``); any other HTTP error
fails at once. A successful status whose body is not the expected JSON fails at once too: a wrong URL or API answers
the same way every time. The API key is read from the environment variable ``api_key_env`` at each request and sent
as ``Authorization: Bearer``; it is never stored on the client, logged, or shown in a repr or an error message.
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import os
import random
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from .base import JudgeError

log = logging.getLogger(__name__)

# How much of a bad response body an error message quotes.
_EXCERPT_CHARS = 300


def excerpt(raw: bytes | str) -> str:
    """At most _EXCERPT_CHARS of a response body or answer, for an error message."""
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    text = " ".join(text.split())
    if not text:
        return "(empty body)"
    return text if len(text) <= _EXCERPT_CHARS else text[:_EXCERPT_CHARS] + "..."


class ChatClient:
    """Requests to ``{base_url}/chat/completions``, each retried as the module docstring says.

    Args:
        base_url: the API root, as OpenAI clients take it, e.g. ``http://127.0.0.1:8080/v1``.
        model: the ``model`` field of each request (servers that host one model ignore it).
        api_key_env: name of the environment variable that holds the API key (None: no key). No variable is read
            unless it is named here, so a key meant for one provider is never sent to another endpoint by default.
            It must be set when the client is built.
        timeout: seconds for the connection and for each read of one request.
        max_retries: retries after the first attempt, on connection errors, timeouts, 429 and 5xx.
        backoff, max_backoff: the n-th retry waits ``min(max_backoff, backoff * 2**n)`` seconds times a random
            factor in [0.5, 1) (jitter spreads out clients that failed together); a numeric ``Retry-After`` header
            raises the wait to its value, capped at ``max_backoff``.
        max_concurrency: requests in flight at once for batches.
        system_prompt: an optional system message before each conversation.
        extra_body: fields merged into every request body (e.g. ``{"seed": 0}`` or a server's own options).
        owner: what errors and logs call the user of this client (e.g. "HTTPJudge").
    """

    def __init__(self, base_url: str, model: str = "default", *, api_key_env: str | None = None,
                 timeout: float = 60.0, max_retries: int = 3, backoff: float = 1.0, max_backoff: float = 30.0,
                 max_concurrency: int = 4, system_prompt: str | None = None,
                 extra_body: Mapping[str, Any] | None = None, owner: str = "ChatClient"):
        if not isinstance(base_url, str) or not re.match(r"https?://[^/\s]+", base_url):
            raise ValueError(f"{owner}: base_url must start with http:// or https:// and a host, got {base_url!r}")
        if not isinstance(model, str) or not model:
            raise ValueError(f"{owner}: model must be a non-empty str, got {model!r}")
        if not (isinstance(timeout, int | float) and timeout > 0):
            raise ValueError(f"{owner}: timeout must be a number > 0, got {timeout!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"{owner}: max_retries must be an int >= 0, got {max_retries!r}")
        if not (backoff >= 0 and max_backoff >= 0):
            raise ValueError(f"{owner}: backoff and max_backoff must be >= 0, got {backoff!r}, {max_backoff!r}")
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise ValueError(f"{owner}: max_concurrency must be an int >= 1, got {max_concurrency!r}")
        if api_key_env is not None and not os.environ.get(api_key_env):
            # Name the variable, never its value.
            raise ValueError(f"{owner}: api_key_env names the environment variable {api_key_env!r}, which is not set")
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.max_concurrency = max_concurrency
        self.system_prompt = system_prompt
        self.extra_body = dict(extra_body or {})
        self.name = f"{owner}({model} at {self.base_url})"
        self._rng = random.Random()  # jitter only; never the global RNG
        self._lock = threading.Lock()
        self._stats = dict.fromkeys(("requests", "retries"), 0)

    def __repr__(self) -> str:
        return f"ChatClient(base_url={self.base_url!r}, model={self.model!r}, api_key_env={self.api_key_env!r})"

    @property
    def stats(self) -> dict[str, int]:
        """HTTP attempts and retries since construction."""
        with self._lock:
            return dict(self._stats)

    def _count(self, key: str) -> None:
        with self._lock:
            self._stats[key] += 1

    def body(self, conversation: Sequence[Mapping], **fields: Any) -> dict:
        """A request body: the system prompt (if any) and the conversation's messages, `fields`, then extra_body."""
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        messages += [{"role": m["role"], "content": m["content"]} for m in conversation]
        return {"model": self.model, "messages": messages, **fields, **self.extra_body}

    def chat_many(self, conversations: Sequence[Sequence[Mapping]], *, max_tokens: int = 128,
                  temperature: float = 0.0) -> list[str]:
        """The endpoint's reply to each conversation (lists of role/content messages), at most ``max_concurrency``
        requests at a time."""
        jobs = [(i, self.body(c, max_tokens=max_tokens, temperature=temperature)) for i, c in enumerate(conversations)]
        return [(response["choices"][0]["message"].get("content") or "").strip() for response in self.post_all(jobs)]

    def post_all(self, jobs: list[tuple[int, dict]]) -> list[dict]:
        """Send every (item, body) and return the responses in order; the first failure cancels the rest."""
        if len(jobs) <= 1 or self.max_concurrency == 1:
            return [self.post(body, item) for item, body in jobs]
        pool = ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(jobs)), thread_name_prefix="http-judge")
        futures: list[Future] = [pool.submit(self.post, body, item) for item, body in jobs]
        try:
            return [future.result() for future in futures]
        finally:
            # On success all are done; on failure the queued ones are dropped instead of waited for.
            pool.shutdown(wait=False, cancel_futures=True)

    def redact(self, text: str) -> str:
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        return text.replace(key, "[redacted]") if key else text

    def error(self, message: str) -> JudgeError:
        return JudgeError(self.redact(message))

    def _delay(self, retry: int, retry_after: float | None) -> float:
        delay = min(self.max_backoff, self.backoff * 2**retry) * (0.5 + 0.5 * self._rng.random())
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_backoff))
        return delay

    def post(self, body: dict, item: int) -> dict:
        """POST one request with retries; return the validated JSON response or raise JudgeError."""
        data = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise self.error(f"{self.name}: environment variable {self.api_key_env!r} (api_key_env) is not set")
            headers["Authorization"] = f"Bearer {key}"
        where = f"{self.name}: POST {self.url} (item {item})"
        attempts = self.max_retries + 1
        last_error, wait = "", 0.0
        for attempt in range(attempts):
            if attempt:
                self._count("retries")
                time.sleep(wait)
            self._count("requests")
            request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    status, raw = response.status, response.read()
            except urllib.error.HTTPError as exc:
                status, raw = exc.code, _read_error_body(exc)
                if status == 429 or status >= 500:
                    last_error = f"HTTP {status}: {excerpt(raw)}"
                    wait = self._delay(attempt, _retry_after(exc.headers))
                    log.info("%s: %s; retrying", where, self.redact(last_error))
                    continue
                raise self.error(
                    f"{where} returned HTTP {status} {exc.reason} (not retried: a client error fails the same way "
                    f"again): {excerpt(raw)}"
                ) from None
            except (TimeoutError, socket.timeout):
                last_error = f"timed out after {self.timeout:g} s"
            except urllib.error.URLError as exc:
                reason = exc.reason
                if isinstance(reason, TimeoutError | socket.timeout):
                    last_error = f"timed out after {self.timeout:g} s"
                else:
                    last_error = f"connection failed: {reason}"
            except (ConnectionError, http.client.HTTPException, OSError) as exc:
                last_error = f"connection failed: {type(exc).__name__}: {exc}"
            else:
                return self._validate(raw, status, where)
            wait = self._delay(attempt, None)
            log.info("%s: %s; retrying", where, self.redact(last_error))
        raise self.error(
            f"{where} failed after {attempts} attempt{'s' if attempts != 1 else ''} "
            f"({self.max_retries} retries); last error: {last_error}"
        )

    def _validate(self, raw: bytes, status: int, where: str) -> dict:
        """The parsed body of a successful response, checked for the fields the judge reads."""
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise self.error(
                f"{where} returned HTTP {status} with a body that is not JSON ({exc}): {excerpt(raw)}"
            ) from None
        problem = None
        if not isinstance(data, dict):
            problem = f"the JSON is a {type(data).__name__}, expected an object"
        elif "choices" not in data:
            problem = "the JSON has no 'choices'" + (" (it holds an 'error')" if "error" in data else "")
        elif not isinstance(data["choices"], list) or not data["choices"]:
            problem = "'choices' is not a non-empty list"
        elif not isinstance(data["choices"][0], dict) or not isinstance(data["choices"][0].get("message"), dict):
            problem = "'choices[0]' has no 'message' object"
        elif not isinstance(data["choices"][0]["message"].get("content"), str | None):
            problem = "'choices[0].message.content' is not a string"
        if problem:
            raise self.error(f"{where} returned an unexpected response: {problem}: {excerpt(raw)}")
        return data


def _read_error_body(exc: urllib.error.HTTPError) -> bytes:
    try:
        return exc.read() or b""
    except (OSError, http.client.HTTPException):
        return b""


def _retry_after(headers: Any) -> float | None:
    """A numeric Retry-After header in seconds (the HTTP-date form is ignored)."""
    value = headers.get("Retry-After") if headers is not None else None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None

__all__ = ["ChatClient", "excerpt"]
