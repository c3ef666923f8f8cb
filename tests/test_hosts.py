"""Where tokens may be sent, and how the queue URL is derived."""

from __future__ import annotations

import pytest

from reconciler.errors import HostNotAllowedError
from reconciler.hosts import (
    check_keboola_host,
    check_openai_host,
    is_loopback,
    queue_url_for,
)

NONE: frozenset[str] = frozenset()


@pytest.mark.parametrize(
    "url",
    [
        "https://api.openai.com/v1",
        "https://my-resource.openai.azure.com/openai/v1",
        "https://west.cognitiveservices.azure.com/openai",
    ],
)
def test_openai_vendor_hosts_allowed(url: str) -> None:
    check_openai_host(url, NONE)


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example.com/v1",
        "https://api.openai.com.evil.example/v1",
        "http://127.0.0.1:8080/v1",
        "http://169.254.169.254/latest",
    ],
)
def test_openai_other_hosts_rejected(url: str) -> None:
    with pytest.raises(HostNotAllowedError) as caught:
        check_openai_host(url, NONE)
    assert "TC_ALLOWED_HOSTS=" in str(caught.value)


def test_openai_plain_http_rejected() -> None:
    with pytest.raises(HostNotAllowedError, match="must use https"):
        check_openai_host("http://api.openai.com/v1", NONE)


def test_allowed_hosts_admit_loopback() -> None:
    check_openai_host("http://127.0.0.1:18080/v1", frozenset({"127.0.0.1"}))
    check_keboola_host("http://127.0.0.1:18080", frozenset({"127.0.0.1"}))


@pytest.mark.parametrize(
    "url",
    [
        "https://queue.keboola.com",
        "https://queue.eu-central-1.keboola.com",
        "https://queue.acme.keboola.cloud",
    ],
)
def test_keboola_queue_hosts_allowed(url: str) -> None:
    check_keboola_host(url, NONE)


@pytest.mark.parametrize(
    "url",
    [
        "https://connection.keboola.com",
        "https://queue.keboola.com.evil.example",
        "https://keboola.com",
    ],
)
def test_keboola_other_hosts_rejected(url: str) -> None:
    with pytest.raises(HostNotAllowedError):
        check_keboola_host(url, NONE)


def test_queue_url_derived_from_stack() -> None:
    url = queue_url_for("https://connection.eu-central-1.keboola.com/", None)
    assert url == "https://queue.eu-central-1.keboola.com"


def test_queue_url_explicit_wins() -> None:
    assert (
        queue_url_for("https://connection.keboola.com", "https://q.example/")
        == "https://q.example"
    )


def test_queue_url_underivable_names_setting() -> None:
    with pytest.raises(HostNotAllowedError, match="keboola.queue_url"):
        queue_url_for("https://stack.example.com", None)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("localhost", True),
        ("127.0.0.5", True),
        ("::1", True),
        ("10.0.0.1", False),
        ("example.com", False),
    ],
)
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected
