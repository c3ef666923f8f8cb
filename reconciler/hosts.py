"""The host of each request, and the check that a token may be sent there.

A job file decides where its tokens are sent, and anyone who can commit a job
file could point one at their own server. Every request's base URL is chosen
here, and checked against the vendors' hosts plus the operator's
``TC_ALLOWED_HOSTS``; a job file can never widen that list.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit, urlunsplit

from reconciler.errors import HostNotAllowedError

OPENAI_HOSTS = frozenset({"api.openai.com"})
AZURE_OPENAI_SUFFIXES = (".openai.azure.com", ".cognitiveservices.azure.com")
KEBOOLA_SUFFIXES = (".keboola.com", ".keboola.cloud")


def host_of(url: str) -> str:
    """Return the lower-case host name of ``url``, without port or trailing dot."""
    return (urlsplit(url).hostname or "").lower().rstrip(".")


def is_loopback(host: str) -> bool:
    """Tell whether ``host`` names this machine (localhost, 127.0.0.0/8, ::1)."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def queue_url_for(stack_url: str, queue_url: str | None) -> str:
    """Return the Keboola Queue API base URL of a job.

    An explicit ``queue_url`` wins. Otherwise the first host label
    ``connection`` of the stack URL becomes ``queue``, which is how every
    Keboola stack names its queue host.

    Raises:
        HostNotAllowedError: no queue URL is given and the stack URL's host
            does not start with ``connection.``.
    """
    if queue_url:
        return queue_url.rstrip("/")
    parts = urlsplit(stack_url)
    host = parts.hostname or ""
    if not host.startswith("connection."):
        msg = (
            f"keboola.stack_url {stack_url!r} has no host starting with "
            "'connection.', so its queue URL cannot be derived; "
            "set keboola.queue_url"
        )
        raise HostNotAllowedError(msg)
    netloc = parts.netloc.replace(host, "queue." + host[len("connection.") :], 1)
    return urlunsplit((parts.scheme, netloc, "", "", "")).rstrip("/")


def check_openai_host(url: str, allowed: frozenset[str]) -> None:
    """Raise unless an OpenAI key may be sent to ``url``.

    Raises:
        HostNotAllowedError: the host is neither OpenAI's nor Azure OpenAI's
            nor in the operator's allowed hosts.
    """
    host = host_of(url)
    vendor = host in OPENAI_HOSTS or host.endswith(AZURE_OPENAI_SUFFIXES)
    _check(url, host, vendor, allowed, "openai.base_url", "the OpenAI key")


def check_keboola_host(url: str, allowed: frozenset[str]) -> None:
    """Raise unless a Keboola token may be sent to the queue at ``url``.

    Raises:
        HostNotAllowedError: the host is not a ``queue.`` host under
            ``keboola.com`` or ``keboola.cloud`` nor in the allowed hosts.
    """
    host = host_of(url)
    vendor = host.startswith("queue.") and host.endswith(KEBOOLA_SUFFIXES)
    _check(url, host, vendor, allowed, "the Keboola queue URL", "the Keboola token")


def _check(
    url: str, host: str, vendor: bool, allowed: frozenset[str], what: str, token: str
) -> None:
    if host in allowed:
        return
    if vendor and urlsplit(url).scheme == "https":
        return
    if vendor:
        msg = f"{what} {url!r} must use https, because {token} travels in a header"
        raise HostNotAllowedError(msg)
    kind = "a loopback host" if is_loopback(host) else "not a host of the vendor"
    msg = (
        f"{what} {url!r} points {token} at {host!r}, which is {kind}; "
        f"if this host is meant, the operator can allow it with "
        f"TC_ALLOWED_HOSTS={host} or in allowed_hosts of the state directory's "
        "settings.yaml (a job file cannot)"
    )
    raise HostNotAllowedError(msg)
