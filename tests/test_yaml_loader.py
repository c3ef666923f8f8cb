"""Tests of the safe YAML loader: decoding, composing, scalar readings."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from reconciler.errors import JobFileError, Problem
from reconciler.yaml_loader import (
    MAX_DEPTH,
    MAX_FILE_BYTES,
    ExplicitStrNode,
    ScalarReading,
    compose_document,
    decode_job_bytes,
    find_duplicate_keys,
    read_plain_scalar,
)

PATH = Path("jobs.d/job.yaml")


def plain(text: str) -> yaml.ScalarNode:
    """Return an unquoted scalar node with the given text."""
    return yaml.ScalarNode("tag:yaml.org,2002:str", text)


def only_problem(text: str) -> Problem:
    with pytest.raises(JobFileError) as caught:
        compose_document(text, PATH)
    assert len(caught.value.problems) == 1
    return caught.value.problems[0]


def decode_problem(data: bytes) -> Problem:
    with pytest.raises(JobFileError) as caught:
        decode_job_bytes(data, PATH)
    assert len(caught.value.problems) == 1
    return caught.value.problems[0]


# Scalar readings


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("12345", "number"),
        ("012345", "number"),
        ("-7", "number"),
        ("0x1F", "number"),
        ("0o17", "number"),
        ("0b101", "number"),
        ("1_000", "number"),
        ("1:20", "number"),
        ("1.5", "number"),
        ("1.", "number"),
        (".5", "number"),
        ("1e3", "number"),
        ("1.5E-3", "number"),
        (".inf", "number"),
        ("-.Inf", "number"),
        (".nan", "number"),
        ("yes", "boolean"),
        ("No", "boolean"),
        ("ON", "boolean"),
        ("off", "boolean"),
        ("true", "boolean"),
        ("FALSE", "boolean"),
        ("y", "boolean"),
        ("N", "boolean"),
        ("~", "null"),
        ("null", "null"),
        ("NULL", "null"),
        ("", "null"),
        ("2024-01-01", "date"),
        ("2024-1-1 10:00:00", "date"),
        ("2024-01-01T10:00:00Z", "date"),
    ],
)
def test_plain_scalar_reading_kind(text: str, kind: str) -> None:
    reading = read_plain_scalar(plain(text))
    assert reading is not None
    assert reading.kind == kind


@pytest.mark.parametrize(
    "text",
    [
        "batch_67a1c2d3e4f5a6b7c8d9e0f1",
        "kds-team.app-custom-python",
        "secret:openai-prod",
        "1.2.3",
        "12345abc",
        "0x",
        ".",
        "-",
        "2024-01",
        "yess",
        "https://api.openai.com/v1",
    ],
)
def test_plain_scalar_stays_text(text: str) -> None:
    assert read_plain_scalar(plain(text)) is None


def test_sexagesimal_reading_names_value() -> None:
    reading = read_plain_scalar(plain("1:20"))
    assert reading == ScalarReading("number", "the base-60 number 80")


@pytest.mark.parametrize("style", ["'", '"', "|", ">"])
def test_quoted_scalar_is_text(style: str) -> None:
    node = yaml.ScalarNode("tag:yaml.org,2002:str", "12345", style=style)
    assert read_plain_scalar(node) is None


def test_explicit_str_tag_is_text() -> None:
    root = compose_document("a: !!str 12345\n", PATH)
    assert isinstance(root, yaml.MappingNode)
    value = root.value[0][1]
    assert isinstance(value, ExplicitStrNode)
    assert read_plain_scalar(value) is None


@given(st.text(alphabet="0123456789_:.-+eExXoObBaf~nulyestrNYT ", max_size=12))
def test_reading_covers_pyyaml_resolver(text: str) -> None:
    """Whatever PyYAML (YAML 1.1) reads as non-text is never taken as text."""
    tag = yaml.SafeLoader(text).resolve(yaml.ScalarNode, text, (True, False))
    if tag in ("tag:yaml.org,2002:str", "tag:yaml.org,2002:merge"):
        return
    assert read_plain_scalar(plain(text)) is not None, (text, tag)


# Decoding bytes


def test_decode_strips_bom_and_keeps_crlf() -> None:
    text = decode_job_bytes(b"\xef\xbb\xbfa: 1\r\nb: 2\r\n", PATH)
    assert text == "a: 1\r\nb: 2\r\n"


def test_decode_rejects_oversized_file() -> None:
    problem = decode_problem(b"#" * (MAX_FILE_BYTES + 1))
    assert "1,048,577 bytes" in problem.message
    assert "limit of 1,048,576 bytes" in problem.message


def test_decode_rejects_non_utf8() -> None:
    problem = decode_problem(b"a: 1\nb: caf\xe9\n")
    assert "byte 0xE9 at byte offset 11" in problem.message
    assert problem.message.endswith("save the file as UTF-8")
    assert problem.line == 2


def test_decode_offset_counts_bom() -> None:
    problem = decode_problem(b"\xef\xbb\xbfab\xe9")
    assert "byte 0xE9 at byte offset 5" in problem.message


def test_decode_rejects_nul_byte() -> None:
    problem = decode_problem(b"a: 1\x00\x01\x02")
    assert "NUL byte at byte offset 4" in problem.message
    assert "binary data" in problem.message


def test_decode_rejects_utf16() -> None:
    problem = decode_problem("a: 1\n".encode("utf-16"))
    assert problem.message == "file is encoded as UTF-16; save it as UTF-8"


def test_decode_rejects_empty_file() -> None:
    problem = decode_problem(b"")
    assert problem.message == (
        "file is empty; a job file needs batch_ids, openai and keboola"
    )


def test_decode_rejects_blank_file() -> None:
    problem = decode_problem(b"  \n\n")
    assert problem.message.startswith("file is empty")


# Composing


def test_compose_keeps_marks() -> None:
    root = compose_document("a: 1\nb:\n  c: x\n", PATH)
    assert isinstance(root, yaml.MappingNode)
    inner = root.value[1][1]
    assert inner.start_mark.line == 2
    assert inner.start_mark.column == 2


def test_compose_comment_only_file() -> None:
    problem = only_problem("# nothing here\n")
    assert problem.message.startswith("file contains only comments or blank lines")


def test_compose_rejects_indenting_tab() -> None:
    problem = only_problem("a:\n\tb: 1\n")
    assert problem.message == "tab characters cannot indent YAML; use spaces"
    assert problem.line == 2
    assert problem.column == 1


def test_compose_rejects_separating_tab() -> None:
    problem = only_problem("a:\t1\n")
    assert "tab characters cannot separate" in problem.message
    assert problem.column == 3


def test_compose_rejects_bad_indentation() -> None:
    problem = only_problem("a:\n  b: 1\n c: 2\n")
    assert problem.message.startswith("the indentation does not match")
    assert problem.line == 3


def test_compose_rejects_colon_in_value() -> None:
    problem = only_problem("a: b: c\n")
    assert "write the value in quotes if it contains ':'" in problem.message
    assert problem.line == 1


def test_compose_rejects_unclosed_quote() -> None:
    problem = only_problem("a: 'x\nb: 2\n")
    assert problem.message == "a quoted string is not closed; add the closing quote"
    assert problem.line == 1
    assert problem.column == 4


def test_compose_rejects_unclosed_bracket() -> None:
    problem = only_problem("a: [1, 2\n")
    assert problem.message.startswith("a list opened with [ is not closed")


def test_compose_rejects_missing_colon() -> None:
    problem = only_problem("a: b\nkey\nc: d\n")
    assert "add the missing colon" in problem.message
    assert problem.line == 2


def test_compose_rejects_two_documents() -> None:
    problem = only_problem("a: 1\n---\nb: 2\n")
    assert "more than one YAML document" in problem.message
    assert problem.line == 2


def test_compose_rejects_alias() -> None:
    problem = only_problem("a: &x 1\nb: *x\n")
    assert problem.message == (
        "YAML anchors and aliases (&name, *name) are not supported in job files; "
        "write the value out"
    )
    assert problem.line == 1


def test_compose_rejects_alias_bomb_fast() -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in "bcdefghi":
        previous = chr(ord(level) - 1)
        lines.append(f"{level}: &{level} [" + ",".join([f"*{previous}"] * 9) + "]")
    started = time.monotonic()
    problem = only_problem("\n".join(lines) + "\n")
    assert time.monotonic() - started < 1.0
    assert "aliases" in problem.message


def test_compose_rejects_tags() -> None:
    problem = only_problem("a: !!python/object:os.system x\n")
    assert "YAML tags such as !!python/object:os.system" in problem.message


def test_compose_rejects_deep_flow_nesting() -> None:
    problem = only_problem("a: " + "[" * 500 + "]" * 500 + "\n")
    assert f"nested more than {MAX_DEPTH} levels" in problem.message


def test_compose_rejects_deep_block_nesting() -> None:
    text = "".join(" " * level + f"k{level}:\n" for level in range(200)) + "x"
    problem = only_problem(text)
    assert f"nested more than {MAX_DEPTH} levels" in problem.message


def test_compose_rejects_control_character() -> None:
    problem = only_problem("a: 1\nb: x\x07y\n")
    assert "U+0007" in problem.message
    assert problem.line == 2
    assert problem.column == 5


# Duplicate keys


def test_duplicate_key_names_both_lines() -> None:
    root = compose_document("a: 1\nb: 2\na: 3\n", PATH)
    problems = find_duplicate_keys(root, PATH)
    assert len(problems) == 1
    assert problems[0].message == (
        "key 'a' appears twice, on line 1 and on line 3; keep only one of them"
    )
    assert problems[0].field == "a"
    assert problems[0].line == 3


def test_duplicate_key_in_nested_mapping() -> None:
    root = compose_document("k:\n  - {x: 1, x: 2}\n", PATH)
    problems = find_duplicate_keys(root, PATH)
    assert len(problems) == 1
    assert problems[0].field == "k[0].x"
    assert "twice, on line 2;" in problems[0].message
