"""The declared jobs: job files found, validated and checked against settings.

The spec module validates a file on its own. This module adds what depends
on the operator's settings: whether each token may be sent to the hosts the
file names. A job that would send a token elsewhere is invalid.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from reconciler.errors import HostNotAllowedError, JobFileError, Problem
from reconciler.hosts import check_keboola_host, check_openai_host, queue_url_for
from reconciler.settings import Settings
from reconciler.spec import JobFile, JobSpec, discover, load_job_file


@dataclass(frozen=True)
class Endpoints:
    """The base URLs a job's requests go to, checked against the allowed hosts."""

    openai_base_url: str
    queue_url: str


def endpoints_for(spec: JobSpec, settings: Settings) -> Endpoints:
    """Choose and check the base URLs of a job's requests.

    Raises:
        HostNotAllowedError: a token would go to a host that is not allowed.
    """
    openai_url = spec.openai.base_url.rstrip("/")
    check_openai_host(openai_url, settings.allowed_hosts)
    queue_url = queue_url_for(spec.keboola.stack_url, spec.keboola.queue_url)
    check_keboola_host(queue_url, settings.allowed_hosts)
    return Endpoints(openai_url, queue_url)


def check_settings(job_file: JobFile, settings: Settings) -> JobFile:
    """Return the job file, marked invalid if its hosts are not allowed."""
    if job_file.spec is None:
        return job_file
    try:
        endpoints_for(job_file.spec, settings)
    except HostNotAllowedError as error:
        problem = Problem(job_file.path, str(error), field=None)
        return replace(
            job_file, spec=None, error=JobFileError(job_file.path, [problem])
        )
    return job_file


def load_directory(
    directory: Path,
    settings: Settings,
    known: Mapping[str, tuple[str, dict[str, Any]]] | None = None,
) -> list[JobFile]:
    """Discover, validate and check every job file of a directory, by name.

    ``known`` maps job names to the revision and spec of their last valid
    file; a file with the same bytes is not parsed again.
    """
    found = discover(directory, max_batch_ids=settings.max_batch_ids, known=known)
    return [check_settings(f, settings) for f in found]


def load_paths(paths: Iterable[Path], settings: Settings) -> list[JobFile]:
    """Validate the given job files and the job files of the given directories.

    Raises:
        JobFileError: a path does not exist.
    """
    result: list[JobFile] = []
    for path in paths:
        if path.is_dir():
            result.extend(load_directory(path, settings))
        elif path.exists():
            loaded = load_job_file(path, max_batch_ids=settings.max_batch_ids)
            result.append(check_settings(loaded, settings))
        else:
            problem = Problem(path, "no such file or directory; check the path")
            raise JobFileError(path, [problem])
    return result
