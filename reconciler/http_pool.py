"""Shared HTTP clients for the API adapters, and helpers for their errors.

One ``HttpPool`` serves both APIs. It keeps one ``httpx.AsyncClient`` per
origin (scheme, host and port) and one semaphore that caps the requests in
flight across all of them. Clients follow no redirects, so a token is never
sent on to another host, and they ignore proxy settings of the environment.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata
from types import TracebackType

import httpx

from reconciler.errors import (
    ApiError,
    AuthError,
    NotFoundError,
    PermanentApiError,
    TransientApiError,
)
from reconciler.settings import Settings

MAX_ERROR_TEXT = 300
"""Maximum length of a text taken from a response into an error message."""

_DEFAULT_PORTS = {"http": 80, "https": 443}

RequestObserver = Callable[[str, str, str], None]
"""Receives the API, the HTTP method and the outcome of one attempt.

The outcome is the status code as text, ``timeout`` or ``transport_error``.
"""

_request_observers: list[RequestObserver] = []


def observe_requests(observer: RequestObserver) -> Callable[[], None]:
    """Call ``observer`` after every HTTP attempt of every pool in this process.

    Returns:
        A function that removes the observer again.
    """
    _request_observers.append(observer)
    return lambda: _request_observers.remove(observer)


def _notify(api: str, method: str, outcome: str) -> None:
    for observer in list(_request_observers):
        observer(api, method, outcome)


def _user_agent() -> str:
    try:
        version = metadata.version("teckochecker")
    except metadata.PackageNotFoundError:
        version = "unknown"

    return f"teckochecker/{version}"


USER_AGENT = _user_agent()

# The transport type, named here so that modules above the adapters can
# accept one (tests pass a mock transport) without importing httpx.
Transport = httpx.AsyncBaseTransport


class HttpPool:
    """HTTP clients and the global cap on requests in flight.

    Use it as an async context manager, which closes every client on exit.

    Attributes:
        limiter: semaphore with ``settings.concurrency`` slots. Each API
            client takes one slot for each HTTP attempt, and not while it
            waits between retries.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.limiter = asyncio.Semaphore(settings.concurrency)
        self._settings = settings
        self._transport = transport
        self._timeout = httpx.Timeout(
            settings.http_timeout, connect=min(5.0, settings.http_timeout)
        )
        # The limiter already caps requests in flight, so each client may
        # open as many connections as there are slots and never queues.
        self._limits = httpx.Limits(
            max_connections=settings.concurrency,
            max_keepalive_connections=settings.concurrency,
        )
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._closed = False

    async def __aenter__(self) -> HttpPool:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def timeout(self) -> float:
        """Maximum duration of one HTTP attempt in seconds, from the settings."""
        return self._settings.http_timeout

    def client_for(self, base_url: str) -> httpx.AsyncClient:
        """Return the client for the origin of ``base_url``, creating it if new.

        Raises:
            ValueError: ``base_url`` has no http or https scheme or no host.
            RuntimeError: the pool is closed.
        """
        origin = url_origin(base_url)
        client = self._clients.get(origin)
        if client is not None:
            return client

        if self._closed:
            msg = f"HttpPool is closed; cannot create a client for {origin}"
            raise RuntimeError(msg)

        client = httpx.AsyncClient(
            headers={"User-Agent": USER_AGENT},
            timeout=self._timeout,
            limits=self._limits,
            follow_redirects=False,
            trust_env=False,
            transport=self._transport,
        )
        self._clients[origin] = client
        return client

    async def send(
        self,
        method: str,
        url: httpx.URL,
        *,
        headers: Mapping[str, str],
        json: object = None,
        api: str = "unknown",
    ) -> httpx.Response:
        """Send one request under the limiter and read the whole response.

        The request gets the client's default headers, such as User-Agent.
        Besides httpx's own per-phase timeouts, the attempt as a whole must
        finish within ``timeout`` seconds; waiting for a limiter slot does not
        count. ``api`` names the API for the request observers.

        Raises:
            httpx.TransportError: the request failed, as in ``httpx``.
            TimeoutError: the attempt took longer than ``timeout`` seconds.
        """
        client = self.client_for(str(url))
        request = client.build_request(method, url, headers=headers, json=json)
        try:
            async with self.limiter, asyncio.timeout(self._settings.http_timeout):
                response = await client.send(request)
        except TimeoutError:
            _notify(api, method, "timeout")
            raise
        except httpx.TransportError:
            _notify(api, method, "transport_error")
            raise
        _notify(api, method, str(response.status_code))
        return response

    async def aclose(self) -> None:
        """Close every client; the pool creates no new ones afterwards."""
        self._closed = True
        clients = list(self._clients.values())
        self._clients.clear()
        for client in clients:
            await client.aclose()


def url_origin(base_url: str) -> str:
    """Return ``scheme://host:port`` of ``base_url``, with the default port filled in.

    Raises:
        ValueError: ``base_url`` has no http or https scheme or no host.
    """
    url = httpx.URL(base_url)
    if url.scheme not in _DEFAULT_PORTS or not url.host:
        msg = f"invalid API base URL {base_url!r}: expected http(s)://host[:port]"
        raise ValueError(msg)

    port = url.port or _DEFAULT_PORTS[url.scheme]
    return f"{url.scheme}://{url.host}:{port}"


# A server may echo part of a token ("Incorrect API key provided: sk-ab...").
# Any run of this many characters of a secret is replaced; shorter runs are
# too common in ordinary text to mean anything.
MIN_SECRET_FRAGMENT = 8


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace each secret in ``text``, or any part of it of 8 or more
    characters, with ``***``."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "***")
        if len(secret) <= MIN_SECRET_FRAGMENT:
            continue
        # Longest fragments first, so a long echo is replaced whole.
        for size in range(len(secret) - 1, MIN_SECRET_FRAGMENT - 1, -1):
            for start in range(len(secret) - size + 1):
                fragment = secret[start : start + size]
                if fragment in text:
                    text = text.replace(fragment, "***")
    return text


def clip(text: str, limit: int = MAX_ERROR_TEXT) -> str:
    """Return ``text`` on one line, cut to ``limit`` characters.

    Redact secrets before clipping, because a cut through a secret leaves a
    prefix that ``redact`` no longer finds.
    """
    text = " ".join(text.split())
    if len(text) <= limit:
        return text

    return text[: limit - 3] + "..."


def remote_text(
    value: object, secrets: Iterable[str], limit: int = MAX_ERROR_TEXT
) -> str | None:
    """Return a text from a response, redacted and clipped.

    Returns None when ``value`` is not a string or is blank.
    """
    if not isinstance(value, str) or not value.strip():
        return None

    return clip(redact(value, secrets), limit)


def json_body(response: httpx.Response) -> object:
    """Return the decoded JSON body of a read response.

    Raises:
        ValueError: the body is not valid JSON in UTF-8.
    """
    try:
        return json.loads(response.content)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        msg = f"the response body is not JSON ({exc.__class__.__name__})"
        raise ValueError(msg) from exc


def describe_transport_error(
    exc: BaseException, timeout: float, secrets: Iterable[str]
) -> str:
    """Describe an error of ``HttpPool.send`` in one short phrase.

    httpx puts no header in its error texts, but ``secrets`` are redacted
    anyway in case a lower layer echoes one.
    """
    if isinstance(exc, TimeoutError):
        return f"timed out after {timeout:g} s"

    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({exc.__class__.__name__})"

    detail = clip(redact(str(exc), secrets), 200)
    name = exc.__class__.__name__
    return f"{name}: {detail}" if detail else name


def request_never_sent(exc: BaseException) -> bool:
    """Tell whether a transport error happened before any byte of the request.

    True for a connection that could not be opened and for no free
    connection in the pool, so the server cannot have acted on the request.
    """
    return isinstance(
        exc,
        httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout,
    )


def error_class_for_status(status_code: int) -> type[ApiError]:
    """Return the error class for a response status that is not 2xx.

    408, 409, 429 and 5xx may pass when repeated, as the OpenAI SDK assumes.
    A redirect is permanent because no client follows redirects.
    """
    if status_code in (401, 403):
        return AuthError

    if status_code == 404:
        return NotFoundError

    if status_code in (408, 409, 429) or status_code >= 500:
        return TransientApiError

    return PermanentApiError
