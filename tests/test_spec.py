"""Tests of the job file format: validation, discovery and JSON Schema."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from reconciler.errors import JobFileError, Problem
from reconciler.spec import (
    SECRET_REF_PATTERN,
    JobFile,
    JobSpec,
    KeboolaConfig,
    OpenAIConfig,
    discover,
    is_job_file_name,
    job_name_for,
    job_schema,
    load_job_file,
    status_path_for,
)

VALID = """\
version: 1
description: Product catalogue embeddings, one batch per language
batch_ids:
  - batch_67a1c2d3e4f5a6b7c8d9e0f1
  - batch_67a1c2d3e4f5a6b7c8d9e0f2
openai:
  api_key: secret:openai-prod
keboola:
  stack_url: https://connection.eu-central-1.keboola.com
  token: env:KEBOOLA_TOKEN
  component_id: kds-team.app-custom-python
  configuration_id: "12345"
poll_interval_seconds: 120
"""

FIELDS = [
    "version",
    "name",
    "description",
    "batch_ids",
    "openai",
    "keboola",
    "poll_interval_seconds",
    "suspend",
]


def write(directory: Path, text: str | bytes, filename: str = "job.yaml") -> Path:
    path = directory / filename
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def load(directory: Path, text: str | bytes, filename: str = "job.yaml") -> JobFile:
    return load_job_file(write(directory, text, filename))


def problems_of(job: JobFile) -> list[Problem]:
    assert job.spec is None
    assert job.error is not None
    return job.error.problems


def one_problem(
    directory: Path, text: str | bytes, filename: str = "job.yaml"
) -> Problem:
    problems = problems_of(load(directory, text, filename))
    assert len(problems) == 1, problems
    return problems[0]


def with_line(old: str, new: str) -> str:
    assert old in VALID
    return VALID.replace(old, new)


# A valid file


def test_valid_file_loads(tmp_path: Path) -> None:
    job = load(tmp_path, VALID, "catalogue.yaml")
    assert job.error is None
    assert job.spec is not None
    assert job.name == "catalogue"
    assert job.spec.batch_ids == [
        "batch_67a1c2d3e4f5a6b7c8d9e0f1",
        "batch_67a1c2d3e4f5a6b7c8d9e0f2",
    ]
    assert job.spec.keboola.configuration_id == "12345"
    assert job.spec.openai.api_key == "secret:openai-prod"


def test_valid_file_defaults(tmp_path: Path) -> None:
    spec = load(tmp_path, VALID).spec
    assert spec is not None
    assert spec.openai.base_url == "https://api.openai.com/v1"
    assert spec.keboola.queue_url is None
    assert spec.suspend is False
    assert spec.name is None


def test_revision_hashes_bytes(tmp_path: Path) -> None:
    job = load(tmp_path, VALID)
    assert job.revision == hashlib.sha256(VALID.encode()).hexdigest()[:12]


def test_full_example_validates(tmp_path: Path) -> None:
    text = (
        "name: catalogue-embeddings\n"
        + VALID.replace(
            "  token: env:KEBOOLA_TOKEN\n",
            "  queue_url: https://queue.eu-central-1.keboola.com\n"
            "  token: secret:keboola-prod\n",
        )
        + "suspend: true\n"
    )
    job = load(tmp_path, text, "catalogue-embeddings.yaml")
    assert job.error is None
    assert job.spec is not None
    assert job.spec.suspend is True
    assert job.spec.keboola.queue_url == "https://queue.eu-central-1.keboola.com"


def test_bom_and_crlf_load(tmp_path: Path) -> None:
    data = b"\xef\xbb\xbf" + VALID.replace("\n", "\r\n").encode()
    job = load(tmp_path, data)
    assert job.error is None
    assert job.spec is not None


def test_explicit_str_tag_accepted(tmp_path: Path) -> None:
    job = load(tmp_path, with_line('"12345"', "!!str 12345"))
    assert job.spec is not None
    assert job.spec.keboola.configuration_id == "12345"


# Bytes and YAML syntax


def test_empty_file_rejected(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, b"")
    assert problem.message == (
        "file is empty; a job file needs batch_ids, openai and keboola"
    )


def test_large_file_rejected(tmp_path: Path) -> None:
    job = load(tmp_path, b"# padding\n" * 524_288)
    problem = problems_of(job)[0]
    assert "5,242,880 bytes" in problem.message
    assert "limit of 1,048,576 bytes" in problem.message
    assert job.revision != ""


def test_non_utf8_rejected(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, VALID.encode() + b"# caf\xe9\n")
    assert "not valid UTF-8" in problem.message
    assert "save the file as UTF-8" in problem.message
    assert problem.line == 14


def test_binary_garbage_rejected(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, bytes(range(256)) * 4)
    assert "NUL byte at byte offset 0" in problem.message


def test_tab_indent_rejected(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, with_line("  api_key:", "\tapi_key:"))
    assert problem.message == "tab characters cannot indent YAML; use spaces"
    assert problem.line == 7


def test_two_documents_rejected(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, VALID + "---\n" + VALID)
    assert "more than one YAML document" in problem.message
    assert problem.line == 14


def test_alias_rejected(tmp_path: Path) -> None:
    text = with_line("  token: env:KEBOOLA_TOKEN", "  token: &t env:KEBOOLA_TOKEN")
    problem = one_problem(tmp_path, text)
    assert "aliases" in problem.message
    assert problem.line == 10


def test_alias_bomb_rejected_fast(tmp_path: Path) -> None:
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x","x"]']
    for level in "bcdefghijk":
        previous = chr(ord(level) - 1)
        lines.append(f"{level}: &{level} [" + ",".join([f"*{previous}"] * 10) + "]")
    started = time.monotonic()
    problem = one_problem(tmp_path, "\n".join(lines))
    assert time.monotonic() - started < 1.0
    assert problem.message.startswith("YAML anchors and aliases")


def test_deep_nesting_rejected(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, "batch_ids: " + "[" * 10_000 + "]" * 10_000)
    assert "nested more than 50 levels" in problem.message


def test_top_level_list_rejected(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, "- batch_x\n")
    assert problem.message == (
        "the top level of a job file must be a mapping of keys such as "
        "batch_ids, openai and keboola, not a list"
    )
    assert problem.line == 1


def test_duplicate_key_rejected(tmp_path: Path) -> None:
    text = with_line("  component_id:", "  token: env:OTHER\n  component_id:")
    problem = one_problem(tmp_path, text)
    assert problem.message == (
        "key 'token' appears twice, on line 10 and on line 11; keep only one of them"
    )
    assert problem.field == "keboola.token"
    assert problem.line == 11


# Strings that YAML would read as something else


@pytest.mark.parametrize(
    ("text", "reading"),
    [
        ("12345", "a number"),
        ("012345", "a number"),
        ("0x1F", "a number"),
        ("0o17", "a number"),
        ("1_000", "a number"),
        ("1:20", "the base-60 number 80"),
        ("1.5", "a number"),
        ("1e3", "a number"),
        (".inf", "a number"),
        (".nan", "a number"),
        ("yes", "a boolean"),
        ("No", "a boolean"),
        ("ON", "a boolean"),
        ("off", "a boolean"),
        ("True", "a boolean"),
        ("y", "a boolean"),
        ("N", "a boolean"),
        ("2024-01-01", "a date"),
    ],
)
def test_plain_configuration_id_rejected(
    tmp_path: Path, text: str, reading: str
) -> None:
    problem = one_problem(tmp_path, with_line('"12345"', text))
    assert problem.message == (
        f'{text} is read by YAML as {reading}; write it in quotes: "{text}"'
    )
    assert problem.field == "keboola.configuration_id"
    assert problem.line == 12
    assert problem.column == 21


@pytest.mark.parametrize("text", ["~", "null"])
def test_null_configuration_id_rejected(tmp_path: Path, text: str) -> None:
    problem = one_problem(tmp_path, with_line('"12345"', text))
    assert problem.message == (
        f"{text} is read by YAML as null, meaning no value; write a value"
    )
    assert problem.field == "keboola.configuration_id"


def test_empty_configuration_id_rejected(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, with_line(' "12345"', ""))
    assert problem.message == "no value is given; write a value"
    assert problem.line == 12


def test_numeric_batch_id_rejected(tmp_path: Path) -> None:
    text = with_line("  - batch_67a1c2d3e4f5a6b7c8d9e0f2", "  - 12345")
    problem = one_problem(tmp_path, text)
    assert problem.message == (
        '12345 is read by YAML as a number; write it in quotes: "12345"'
    )
    assert problem.field == "batch_ids[1]"
    assert problem.line == 5


def test_boolean_description_rejected(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, with_line("Product catalogue", "yes\n#"))
    assert problem.message.startswith("yes is read by YAML as a boolean; write it")
    assert problem.field == "description"


def test_empty_optional_url_rejected(tmp_path: Path) -> None:
    text = with_line("  token:", "  queue_url:\n  token:")
    problem = one_problem(tmp_path, text)
    assert problem.message == (
        "no value is given; write a value, or remove the key to use the default"
    )
    assert problem.field == "keboola.queue_url"


def test_list_for_text_rejected(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, with_line('"12345"', '["1", "2"]'))
    assert problem.message == (
        "keboola.configuration_id must be a single value, not a list"
    )


# Booleans and integers


@pytest.mark.parametrize("text", ["yes", "no", "on", "off", "y", "N"])
def test_suspend_yaml11_boolean_rejected(tmp_path: Path, text: str) -> None:
    problem = one_problem(tmp_path, VALID + f"suspend: {text}\n")
    assert problem.message == (
        f"{text} is a boolean in YAML 1.1 but text in YAML 1.2; write true or false"
    )
    assert problem.field == "suspend"
    assert problem.line == 14


def test_suspend_capitalised_rejected(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, VALID + "suspend: True\n")
    assert problem.message == "True is not accepted; write true in lower case"


def test_suspend_quoted_rejected(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, VALID + 'suspend: "false"\n')
    assert problem.message == (
        "'false' is quoted, so YAML reads it as text; write true or false "
        "without quotes"
    )


def test_poll_interval_quoted_rejected(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, with_line("seconds: 120", 'seconds: "120"'))
    assert problem.message == (
        "'120' is quoted, so YAML reads it as text; remove the quotes: 120"
    )
    assert problem.field == "poll_interval_seconds"
    assert problem.line == 13


def test_poll_interval_float_rejected(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, with_line("seconds: 120", "seconds: 1.5"))
    assert problem.message == (
        "'1.5' is not a whole number; write poll_interval_seconds in decimal "
        "digits, such as 120"
    )


def test_poll_interval_octal_rejected(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, with_line("seconds: 120", "seconds: 0120"))
    assert problem.message == (
        "0120 starts with 0, which YAML 1.1 reads as an octal number; write it "
        "without the leading zeros"
    )


@pytest.mark.parametrize(
    ("value", "words"),
    [("29", "below the minimum of 30"), ("3601", "above the maximum of 3600")],
)
def test_poll_interval_range(tmp_path: Path, value: str, words: str) -> None:
    problem = one_problem(tmp_path, with_line("seconds: 120", f"seconds: {value}"))
    assert problem.message == (
        f"poll_interval_seconds is {value}, {words}; write a value from 30 to 3600"
    )
    assert problem.line == 13


def test_poll_interval_bounds_accepted(tmp_path: Path) -> None:
    for value in (30, 3600):
        job = load(tmp_path, with_line("seconds: 120", f"seconds: {value}"))
        assert job.spec is not None
        assert job.spec.poll_interval_seconds == value


def test_version_two_rejected(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, with_line("version: 1", "version: 2"))
    assert problem.message.startswith("version must be 1")
    assert problem.field == "version"
    assert problem.line == 1


def test_version_quoted_rejected(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, with_line("version: 1", 'version: "1"'))
    assert problem.message == (
        "'1' is quoted, so YAML reads it as text; remove the quotes: 1"
    )


# Unknown and missing keys


def test_unknown_key_suggests_close(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, VALID + "suspnd: true\n")
    assert problem.message == (
        "unknown key 'suspnd'; did you mean suspend? The keys allowed at the top "
        "level are: " + ", ".join(FIELDS)
    )
    assert problem.field == "suspnd"
    assert problem.line == 14


def test_unknown_nested_key_rejected(tmp_path: Path) -> None:
    text = with_line("  api_key: secret:openai-prod", "  api_key: secret:x\n  org: y")
    problem = one_problem(tmp_path, text)
    assert problem.message == (
        "unknown key 'org'; remove it or fix its spelling. The keys allowed under "
        "openai are: api_key, base_url"
    )
    assert problem.field == "openai.org"
    assert problem.line == 8


def test_missing_nested_key_placed(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, with_line("  token: env:KEBOOLA_TOKEN\n", ""))
    assert problem.message == (
        "keboola.token is missing; add it under keboola, for example "
        "token: secret:keboola-prod"
    )
    assert problem.field == "keboola.token"
    assert problem.line == 8


def test_missing_section_rejected(tmp_path: Path) -> None:
    text = with_line("openai:\n  api_key: secret:openai-prod\n", "")
    problem = one_problem(tmp_path, text)
    assert problem.message == (
        "openai is missing; add openai: with the keys api_key indented under it"
    )
    assert problem.line is None


def test_section_without_value_rejected(tmp_path: Path) -> None:
    text = with_line("openai:\n  api_key: secret:openai-prod\n", "openai:\n")
    problem = one_problem(tmp_path, text)
    assert problem.message == (
        "openai has no value; it must be a mapping, with the keys api_key "
        "indented under openai:"
    )


# Names


def test_matching_name_accepted(tmp_path: Path) -> None:
    job = load(tmp_path, "name: catalogue\n" + VALID, "catalogue.yml")
    assert job.spec is not None
    assert job.spec.name == "catalogue"


def test_name_mismatch_rejected(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, "name: other\n" + VALID, "catalogue.yaml")
    assert problem.message == (
        "name is 'other' but the file name makes the job 'catalogue'; a job is "
        "named by its file, so write name: catalogue or remove the name key"
    )
    assert problem.field == "name"
    assert problem.line == 1


def test_name_path_rejected(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, "name: ../x\n" + VALID, "x.yaml")
    assert "contains a path separator" in problem.message
    assert problem.field == "name"


def test_name_control_character_rejected(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, 'name: "x\\u0008"\n' + VALID, "x.yaml")
    assert problem.message.startswith("name contains a control character")
    assert problem.field == "name"


@pytest.mark.parametrize(
    ("filename", "suggestion"),
    [
        ("Catalogue Embeddings.yaml", "catalogue-embeddings.yaml"),
        ("_private.yml", "private.yml"),
        ("Jobs.YAML", "jobs.yaml"),
    ],
)
def test_bad_file_name_rejected(tmp_path: Path, filename: str, suggestion: str) -> None:
    problem = one_problem(tmp_path, VALID, filename)
    assert "does not make a valid job name" in problem.message
    assert problem.message.endswith(f"rename the file, for example to {suggestion}")


def test_upper_case_extension_rejected(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, VALID, "jobs.Yml")
    assert problem.message == (
        "file extension '.Yml' is not lower case; rename the file to jobs.yml"
    )


# Secrets


OPENAI_KIND = " (it looks like an OpenAI API key)"
KEBOOLA_KIND = " (it looks like a Keboola Storage API token)"


@pytest.mark.parametrize(
    ("field", "line", "value", "kind"),
    [
        ("openai.api_key", 7, "sk-proj-AbCdEfGhIjKlMnOp", OPENAI_KIND),
        ("keboola.token", 10, "1234-56789-AbCdEfGhIjKlMnOp", KEBOOLA_KIND),
        ("keboola.token", 10, "plain-password-value", ""),
        ("keboola.token", 10, "424242424242", ""),
    ],
)
def test_literal_secret_rejected(
    tmp_path: Path, field: str, line: int, value: str, kind: str
) -> None:
    reference = (
        "secret:openai-prod" if field == "openai.api_key" else "env:KEBOOLA_TOKEN"
    )
    job = load(tmp_path, with_line(reference, value))
    [problem] = problems_of(job)
    assert problem.message == (
        f"{field} holds a literal secret{kind}; store it with `tc secret set NAME` "
        "and write secret:NAME, or use env:VAR or file:PATH"
    )
    assert problem.field == field
    assert problem.line == line
    assert value not in str(job.error)


@pytest.mark.parametrize(
    ("reference", "words"),
    [
        ('"secret:"', "the NAME in secret:NAME"),
        ("secret:-x", "the NAME in secret:NAME"),
        ("env:1X", "the VAR in env:VAR"),
        ('"env:"', "the VAR in env:VAR"),
        ('"file:"', "after file:"),
    ],
)
def test_bad_secret_reference_rejected(
    tmp_path: Path, reference: str, words: str
) -> None:
    problem = one_problem(tmp_path, with_line("env:KEBOOLA_TOKEN", reference))
    assert problem.message.startswith("keboola.token is not a valid secret reference")
    assert words in problem.message


def test_empty_secret_rejected(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, with_line(" secret:openai-prod", ""))
    assert problem.message == (
        "no value is given; write a secret reference: secret:NAME, env:VAR or file:PATH"
    )
    assert problem.field == "openai.api_key"


def test_secret_pattern_forms() -> None:
    for good in ("secret:a", "secret:Prod_1.x-y", "env:_X1", "file:/run/secrets/t"):
        assert SECRET_REF_PATTERN.fullmatch(good), good
    for bad in ("secret:", "secret:.x", "env:9X", "env:A-B", "file:", "sk-abc"):
        assert not SECRET_REF_PATTERN.fullmatch(bad), bad


def test_model_errors_hide_secret() -> None:
    with pytest.raises(ValidationError) as caught:
        OpenAIConfig.model_validate({"api_key": "sk-proj-TopSecretValue"})
    assert "TopSecretValue" not in str(caught.value)
    assert "TopSecretValue" not in repr(caught.value.errors())


def test_missing_field_error_hides_secret() -> None:
    with pytest.raises(ValidationError) as caught:
        KeboolaConfig.model_validate({"token": "123-456-TopSecretValue"})
    assert "TopSecretValue" not in repr(caught.value.errors())


# URLs


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://connection.keboola.com", "uses the scheme 'ftp', not http or https"),
        ("connection.keboola.com", "does not start with http:// or https://"),
        ("https://", "has no host name"),
        ("https://connection.keboola.com/#x", "contains a fragment (#...)"),
        (
            "https://connection.keboola.com:99999",
            "is not a valid URL (check the host and the port)",
        ),
        ("https://connection keboola.com", "contains spaces or control characters"),
    ],
)
def test_bad_stack_url_rejected(tmp_path: Path, url: str, words: str) -> None:
    text = with_line("https://connection.eu-central-1.keboola.com", url)
    problem = one_problem(tmp_path, text)
    assert problem.message == (
        f"keboola.stack_url {words}; write an http or https URL with a host, such "
        "as https://connection.eu-central-1.keboola.com"
    )
    assert problem.field == "keboola.stack_url"
    assert problem.line == 9


def test_url_password_hidden(tmp_path: Path) -> None:
    text = with_line("https://connection", "https://me:Hunter2Pass@connection")
    job = load(tmp_path, text)
    [problem] = problems_of(job)
    assert problem.message.startswith(
        "keboola.stack_url contains a user name or password"
    )
    assert "Hunter2Pass" not in str(job.error)


def test_http_base_url_accepted(tmp_path: Path) -> None:
    text = with_line("  api_key: secret:openai-prod", "  api_key: secret:x\n"
                     "  base_url: http://127.0.0.1:8080/v1")  # fmt: skip
    job = load(tmp_path, text)
    assert job.spec is not None
    assert job.spec.openai.base_url == "http://127.0.0.1:8080/v1"


# Batch ids


def batch_list(count: int) -> str:
    return "".join(f"  - batch_{index:04d}\n" for index in range(count))


def with_batches(items: str) -> str:
    start = VALID.index("batch_ids:\n") + len("batch_ids:\n")
    end = VALID.index("openai:")
    return VALID[:start] + items + VALID[end:]


def test_too_many_batch_ids(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, with_batches(batch_list(11)))
    assert problem.message == (
        "batch_ids lists 11 batch ids, more than the maximum of 10; split them "
        "over several job files, or raise the maximum with the setting "
        "TC_MAX_BATCH_IDS"
    )
    assert problem.field == "batch_ids"
    assert problem.line == 4


def test_batch_limit_is_setting(tmp_path: Path) -> None:
    path = write(tmp_path, with_batches(batch_list(11)))
    job = load_job_file(path, max_batch_ids=11)
    assert job.spec is not None
    assert len(job.spec.batch_ids) == 11


def test_empty_batch_ids(tmp_path: Path) -> None:
    text = with_batches("").replace("batch_ids:\n", "batch_ids: []\n")
    problem = one_problem(tmp_path, text)
    assert problem.message.startswith("batch_ids is empty; list at least one")


def test_single_batch_id_not_list(tmp_path: Path) -> None:
    text = with_batches("").replace("batch_ids:\n", "batch_ids: batch_abc\n")
    problem = one_problem(tmp_path, text)
    assert problem.message.startswith("batch_ids is a single value; it must be a list")


def test_bad_batch_id_pattern(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, with_batches("  - batch_a\n  - file-abc\n"))
    assert problem.message == (
        "'file-abc' is not an OpenAI batch id; a batch id is batch_ followed by "
        "letters, digits, '_' or '-'"
    )
    assert problem.field == "batch_ids[1]"
    assert problem.line == 5


def test_batch_id_length_limit(tmp_path: Path) -> None:
    longest = "batch_" + "a" * 249
    assert load(tmp_path, with_batches(f"  - {longest}\n")).spec is not None
    problem = one_problem(tmp_path, with_batches(f"  - {longest}b\n"))
    assert problem.message.startswith("batch id is 256 characters long")


def test_duplicate_batch_id_named(tmp_path: Path) -> None:
    items = "  - batch_a\n  - batch_b\n  - batch_a\n"
    problem = one_problem(tmp_path, with_batches(items))
    assert problem.message == (
        "'batch_a' is listed more than once, as batch_ids[0] on line 4 and again "
        "as batch_ids[2] on line 6; remove the repeat"
    )
    assert problem.field == "batch_ids[2]"
    assert problem.line == 6


# All problems at once


def test_problems_collected_by_line(tmp_path: Path) -> None:
    text = (
        VALID.replace("version: 1", "version: 3")
        .replace("secret:openai-prod", "sk-live-abcdefghij")
        .replace('"12345"', "12345")
        + "suspend: off\n"
    )
    problems = problems_of(load(tmp_path, text))
    assert [p.field for p in problems] == [
        "version",
        "openai.api_key",
        "keboola.configuration_id",
        "suspend",
    ]
    assert [p.line for p in problems] == [1, 7, 12, 14]


def test_problem_list_capped(tmp_path: Path) -> None:
    text = VALID + "".join(f"extra{index}: 1\n" for index in range(150))
    problems = problems_of(load(tmp_path, text))
    assert len(problems) == 101
    assert problems[99].field == "extra99"
    assert problems[100].message == (
        "50 more problems are not listed; fix the ones above and validate again"
    )


def test_every_problem_names_file(tmp_path: Path) -> None:
    path = write(tmp_path, VALID + "extra: 1\n")
    job = load_job_file(path)
    assert job.error is not None
    assert job.error.path == path
    assert all(p.path == path for p in job.error.problems)
    assert str(job.error).startswith(f"{path}:14:1: extra: unknown key")


# Files on disk


def test_directory_as_job_file(tmp_path: Path) -> None:
    (tmp_path / "dir.yaml").mkdir()
    job = load_job_file(tmp_path / "dir.yaml")
    assert problems_of(job)[0].message.startswith("is a directory")
    assert job.revision == ""


def test_fifo_not_opened(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.yaml")
    job = load_job_file(tmp_path / "pipe.yaml")
    assert problems_of(job)[0].message.startswith("is a special file")


def test_missing_file_reported(tmp_path: Path) -> None:
    job = load_job_file(tmp_path / "gone.yaml")
    assert problems_of(job)[0].message.startswith("cannot read the file")
    assert job.revision == ""


def test_symlink_outside_rejected(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.d"
    jobs.mkdir()
    outside = write(tmp_path, VALID, "outside.yaml")
    (jobs / "linked.yaml").symlink_to(outside)
    job = load_job_file(jobs / "linked.yaml")
    [problem] = problems_of(job)
    assert "is a symbolic link to" in problem.message
    assert "outside the job directory" in problem.message
    assert job.revision == ""


def test_symlink_inside_accepted(tmp_path: Path) -> None:
    (tmp_path / "shared").mkdir()
    write(tmp_path / "shared", VALID, "real.yaml")
    (tmp_path / "linked.yaml").symlink_to(tmp_path / "shared" / "real.yaml")
    job = load_job_file(tmp_path / "linked.yaml")
    assert job.error is None
    assert job.name == "linked"


def test_broken_symlink_rejected(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").symlink_to(tmp_path / "nowhere.yaml")
    problem = one_problem_at(tmp_path / "broken.yaml")
    assert "target does not exist" in problem.message


def one_problem_at(path: Path) -> Problem:
    problems = problems_of(load_job_file(path))
    assert len(problems) == 1
    return problems[0]


# Discovery


def test_discover_skips_non_job_files(tmp_path: Path) -> None:
    for name in (
        "b.yaml",
        "a.yml",
        "a.status.yaml",
        "c.status.yml",
        ".hidden.yaml",
        ".b.yaml.swp",
        "b.yaml~",
        ".#b.yaml",
        "#b.yaml#",
        "notes.txt",
        "b.yaml.orig",
    ):
        write(tmp_path, VALID, name)
    (tmp_path / "sub.yaml").mkdir()
    jobs = discover(tmp_path)
    assert [job.name for job in jobs] == ["a", "b"]
    assert all(job.error is None for job in jobs)


def test_discover_sorted_by_name(tmp_path: Path) -> None:
    for name in ("zeta.yaml", "alpha.yml", "mid-1.yaml", "mid.yaml"):
        write(tmp_path, VALID, name)
    assert [job.name for job in discover(tmp_path)] == [
        "alpha",
        "mid",
        "mid-1",
        "zeta",
    ]


def test_discover_reports_extension_clash(tmp_path: Path) -> None:
    write(tmp_path, VALID, "x.yaml")
    write(tmp_path, VALID, "x.yml")
    jobs = discover(tmp_path)
    assert [job.path.name for job in jobs] == ["x.yaml", "x.yml"]
    assert all(job.spec is None for job in jobs)
    first = problems_of(jobs[0])[0].message
    second = problems_of(jobs[1])[0].message
    assert (
        first
        == "x.yaml and x.yml both define the job 'x'; delete or rename one of them"
    )
    assert (
        second
        == "x.yml and x.yaml both define the job 'x'; delete or rename one of them"
    )


def test_discover_keeps_invalid_files(tmp_path: Path) -> None:
    write(tmp_path, "batch_ids: [\n", "broken.yaml")
    [job] = discover(tmp_path)
    assert job.name == "broken"
    assert job.error is not None


def test_discover_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(JobFileError) as caught:
        discover(tmp_path / "absent")
    assert caught.value.problems[0].message.startswith("job directory not found")


def test_discover_file_not_directory(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    with pytest.raises(JobFileError) as caught:
        discover(path)
    assert caught.value.problems[0].message.startswith("is not a directory")


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("job.yaml", True),
        ("job.yml", True),
        ("Job.YAML", True),
        ("job.status.yaml", False),
        ("job.status.yml", False),
        (".job.yaml", False),
        (".job.yaml.swp", False),
        ("job.yaml~", False),
        (".#job.yaml", False),
        ("#job.yaml#", False),
        ("job.json", False),
        ("job", False),
    ],
)
def test_job_file_name_filter(filename: str, expected: bool) -> None:
    assert is_job_file_name(filename) is expected


def test_job_name_strips_extension() -> None:
    assert job_name_for(Path("jobs.d/catalogue.yaml")) == "catalogue"
    assert job_name_for(Path("jobs.d/catalogue.v2.yml")) == "catalogue.v2"


def test_status_path_always_yaml() -> None:
    assert status_path_for(Path("jobs.d/x.yml")) == Path("jobs.d/x.status.yaml")
    assert status_path_for(Path("jobs.d/x.yaml")) == Path("jobs.d/x.status.yaml")


# JSON Schema

_KNOWN_KEYWORDS = {
    "$schema", "$defs", "$ref", "title", "description", "type", "properties",
    "required", "additionalProperties", "items", "minItems", "maxItems",
    "uniqueItems", "pattern", "maxLength", "minimum", "maximum", "const",
    "default", "examples", "format",
}  # fmt: skip
_JSON_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "integer": int,
    "boolean": bool,
}


def schema_violations(
    instance: Any, schema: dict[str, Any], root: dict[str, Any]
) -> list[str]:
    """Check an instance against the keywords that ``job_schema`` uses."""
    if "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return schema_violations(instance, target, root)
    found: list[str] = []
    expected = _JSON_TYPES.get(schema.get("type", ""), object)
    if not isinstance(instance, expected) or (
        expected is int and isinstance(instance, bool)
    ):
        return [f"{instance!r} is not {schema['type']}"]
    if "const" in schema and instance != schema["const"]:
        found.append(f"{instance!r} != {schema['const']!r}")
    if isinstance(instance, str):
        if "pattern" in schema and not re.search(schema["pattern"], instance):
            found.append(f"{instance!r} does not match {schema['pattern']}")
        if len(instance) > schema.get("maxLength", len(instance)):
            found.append(f"{instance!r} is too long")
    if isinstance(instance, int):
        if instance < schema.get("minimum", instance):
            found.append(f"{instance} is below the minimum")
        if instance > schema.get("maximum", instance):
            found.append(f"{instance} is above the maximum")
    if isinstance(instance, list):
        if (
            not schema.get("minItems", 0)
            <= len(instance)
            <= schema.get("maxItems", 10**9)
        ):
            found.append("wrong number of items")
        if schema.get("uniqueItems") and len(set(map(repr, instance))) < len(instance):
            found.append("items are not unique")
        for item in instance:
            found += schema_violations(item, schema.get("items", {}), root)
    if isinstance(instance, dict):
        properties = schema.get("properties", {})
        found += [
            f"{key} is required"
            for key in schema.get("required", [])
            if key not in instance
        ]
        for key, value in instance.items():
            if key in properties:
                found += schema_violations(value, properties[key], root)
            elif schema.get("additionalProperties") is False:
                found.append(f"{key} is not allowed")
    return found  # fmt: skip


def keywords_of(schema: Any) -> set[str]:
    if isinstance(schema, list):
        return set().union(*(keywords_of(item) for item in schema))
    if not isinstance(schema, dict):
        return set()
    found = set(schema)
    for key, value in schema.items():
        if key in ("properties", "$defs"):
            found |= set().union(*(keywords_of(child) for child in value.values()))
        elif key not in ("examples", "default", "const"):
            found |= keywords_of(value)
    return found


def test_schema_declares_draft() -> None:
    schema = job_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert json.loads(json.dumps(schema)) == schema


def test_schema_lists_fixed_fields() -> None:
    schema = job_schema()
    defs = schema["$defs"]
    assert list(schema["properties"]) == FIELDS
    assert schema["required"] == ["batch_ids", "openai", "keboola"]
    assert list(defs["OpenAIConfig"]["properties"]) == ["api_key", "base_url"]
    assert list(defs["KeboolaConfig"]["properties"]) == [
        "stack_url",
        "queue_url",
        "token",
        "component_id",
        "configuration_id",
    ]


def test_schema_uses_known_keywords() -> None:
    assert keywords_of(job_schema()) <= _KNOWN_KEYWORDS


def test_schema_has_descriptions() -> None:
    schema = job_schema()
    properties = list(schema["properties"].values())
    for definition in schema["$defs"].values():
        properties += definition["properties"].values()
    assert all(p.get("description") for p in properties)


def test_schema_patterns_compile() -> None:
    text = json.dumps(job_schema())
    for pattern in re.findall(r'"pattern": "((?:[^"\\]|\\.)*)"', text):
        re.compile(json.loads(f'"{pattern}"'))


def test_schema_accepts_valid_example() -> None:
    schema = job_schema()
    assert schema_violations(yaml.safe_load(VALID), schema, schema) == []


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('"12345"', "12345"),
        ("secret:openai-prod", "sk-abc"),
        ("batch_67a1c2d3e4f5a6b7c8d9e0f2", "file-1"),
        ("poll_interval_seconds: 120", "poll_interval_seconds: 5"),
        ("version: 1", "version: 2"),
        ("version: 1", "versoin: 1"),
    ],
)
def test_schema_rejects_what_loader_rejects(tmp_path: Path, old: str, new: str) -> None:
    text = with_line(old, new)
    schema = job_schema()
    assert schema_violations(yaml.safe_load(text), schema, schema) != []
    assert load(tmp_path, text).error is not None


def test_schema_max_items_setting() -> None:
    assert job_schema()["properties"]["batch_ids"]["maxItems"] == 10
    assert job_schema(max_batch_ids=25)["properties"]["batch_ids"]["maxItems"] == 25


# Never raising


_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["batch_x", "secret:x", "sk-abc", "12345", "yes", "~"])
)
_KEYS = st.text(max_size=10) | st.sampled_from(FIELDS)
_VALUES = st.recursive(
    _SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(_KEYS, children, max_size=4)
    ),
    max_leaves=20,
)
_KEBOOLA_KEYS = ["stack_url", "queue_url", "token", "component_id", "configuration_id"]
_JOB_LIKE = st.fixed_dictionaries(
    {},
    optional={
        "version": _SCALARS,
        "name": _SCALARS,
        "batch_ids": st.lists(_SCALARS | st.just("batch_a"), max_size=12) | _VALUES,
        "openai": st.dictionaries(st.sampled_from(["api_key", "base_url"]), _SCALARS)
        | _VALUES,
        "keboola": st.dictionaries(st.sampled_from([*_KEBOOLA_KEYS, "x"]), _SCALARS)
        | _VALUES,
        "poll_interval_seconds": _SCALARS,
        "suspend": _SCALARS,
    },
)
_NO_FIXTURE_CHECK = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def check_never_raises(directory: Path, data: bytes) -> None:
    job = load(directory, data)
    assert (job.spec is None) == (job.error is not None)
    if job.error is not None:
        assert job.error.problems
        assert all(isinstance(p.message, str) and p.message for p in job.error.problems)


@_NO_FIXTURE_CHECK
@given(st.text(max_size=300))
def test_any_text_never_raises(tmp_path: Path, text: str) -> None:
    check_never_raises(tmp_path, text.encode("utf-8", "surrogatepass"))


@_NO_FIXTURE_CHECK
@given(st.binary(max_size=300))
def test_any_bytes_never_raise(tmp_path: Path, data: bytes) -> None:
    check_never_raises(tmp_path, data)


@_NO_FIXTURE_CHECK
@given(_JOB_LIKE | _VALUES)
def test_any_mapping_never_raises(tmp_path: Path, value: Any) -> None:
    check_never_raises(tmp_path, yaml.safe_dump(value, allow_unicode=True).encode())


@_NO_FIXTURE_CHECK
@given(st.lists(st.sampled_from(VALID.splitlines(keepends=True)), max_size=20))
def test_shuffled_lines_never_raise(tmp_path: Path, lines: list[str]) -> None:
    check_never_raises(tmp_path, "".join(lines).encode())


REPOSITORY = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("directory", ["jobs.d", "examples"])
def test_bundled_job_files_validate(directory: str) -> None:
    if not (REPOSITORY / directory).is_dir():
        pytest.skip(f"{directory} is not in this checkout")
    for job in discover(REPOSITORY / directory):
        assert job.error is None, str(job.error)
        assert job.spec is not None


def test_direct_spec_construction() -> None:
    spec = JobSpec(
        batch_ids=["batch_a"],
        openai=OpenAIConfig(api_key="env:OPENAI_API_KEY"),
        keboola=KeboolaConfig(
            stack_url="https://connection.keboola.com",
            token="file:/run/secrets/keboola",
            component_id="kds-team.app-custom-python",
            configuration_id="12345",
        ),
    )
    assert JobSpec.model_validate(spec.model_dump()) == spec
