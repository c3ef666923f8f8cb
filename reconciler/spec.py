"""The job file format: its model, validation, discovery and JSON Schema.

A job file is ``jobs.d/NAME.yaml`` (or ``.yml``) and declares one job: the
OpenAI batches to watch and the Keboola configuration to run once they are all
terminal. The job is named by its file name.

Loading works in three steps, and every problem of a file is collected:

1. ``reconciler.yaml_loader`` reads the bytes and composes one YAML document
   into a node tree, so each scalar keeps its original text, style and place.
2. ``_NodeReader`` turns the tree into plain Python values, using the model's
   field types. It rejects unknown keys and any plain scalar that YAML would
   read as something other than the expected type, so nothing is silently
   converted (``12345`` is not a configuration id, ``yes`` is not ``true``).
3. The pydantic models check the values (secret references, URLs, batch ids,
   ranges). Their errors are translated into ``Problem`` objects that carry the
   line and column of the offending node.

No message contains the value of a secret field: a literal secret is replaced
by a placeholder before pydantic stores it as an error's input.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import stat
import types
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, PydanticCustomError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from reconciler.errors import JobFileError, Problem
from reconciler.yaml_loader import (
    MAX_FILE_BYTES,
    STR_TAG,
    ExplicitStrNode,
    compose_document,
    decode_job_bytes,
    find_duplicate_keys,
    line_and_column,
    read_plain_scalar,
    too_large_message,
)

JOB_FILE_SUFFIXES = (".yaml", ".yml")
STATUS_FILE_SUFFIX = ".status.yaml"
JOB_NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]*")
"""A job name, which is the job file's name without ``.yaml`` or ``.yml``."""

BATCH_ID_PATTERN = re.compile(r"batch_[A-Za-z0-9_-]+")
BATCH_ID_MAX_LENGTH = 255
DEFAULT_MAX_BATCH_IDS = 10
POLL_INTERVAL_MIN = 30
POLL_INTERVAL_MAX = 3600
MAX_PROBLEMS = 100
"""Most problems listed for one file; a file with more gets a note of the rest."""

SECRET_REF_PATTERN = re.compile(
    r"\A(?:secret:[A-Za-z0-9][A-Za-z0-9_.-]*|env:[A-Za-z_][A-Za-z0-9_]*|file:.+)\Z"
)
"""A secret reference: ``secret:NAME``, ``env:VAR`` or ``file:PATH``.

Use it with ``fullmatch`` or ``match``; it is anchored at both ends.
"""

_SECRET_REF_JSON_PATTERN = (
    "^(secret:[A-Za-z0-9][A-Za-z0-9_.-]*|env:[A-Za-z_][A-Za-z0-9_]*|file:.+)$"
)
# Keboola ids end up in API paths and queries, so they are restricted to the
# characters that Keboola's own component and configuration ids use.
_KEBOOLA_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_OPENAI_KEY_RE = re.compile(r"(?:\A|[^A-Za-z0-9])sk-")
_KEBOOLA_TOKEN_RE = re.compile(r"[0-9]+-[0-9]+-[A-Za-z0-9]+")
_SECRET_ADVICE = (
    "store it with `tc secret set NAME` and write secret:NAME, or use env:VAR "
    "or file:PATH"
)

Loc = tuple[str | int, ...]


class _SecretReference:
    """Marks a model field whose value is a secret reference, never echoed."""


class _Rejected:
    """A placeholder for a rejected value that must not appear in any error.

    Pydantic stores a field's input in its errors, so a literal secret or a
    URL with a password is swapped for this object before field validation.
    """

    __slots__ = ("error_type", "message")

    def __init__(self, error_type: str, message: str) -> None:
        self.error_type = error_type
        self.message = message

    def __repr__(self) -> str:
        return "<redacted>"


def _raise_if_rejected(value: object) -> object:
    if isinstance(value, _Rejected):
        raise PydanticCustomError(value.error_type, value.message)
    return value


SecretRef = Annotated[str, BeforeValidator(_raise_if_rejected), _SecretReference()]
_CheckedStr = Annotated[str, BeforeValidator(_raise_if_rejected)]


def _secret_problem(value: object, field: str) -> str | None:
    """Return why ``value`` is not a secret reference, without quoting it."""
    if isinstance(value, str) and SECRET_REF_PATTERN.fullmatch(value):
        return None
    if not isinstance(value, str):
        return (
            f"{field} must be a secret reference written as text: secret:NAME, "
            "env:VAR or file:PATH"
        )
    if value.startswith("secret:"):
        return (
            f"{field} is not a valid secret reference: the NAME in secret:NAME "
            "starts with a letter or digit and contains only letters, digits, "
            "'.', '_' and '-'"
        )
    if value.startswith("env:"):
        return (
            f"{field} is not a valid secret reference: the VAR in env:VAR is an "
            "environment variable name of letters, digits and '_' that does not "
            "start with a digit"
        )
    if value.startswith("file:"):
        return (
            f"{field} is not a valid secret reference: write the path of the "
            "file that contains the secret after file:"
        )
    if _OPENAI_KEY_RE.search(value):
        kind = " (it looks like an OpenAI API key)"
    elif _KEBOOLA_TOKEN_RE.fullmatch(value):
        kind = " (it looks like a Keboola Storage API token)"
    else:
        kind = ""
    return f"{field} holds a literal secret{kind}; {_SECRET_ADVICE}"


def _url_problem(value: str) -> str | None:
    """Return what makes ``value`` unfit as an API base URL, without quoting it."""
    if not value.isprintable() or any(ch.isspace() for ch in value):
        return "contains spaces or control characters"
    try:
        parts = urlsplit(value)
        _ = parts.port  # reading the port raises ValueError when it is invalid
    except ValueError:
        return "is not a valid URL (check the host and the port)"
    if parts.scheme not in ("http", "https"):
        if not parts.scheme:
            return "does not start with http:// or https://"
        return f"uses the scheme {parts.scheme!r}, not http or https"
    if parts.username is not None or parts.password is not None:
        return "contains a user name or password, which must not be in a URL"
    if not parts.hostname:
        return "has no host name"
    if parts.fragment or value.endswith("#"):
        return "contains a fragment (#...)"
    return None


def _redact_fields(
    data: Any, secret_fields: dict[str, str], url_fields: dict[str, str]
) -> Any:
    """Replace literal secrets and URLs with passwords by ``_Rejected`` objects.

    ``secret_fields`` and ``url_fields`` map a key of ``data`` to the dotted
    field name used in messages.
    """
    if isinstance(data, BaseModel):
        return data
    if not isinstance(data, dict):
        return _Rejected("model_type", "must be a mapping")
    result = dict(data)
    for key, field in secret_fields.items():
        if key in result:
            problem = _secret_problem(result[key], field)
            if problem is not None:
                result[key] = _Rejected("literal_secret", problem)
    for key, field in url_fields.items():
        value = result.get(key)
        if isinstance(value, str) and _url_problem(value) == _URL_USERINFO:
            result[key] = _Rejected(
                "url_with_credentials",
                f"{field} {_URL_USERINFO}; remove it, because the credentials "
                "belong in a secret reference",
            )
    return result


_URL_USERINFO = "contains a user name or password, which must not be in a URL"


def _check_url(value: str, field: str, example: str) -> str:
    problem = _url_problem(value)
    if problem is not None:
        raise PydanticCustomError(
            "invalid_url",
            f"{field} {problem}; write an http or https URL with a host, such as "
            f"{example}",
        )
    return value


def _check_keboola_id(value: str, field: str, example: str) -> str:
    if not _KEBOOLA_ID_PATTERN.fullmatch(value):
        raise PydanticCustomError(
            "invalid_keboola_id",
            f"{field} {_show(value)} is not a valid Keboola id; write an id of "
            f"letters, digits, '.', '_' and '-', such as {example}",
        )
    return value


_STRICT_FROZEN = ConfigDict(
    frozen=True, extra="forbid", strict=True, hide_input_in_errors=True
)


class OpenAIConfig(BaseModel):
    """The OpenAI endpoint and API key that the job's batches are polled with."""

    model_config = _STRICT_FROZEN

    api_key: SecretRef = Field(
        description="Reference to the OpenAI API key: secret:NAME, env:VAR or "
        "file:PATH. Never the key itself.",
        examples=["secret:openai-prod"],
        json_schema_extra={"pattern": _SECRET_REF_JSON_PATTERN},
    )
    base_url: _CheckedStr = Field(
        default="https://api.openai.com/v1",
        description="Base URL of the OpenAI API, with the /v1 path.",
        examples=["https://api.openai.com/v1"],
        json_schema_extra={"format": "uri", "pattern": "^https?://"},
    )

    @model_validator(mode="before")
    @classmethod
    def _redact(cls, data: Any) -> Any:
        return _redact_fields(
            data, {"api_key": "openai.api_key"}, {"base_url": "openai.base_url"}
        )

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        return _check_url(value, "openai.base_url", "https://api.openai.com/v1")


class KeboolaConfig(BaseModel):
    """The Keboola stack, token and configuration that the job triggers."""

    model_config = _STRICT_FROZEN

    stack_url: _CheckedStr = Field(
        description="URL of the Keboola stack (its Connection URL).",
        examples=["https://connection.eu-central-1.keboola.com"],
        json_schema_extra={"format": "uri", "pattern": "^https?://"},
    )
    queue_url: _CheckedStr | None = Field(
        default=None,
        description="URL of the Keboola Queue API; derived from stack_url when "
        "omitted.",
        examples=["https://queue.eu-central-1.keboola.com"],
        json_schema_extra={"format": "uri", "pattern": "^https?://"},
    )
    token: SecretRef = Field(
        description="Reference to the Keboola Storage API token: secret:NAME, "
        "env:VAR or file:PATH. Never the token itself.",
        examples=["secret:keboola-prod"],
        json_schema_extra={"pattern": _SECRET_REF_JSON_PATTERN},
    )
    component_id: str = Field(
        description="Id of the Keboola component to run.",
        examples=["kds-team.app-custom-python"],
        json_schema_extra={"pattern": "^[A-Za-z0-9][A-Za-z0-9._-]*$"},
    )
    configuration_id: str = Field(
        description="Id of the component's configuration to run. Write it in "
        'quotes when it is a number: "12345".',
        examples=["12345"],
        json_schema_extra={"pattern": "^[A-Za-z0-9][A-Za-z0-9._-]*$"},
    )

    @model_validator(mode="before")
    @classmethod
    def _redact(cls, data: Any) -> Any:
        return _redact_fields(
            data,
            {"token": "keboola.token"},
            {"stack_url": "keboola.stack_url", "queue_url": "keboola.queue_url"},
        )

    @field_validator("stack_url")
    @classmethod
    def _check_stack_url(cls, value: str) -> str:
        return _check_url(
            value, "keboola.stack_url", "https://connection.eu-central-1.keboola.com"
        )

    @field_validator("queue_url")
    @classmethod
    def _check_queue_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return _check_url(
            value, "keboola.queue_url", "https://queue.eu-central-1.keboola.com"
        )

    @field_validator("component_id")
    @classmethod
    def _check_component_id(cls, value: str) -> str:
        return _check_keboola_id(
            value, "keboola.component_id", "kds-team.app-custom-python"
        )

    @field_validator("configuration_id")
    @classmethod
    def _check_configuration_id(cls, value: str) -> str:
        return _check_keboola_id(value, "keboola.configuration_id", '"12345"')


class JobSpec(BaseModel):
    """One job file: the batches to watch and the Keboola job to trigger.

    Validate with ``JobSpec.model_validate(data, context={"max_batch_ids": N})``
    to allow more than ``DEFAULT_MAX_BATCH_IDS`` batch ids.
    """

    model_config = _STRICT_FROZEN

    version: Literal[1] = Field(
        default=1,
        description="Version of the job file format; 1 is the only one.",
        examples=[1],
    )
    name: str | None = Field(
        default=None,
        description="The job name. Optional; when given it must equal the file "
        "name without .yaml or .yml.",
        examples=["catalogue-embeddings"],
        json_schema_extra={"pattern": "^[a-z0-9][a-z0-9._-]*$"},
    )
    description: str | None = Field(
        default=None,
        description="Free text that says what the job is for.",
        examples=["Product catalogue embeddings, one batch per language"],
    )
    batch_ids: list[str] = Field(
        description="Ids of the OpenAI batches to watch. The Keboola job is "
        "triggered once all of them are terminal.",
        examples=[["batch_67a1c2d3e4f5a6b7c8d9e0f1"]],
        json_schema_extra={
            "items": {
                "type": "string",
                "pattern": "^batch_[A-Za-z0-9_-]+$",
                "maxLength": BATCH_ID_MAX_LENGTH,
            },
            "minItems": 1,
            "maxItems": DEFAULT_MAX_BATCH_IDS,
            "uniqueItems": True,
        },
    )
    openai: OpenAIConfig = Field(description="The OpenAI account of the batches.")
    keboola: KeboolaConfig = Field(description="The Keboola job to trigger.")
    poll_interval_seconds: int = Field(
        default=120,
        ge=POLL_INTERVAL_MIN,
        le=POLL_INTERVAL_MAX,
        description="Seconds between two polls of an unfinished batch.",
        examples=[120],
    )
    suspend: bool = Field(
        default=False,
        description="true pauses polling and triggering; false resumes.",
        examples=[False],
    )

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        advice = (
            "a job is named by its file name, so write the file name without "
            ".yaml, or remove the name key"
        )
        if value == "":
            raise PydanticCustomError("invalid_name", f"name is empty; {advice}")
        if any(unicodedata.category(ch) == "Cc" for ch in value):
            raise PydanticCustomError(
                "invalid_name", f"name contains a control character; {advice}"
            )
        if "/" in value or "\\" in value:
            raise PydanticCustomError(
                "invalid_name",
                f"name {_show(value)} contains a path separator ('/' or '\\'); "
                f"{advice}",
            )
        return value

    @field_validator("batch_ids")
    @classmethod
    def _check_batch_ids(cls, value: list[str], info: ValidationInfo) -> list[str]:
        limit = _max_batch_ids(info.context)
        issues = _batch_id_issues(value, limit)
        if issues:
            raise PydanticCustomError(
                "invalid_batch_ids",
                "; ".join(issue.message for issue in issues),
                {"batch_id_issues": issues},
            )
        return value


@dataclass(frozen=True)
class _BatchIdIssue:
    """A problem of ``batch_ids``; ``index`` is None for the list as a whole."""

    index: int | None
    message: str
    batch_id: str = ""
    first_index: int | None = None


def _max_batch_ids(context: Any) -> int:
    if isinstance(context, dict):
        limit = context.get("max_batch_ids", DEFAULT_MAX_BATCH_IDS)
        if isinstance(limit, int) and limit >= 1:
            return limit
    return DEFAULT_MAX_BATCH_IDS


def _batch_id_issues(batch_ids: Sequence[str], limit: int) -> list[_BatchIdIssue]:
    issues: list[_BatchIdIssue] = []
    if not batch_ids:
        issues.append(
            _BatchIdIssue(
                None,
                "batch_ids is empty; list at least one batch id, such as "
                "batch_67a1c2d3e4f5a6b7c8d9e0f1",
            )
        )
    elif len(batch_ids) > limit:
        issues.append(
            _BatchIdIssue(
                None,
                f"batch_ids lists {len(batch_ids)} batch ids, more than the maximum "
                f"of {limit}; split them over several job files, or raise the "
                "maximum with the setting TC_MAX_BATCH_IDS",
            )
        )
    first_seen: dict[str, int] = {}
    for index, batch_id in enumerate(batch_ids):
        if len(batch_id) > BATCH_ID_MAX_LENGTH:
            issues.append(
                _BatchIdIssue(
                    index,
                    f"batch id is {len(batch_id)} characters long, more than the "
                    f"maximum of {BATCH_ID_MAX_LENGTH}; check that it was copied "
                    "whole and alone",
                )
            )
        elif not BATCH_ID_PATTERN.fullmatch(batch_id):
            issues.append(
                _BatchIdIssue(
                    index,
                    f"{_show(batch_id)} is not an OpenAI batch id; a batch id is "
                    "batch_ followed by letters, digits, '_' or '-'",
                )
            )
        if batch_id in first_seen:
            first = first_seen[batch_id]
            issues.append(
                _BatchIdIssue(
                    index,
                    f"{_show(batch_id)} is listed more than once, as "
                    f"batch_ids[{first}] and again as batch_ids[{index}]; remove "
                    "the repeat",
                    batch_id=batch_id,
                    first_index=first,
                )
            )
        else:
            first_seen[batch_id] = index
    return issues


def _show(text: str, limit: int = 60) -> str:
    """Quote a value for a message: escaped, shortened, secrets redacted."""
    if _OPENAI_KEY_RE.search(text) or _KEBOOLA_TOKEN_RE.fullmatch(text):
        return "'<redacted>'"
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return repr(text)


# ----------------------------------------------------------------------------
# Job files


@dataclass(frozen=True)
class JobFile:
    """A job file as found on disk, valid or not.

    Attributes:
        name: the job name, which is the file name without .yaml or .yml.
        path: the file's path as found.
        revision: the first 12 hex digits of the SHA-256 of the file's bytes,
            or "" when the file could not be read.
        spec: the validated job, or None when the file has problems.
        error: every problem of the file, or None when it is valid.
    """

    name: str
    path: Path
    revision: str
    spec: JobSpec | None
    error: JobFileError | None


def job_name_for(path: Path) -> str:
    """Return the job name of a job file: its file name without .yaml or .yml."""
    filename = path.name
    for suffix in JOB_FILE_SUFFIXES:
        if filename.lower().endswith(suffix):
            return filename[: -len(suffix)]
    return filename


def status_path_for(job_file_path: Path) -> Path:
    """Return the status file path of a job file: ``NAME.status.yaml`` beside it."""
    return job_file_path.with_name(job_name_for(job_file_path) + STATUS_FILE_SUFFIX)


def is_job_file_name(filename: str) -> bool:
    """Tell whether a directory entry's name is that of a job file.

    Status files, hidden files and editor temporaries (``.swp``, ``~``,
    ``.#NAME``, ``#NAME#``) are not job files. The extension is matched in any
    case, so that ``Jobs.YAML`` is reported as badly named, not ignored.
    """
    if filename.startswith(".") or filename.endswith("~"):
        return False
    lower = filename.lower()
    if not lower.endswith(JOB_FILE_SUFFIXES):
        return False
    if lower.endswith((".status.yaml", ".status.yml")):
        return False
    return job_name_for(Path(filename)) != ""


def load_job_file(
    path: Path,
    *,
    max_batch_ids: int = DEFAULT_MAX_BATCH_IDS,
    known: Mapping[str, tuple[str, dict[str, Any]]] | None = None,
) -> JobFile:
    """Read and validate one job file.

    Problems with the file's name, place, bytes or content never raise: they
    are all returned in ``JobFile.error``, ordered by line, and ``spec`` is
    then None.

    Args:
        path: the job file.
        max_batch_ids: the maximum number of batch ids a job may list.
        known: job name to (revision, spec as JSON data) of files that were
            valid before. A file whose bytes still have that revision is not
            parsed again: parsing YAML is most of the cost of a quiet cycle.
    """
    name = job_name_for(path)
    problems = _file_name_problems(path, name)
    data, revision, read_problems = _read_job_bytes(path)
    problems += read_problems
    spec: JobSpec | None = None
    if data is not None and not problems:
        spec = _known_spec(known, name, revision, max_batch_ids)
    if data is not None and spec is None:
        spec, content_problems = _validate_content(path, name, data, max_batch_ids)
        problems += content_problems
    if problems:
        problems = _shorten(
            sorted(problems, key=lambda p: (p.line or 0, p.column or 0))
        )
        return JobFile(name, path, revision, None, JobFileError(path, problems))
    return JobFile(name, path, revision, spec, None)


def _known_spec(
    known: Mapping[str, tuple[str, dict[str, Any]]] | None,
    name: str,
    revision: str,
    max_batch_ids: int,
) -> JobSpec | None:
    """Return the spec stored for the same bytes, or None to parse the file."""
    if known is None or name not in known:
        return None
    stored_revision, data = known[name]
    if stored_revision != revision:
        return None
    try:
        return JobSpec.model_validate(data, context={"max_batch_ids": max_batch_ids})
    except ValidationError:
        # Settings changed (fewer batch ids allowed): the full parse reports it.
        return None


def _shorten(problems: list[Problem]) -> list[Problem]:
    """Keep the first ``MAX_PROBLEMS`` problems and count the rest in one more."""
    if len(problems) <= MAX_PROBLEMS:
        return problems
    hidden = len(problems) - MAX_PROBLEMS
    note = Problem(
        problems[0].path,
        f"{hidden:,} more problems are not listed; fix the ones above and "
        "validate again",
    )
    return [*problems[:MAX_PROBLEMS], note]


def discover(
    directory: Path,
    *,
    max_batch_ids: int = DEFAULT_MAX_BATCH_IDS,
    known: Mapping[str, tuple[str, dict[str, Any]]] | None = None,
) -> list[JobFile]:
    """Load every job file of a directory, sorted by job name.

    Files that are not job files by name are skipped (see ``is_job_file_name``).
    When ``NAME.yaml`` and ``NAME.yml`` both exist, each gets a problem that
    names the other.

    Raises:
        JobFileError: the directory is missing, not a directory or unreadable.
    """
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        raise _directory_error(
            directory,
            "job directory not found; create it, or pass the directory that "
            "contains the job files",
        ) from None
    except NotADirectoryError:
        raise _directory_error(
            directory,
            "is not a directory; pass the directory that contains the job files",
        ) from None
    except OSError as exc:
        raise _directory_error(
            directory,
            f"cannot read the job directory ({exc.strerror}); check its permissions",
        ) from None
    paths = sorted(
        directory / entry.name
        for entry in entries
        if is_job_file_name(entry.name) and not _is_directory(entry)
    )
    jobs = [
        load_job_file(path, max_batch_ids=max_batch_ids, known=known) for path in paths
    ]
    jobs = _mark_name_clashes(jobs)
    return sorted(jobs, key=lambda job: (job.name, job.path.name))


def _is_directory(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _directory_error(directory: Path, message: str) -> JobFileError:
    return JobFileError(directory, [Problem(directory, message)])


def _mark_name_clashes(jobs: list[JobFile]) -> list[JobFile]:
    by_name: dict[str, list[JobFile]] = {}
    for job in jobs:
        by_name.setdefault(job.name, []).append(job)
    result: list[JobFile] = []
    for job in jobs:
        others = [other for other in by_name[job.name] if other is not job]
        if not others:
            result.append(job)
            continue
        other_names = " and ".join(other.path.name for other in others)
        problem = Problem(
            job.path,
            f"{job.path.name} and {other_names} both define the job {job.name!r}; "
            "delete or rename one of them",
        )
        problems = [problem] + (job.error.problems if job.error else [])
        error = JobFileError(job.path, problems)
        result.append(replace(job, spec=None, error=error))
    return result


def _file_name_problems(path: Path, name: str) -> list[Problem]:
    problems: list[Problem] = []
    suffix = path.name[len(name) :]
    if not JOB_NAME_PATTERN.fullmatch(name):
        suggestion = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).lstrip("._-")
        rename = (
            f"; rename the file, for example to {suggestion}{suffix.lower()}"
            if suggestion
            else "; rename the file"
        )
        problems.append(
            Problem(
                path,
                f"file name {path.name!r} does not make a valid job name: a job "
                "name contains only lower-case letters, digits, '.', '_' and '-' "
                f"and starts with a letter or digit{rename}",
            )
        )
    elif suffix not in JOB_FILE_SUFFIXES:
        problems.append(
            Problem(
                path,
                f"file extension {suffix!r} is not lower case; rename the file to "
                f"{name}{suffix.lower()}",
            )
        )
    return problems


def _read_job_bytes(path: Path) -> tuple[bytes | None, str, list[Problem]]:
    """Read a job file's bytes, keeping at most ``MAX_FILE_BYTES``.

    Returns the bytes (None when they must not or cannot be used), the
    revision and the problems found. The revision hashes the whole file, also
    when it is too large to validate.
    """
    outside = _symlink_problem(path)
    if outside is not None:
        return None, "", [outside]
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            kind = "a directory" if stat.S_ISDIR(info.st_mode) else "a special file"
            message = f"is {kind}, not a job file; remove it or rename it"
            return None, "", [Problem(path, message)]
        digest = hashlib.sha256()
        head = bytearray()
        size = 0
        with path.open("rb") as stream:
            while chunk := stream.read(1024 * 1024):
                digest.update(chunk)
                size += len(chunk)
                if len(head) <= MAX_FILE_BYTES:
                    head += chunk[: MAX_FILE_BYTES + 1 - len(head)]
    except OSError as exc:
        message = (
            f"cannot read the file ({exc.strerror or exc}); check that it exists "
            "and is readable"
        )
        return None, "", [Problem(path, message)]
    revision = digest.hexdigest()[:12]
    if size > MAX_FILE_BYTES:
        return None, revision, [Problem(path, too_large_message(size))]
    return bytes(head), revision, []


def _symlink_problem(path: Path) -> Problem | None:
    if not path.is_symlink():
        return None
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return Problem(
            path,
            "is a symbolic link whose target does not exist; fix or remove the link",
        )
    directory = path.parent.resolve()
    if target.is_relative_to(directory):
        return None
    return Problem(
        path,
        f"is a symbolic link to {target}, outside the job directory {directory}; "
        "copy the file into the job directory instead of linking to it",
    )


def _validate_content(
    path: Path, name: str, data: bytes, max_batch_ids: int
) -> tuple[JobSpec | None, list[Problem]]:
    try:
        text = decode_job_bytes(data, path)
        root = compose_document(text, path)
    except JobFileError as exc:
        return None, list(exc.problems)
    problems = find_duplicate_keys(root, path)
    if not isinstance(root, MappingNode):
        message = (
            "the top level of a job file must be a mapping of keys such as "
            f"batch_ids, openai and keboola, not {_node_kind(root)}"
        )
        return None, [*problems, _problem_at(path, root, (), message)]
    reader = _NodeReader(path)
    values = reader.read_model(root, JobSpec, ())
    problems += reader.problems
    spec: JobSpec | None = None
    try:
        spec = JobSpec.model_validate(values, context={"max_batch_ids": max_batch_ids})
    except ValidationError as exc:
        problems += _translate_errors(exc, reader)
    given_name = values.get("name")
    if isinstance(given_name, str) and not any(p.field == "name" for p in problems):
        problems += _name_mismatch(name, reader, given_name)
    return (None if problems else spec), problems


def _name_mismatch(job_name: str, reader: _NodeReader, name: str) -> list[Problem]:
    if name == job_name:
        return []
    return [
        reader.problem(
            ("name",),
            f"name is {_show(name)} but the file name makes the job {job_name!r}; "
            f"a job is named by its file, so write name: {job_name} or remove the "
            "name key",
        )
    ]


# ----------------------------------------------------------------------------
# From YAML nodes to values


class _Absent:
    """The value of a field that could not be read; the key is left out."""


_ABSENT = _Absent()
_DECIMAL_RE = re.compile(r"-?(0|[1-9][0-9]{0,17})")


class _NodeReader:
    """Reads a composed job file into plain values, reporting type problems.

    It remembers the node of every field, so that pydantic errors can be
    placed, and the fields it has already reported, so that they are not
    reported again by pydantic.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.problems: list[Problem] = []
        self.reported: set[Loc] = set()
        self.value_nodes: dict[Loc, Node] = {}
        self.key_nodes: dict[Loc, Node] = {}

    def problem(self, loc: Loc, message: str, *, missing: bool = False) -> Problem:
        """Build a problem placed at the node of ``loc``.

        A missing field is placed at its parent's key, and a field without a
        node at its nearest ancestor's node.
        """
        node: Node | None = None
        if missing:
            node = self.key_nodes.get(loc[:-1])
        else:
            for end in range(len(loc), 0, -1):
                node = self.value_nodes.get(loc[:end]) or self.key_nodes.get(loc[:end])
                if node is not None:
                    break
        return _problem_at(self.path, node, loc, message)

    def is_reported(self, loc: Loc) -> bool:
        """Tell whether ``loc`` or one of its ancestors already has a problem."""
        return any(loc[: len(done)] == done for done in self.reported)

    def report(self, loc: Loc, message: str, node: Node) -> None:
        self.reported.add(loc)
        self.problems.append(_problem_at(self.path, node, loc, message))

    def read_model(
        self, node: MappingNode, model: type[BaseModel], loc: Loc
    ) -> dict[str, Any]:
        fields = model.model_fields
        values: dict[str, Any] = {}
        seen: set[str] = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                message = (
                    f"a key must be a plain name, not {_node_kind(key_node)}; "
                    f"the keys allowed {_where(loc)} are: {', '.join(fields)}"
                )
                self.problems.append(_problem_at(self.path, key_node, loc, message))
                continue
            key = key_node.value
            child = (*loc, key)
            if key in seen:  # find_duplicate_keys reports it; the first one counts
                continue
            seen.add(key)
            if key not in fields:
                self.report(child, _unknown_key_message(key, fields, loc), key_node)
                continue
            self.key_nodes[child] = key_node
            self.value_nodes[child] = value_node
            value = self.read_value(value_node, fields[key], child)
            if value is not _ABSENT:
                values[key] = value
        return values

    def read_value(self, node: Node, info: FieldInfo, loc: Loc) -> Any:
        kind = _field_kind(info.annotation)
        field = _format_loc(loc)
        if not isinstance(kind, str):
            if isinstance(node, MappingNode):
                return self.read_model(node, kind, loc)
            required = [k for k, f in kind.model_fields.items() if f.is_required()]
            found = "has no value" if _is_null(node) else f"is {_node_kind(node)}"
            self.report(
                loc,
                f"{field} {found}; it must be a mapping, with the keys "
                f"{', '.join(required)} indented under {loc[-1]}:",
                node,
            )
            return _ABSENT
        if kind == "list":
            return self.read_list(node, loc)
        if kind == "int":
            return self.read_int(node, loc, _example(info))
        if kind == "bool":
            return self.read_bool(node, loc)
        secret = any(isinstance(m, _SecretReference) for m in info.metadata)
        return self.read_text(node, loc, secret=secret, optional=not info.is_required())

    def read_list(self, node: Node, loc: Loc) -> Any:
        field = _format_loc(loc)
        if not isinstance(node, SequenceNode):
            found = "has no value" if _is_null(node) else f"is {_node_kind(node)}"
            self.report(
                loc,
                f"{field} {found}; it must be a list, with one batch id per line "
                "starting with '- ', also for a single batch",
                node,
            )
            return _ABSENT
        items: list[str] = []
        for index, item in enumerate(node.value):
            child = (*loc, index)
            self.value_nodes[child] = item
            value = self.read_text(item, child, secret=False, optional=False)
            items.append(value if isinstance(value, str) else "")
        return items

    def read_text(self, node: Node, loc: Loc, *, secret: bool, optional: bool) -> Any:
        field = _format_loc(loc)
        if not isinstance(node, ScalarNode):
            self.report(
                loc, f"{field} must be a single value, not {_node_kind(node)}", node
            )
            return _ABSENT
        reading = read_plain_scalar(node)
        if reading is None:
            return node.value
        if reading.kind == "null":
            self.report(loc, _no_value_message(node, optional, secret), node)
            return _ABSENT
        if secret:
            return node.value  # the model rejects it as a literal secret, unquoted
        type_words = reading.detail or {
            "boolean": "a boolean",
            "number": "a number",
            "date": "a date",
        }.get(reading.kind, reading.kind)
        text = node.value
        self.report(
            loc,
            f"{text} is read by YAML as {type_words}; write it in quotes: "
            f"{_double_quoted(text)}",
            node,
        )
        return text

    def read_int(self, node: Node, loc: Loc, example: str) -> Any:
        field = _format_loc(loc)
        if not isinstance(node, ScalarNode):
            message = (
                f"{field} must be a whole number such as {example}, "
                f"not {_node_kind(node)}"
            )
            self.report(loc, message, node)
            return _ABSENT
        text = node.value
        plain = node.style is None and not isinstance(node, ExplicitStrNode)
        if plain and _DECIMAL_RE.fullmatch(text):
            return int(text)
        if plain and read_plain_scalar(node) == _NULL:
            message = _no_value_message(node, optional=True, secret=False)
        elif plain and re.fullmatch(r"[-+]?0[0-9_]+", text):
            message = (
                f"{text} starts with 0, which YAML 1.1 reads as an octal number; "
                "write it without the leading zeros"
            )
        elif plain and re.fullmatch(r"-?[0-9]{19,}", text):
            message = f"{field} is far too large; write a number such as {example}"
        elif not plain and re.fullmatch(r"-?[0-9]+", text.strip()):
            message = (
                f"{_show(text)} is quoted, so YAML reads it as text; remove the "
                f"quotes: {text.strip()}"
            )
        else:
            message = (
                f"{_show(text)} is not a whole number; write {field} in decimal "
                f"digits, such as {example}"
            )
        self.report(loc, message, node)
        return _ABSENT

    def read_bool(self, node: Node, loc: Loc) -> Any:
        field = _format_loc(loc)
        if not isinstance(node, ScalarNode):
            message = f"{field} must be true or false, not {_node_kind(node)}"
            self.report(loc, message, node)
            return _ABSENT
        text = node.value
        reading = read_plain_scalar(node)
        if reading is not None and text in ("true", "false"):
            return text == "true"
        if reading == _NULL:
            message = _no_value_message(node, optional=True, secret=False)
        elif reading is not None and text.lower() in ("true", "false"):
            message = f"{text} is not accepted; write {text.lower()} in lower case"
        elif reading is not None and reading.kind == "boolean":
            message = (
                f"{text} is a boolean in YAML 1.1 but text in YAML 1.2; write true "
                "or false"
            )
        elif reading is None and text.strip().lower() in ("true", "false"):
            message = (
                f"{_show(text)} is quoted, so YAML reads it as text; write true or "
                "false without quotes"
            )
        else:
            message = f"{_show(text)} is not a boolean; write true or false"
        self.report(loc, message, node)
        return _ABSENT


def _field_kind(annotation: Any) -> str | type[BaseModel]:
    """Return how a field's YAML node is read: a model, or text, int, bool, list."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _field_kind(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        options = [a for a in get_args(annotation) if a is not type(None)]
        return _field_kind(options[0])
    if origin is Literal:
        return _field_kind(type(get_args(annotation)[0]))
    if origin is list:
        return "list"
    if annotation is bool:
        return "bool"
    if annotation is int:
        return "int"
    if annotation is str:
        return "text"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    raise TypeError(f"no YAML reading is defined for the field type {annotation!r}")


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and read_plain_scalar(node) == _NULL


def _no_value_message(node: ScalarNode, optional: bool, secret: bool) -> str:
    if secret:
        fix = "write a secret reference: secret:NAME, env:VAR or file:PATH"
    else:
        fix = "write a value"
    if optional:
        fix += ", or remove the key to use the default"
    if node.value == "":
        return f"no value is given; {fix}"
    return f"{node.value} is read by YAML as null, meaning no value; {fix}"


def _double_quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _example(info: FieldInfo) -> str:
    if not info.examples:
        return "..."
    return _yaml_example(info.examples[0])


def _yaml_example(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_yaml_example(item) for item in value) + "]"
    text = str(value)
    if isinstance(value, str) and read_plain_scalar(ScalarNode(STR_TAG, text)):
        return _double_quoted(text)
    return text


def _node_kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return "a single value"


def _where(loc: Loc) -> str:
    return f"under {_format_loc(loc)}" if loc else "at the top level"


def _unknown_key_message(key: str, allowed: Iterable[str], loc: Loc) -> str:
    allowed = list(allowed)
    close = difflib.get_close_matches(key.lower(), allowed, n=1, cutoff=0.6)
    fix = f"did you mean {close[0]}?" if close else "remove it or fix its spelling."
    return (
        f"unknown key {_show(key)}; {fix} The keys allowed {_where(loc)} are: "
        f"{', '.join(allowed)}"
    )


def _format_loc(loc: Loc) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


def _problem_at(path: Path, node: Node | None, loc: Loc, message: str) -> Problem:
    line, column = line_and_column(node.start_mark if node is not None else None)
    return Problem(path, message, _format_loc(loc) or None, line, column)


# ----------------------------------------------------------------------------
# From pydantic errors to problems

# Custom errors whose message is already written for people.
_OWN_ERROR_TYPES = frozenset(
    {
        "literal_secret",
        "url_with_credentials",
        "invalid_url",
        "invalid_keboola_id",
        "invalid_name",
    }
)
_TYPE_WORDS = {
    "string_type": "text",
    "int_type": "a whole number",
    "bool_type": "true or false",
    "list_type": "a list",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "dict_type": "a mapping",
}


def _translate_errors(exc: ValidationError, reader: _NodeReader) -> list[Problem]:
    problems: list[Problem] = []
    for error in exc.errors():
        loc: Loc = tuple(error["loc"])
        if error["type"] == "invalid_batch_ids":
            problems += _batch_id_problems(error, loc, reader)
        elif not reader.is_reported(loc):
            missing = error["type"] == "missing"
            message = _error_message(error, loc)
            problems.append(reader.problem(loc, message, missing=missing))
    return problems


def _batch_id_problems(
    error: ErrorDetails, loc: Loc, reader: _NodeReader
) -> list[Problem]:
    problems: list[Problem] = []
    issues: list[_BatchIdIssue] = error.get("ctx", {}).get("batch_id_issues", [])
    for issue in issues:
        issue_loc = loc if issue.index is None else (*loc, issue.index)
        if reader.is_reported(issue_loc):
            continue
        message = issue.message
        if issue.first_index is not None and issue.index is not None:
            first = reader.problem((*loc, issue.first_index), "").line
            second = reader.problem(issue_loc, "").line
            message = (
                f"{_show(issue.batch_id)} is listed more than once, as "
                f"batch_ids[{issue.first_index}] on line {first} and again as "
                f"batch_ids[{issue.index}] on line {second}; remove the repeat"
            )
        problems.append(reader.problem(issue_loc, message))
    return problems


def _error_message(error: ErrorDetails, loc: Loc) -> str:
    """Turn a pydantic error into a sentence that names the problem and the fix."""
    field = _format_loc(loc)
    error_type = error["type"]
    if error_type in _OWN_ERROR_TYPES:
        return error["msg"]
    if error_type == "missing":
        return _missing_message(loc)
    if error_type == "extra_forbidden":
        parent = _model_at(loc[:-1])
        allowed = parent.model_fields if parent is not None else []
        return _unknown_key_message(str(loc[-1]), allowed, loc[:-1])
    if error_type == "literal_error" and loc == ("version",):
        return (
            "version must be 1, the only version of the job file format so far; "
            "write version: 1 or remove the key"
        )
    if error_type in ("greater_than_equal", "less_than_equal"):
        bound = (
            "below the minimum"
            if error_type == "greater_than_equal"
            else ("above the maximum")
        )
        limit = next(iter(error.get("ctx", {}).values()), "")
        return (
            f"{field} is {error['input']}, {bound} of {limit}; write a value from "
            f"{POLL_INTERVAL_MIN} to {POLL_INTERVAL_MAX}"
        )
    if error_type in _TYPE_WORDS:
        return f"{field} must be {_TYPE_WORDS[error_type]}"
    return f"{field} is invalid: {error['msg']}"


def _model_at(loc: Loc) -> type[BaseModel] | None:
    model: type[BaseModel] = JobSpec
    for part in loc:
        info = model.model_fields.get(str(part))
        kind = _field_kind(info.annotation) if info is not None else None
        if not isinstance(kind, type):
            return None
        model = kind
    return model


def _missing_message(loc: Loc) -> str:
    field = _format_loc(loc)
    parent = _model_at(loc[:-1])
    info = parent.model_fields.get(str(loc[-1])) if parent is not None else None
    if info is None:
        return f"{field} is missing; add it"
    kind = _field_kind(info.annotation)
    if not isinstance(kind, str):
        required = [k for k, f in kind.model_fields.items() if f.is_required()]
        return (
            f"{field} is missing; add {loc[-1]}: with the keys "
            f"{', '.join(required)} indented under it"
        )
    where = f" under {_format_loc(loc[:-1])}" if len(loc) > 1 else ""
    return f"{field} is missing; add it{where}, for example {loc[-1]}: {_example(info)}"


# ----------------------------------------------------------------------------
# JSON Schema


def job_schema(*, max_batch_ids: int = DEFAULT_MAX_BATCH_IDS) -> dict[str, Any]:
    """Return the JSON Schema (draft 2020-12) of a job file, with descriptions.

    ``max_batch_ids`` sets ``maxItems`` of ``batch_ids``; pass the operator's
    ``TC_MAX_BATCH_IDS`` when it differs from the default.
    """
    generated = JobSpec.model_json_schema()
    _simplify(generated)
    generated["properties"]["batch_ids"]["maxItems"] = max_batch_ids
    generated.pop("title", None)
    generated.pop("description", None)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "TeckoChecker job file",
        "description": (
            "One job: the OpenAI batches to watch and the Keboola configuration "
            "to run once all of them are terminal. The job is named by the file "
            "name, NAME.yaml or NAME.yml."
        ),
        **generated,
    }


def _simplify(schema: Any) -> None:
    """Drop pydantic's generated titles and the null option of optional fields.

    A job file cannot write null (the loader rejects it), so an optional field
    is one that may be left out, and its schema is that of the value alone.
    """
    if isinstance(schema, list):
        for item in schema:
            _simplify(item)
        return
    if not isinstance(schema, dict):
        return
    for key in ("properties", "$defs"):
        for child in schema.get(key, {}).values():
            if isinstance(child, dict):
                child.pop("title", None)
    options = schema.get("anyOf")
    if isinstance(options, list) and {"type": "null"} in options:
        rest = [option for option in options if option != {"type": "null"}]
        if len(rest) == 1:
            del schema["anyOf"]
            schema.update(rest[0])
            if schema.get("default", 0) is None:
                del schema["default"]
    for value in schema.values():
        _simplify(value)


_NULL = read_plain_scalar(ScalarNode(STR_TAG, ""))
