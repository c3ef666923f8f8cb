"""Safe YAML loading for job files, with line and column for every node.

A job file is composed into PyYAML's node tree, never constructed into Python
objects, so the validator in ``reconciler.spec`` gets each scalar's original
text, quoting style and position. That is what lets it reject a plain ``12345``
where a string is expected instead of silently reading a number.

The loader rejects what a job file never needs and what makes YAML unsafe or
surprising: anchors and aliases (which also stops alias bombs), tags other than
``!!str``, nesting deeper than ``MAX_DEPTH``, several documents in one file,
and duplicate keys, which PyYAML would otherwise resolve by keeping the last.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import yaml
from yaml.error import Mark
from yaml.events import AliasEvent, Event, NodeEvent, ScalarEvent, StreamEndEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from reconciler.errors import JobFileError, Problem

MAX_FILE_BYTES = 1024 * 1024
"""Largest job file accepted, in bytes. Real job files are well under 2 KiB.

NOTE: the pure-Python PyYAML parser takes seconds for a file near the limit.
1 MiB of one-line flow mappings took about 9 s with PyYAML 6.0.4 and Python
3.11 on one core of an AMD EPYC virtual machine.
"""

MAX_DEPTH = 50
"""Deepest nesting of mappings and sequences accepted. Job files need three."""

STR_TAG = "tag:yaml.org,2002:str"
_YAML_TAG_PREFIX = "tag:yaml.org,2002:"

# Scalar texts that YAML 1.1 (the version PyYAML implements) or YAML 1.2 (core
# schema) resolve to something other than a string, when written unquoted.
# The patterns follow the type definitions at yaml.org/type (YAML 1.1) and
# section 10.3.2 of the YAML 1.2.2 specification.
_NULL_RE = re.compile(r"~|null|Null|NULL|")
_BOOL_RE = re.compile(r"y|n|yes|no|true|false|on|off", re.IGNORECASE)
_INT_RE = re.compile(
    r"""[-+]?(
        0b[01_]+                      # binary (1.1)
      | 0o[0-7]+                      # octal (1.2)
      | 0x[0-9a-fA-F_]+               # hexadecimal (1.1, 1.2)
      | [0-9][0-9_]*                  # decimal, or octal with a leading 0 (1.1)
    )""",
    re.VERBOSE,
)
_SEXAGESIMAL_RE = re.compile(r"[-+]?[1-9][0-9_]*(:[0-5]?[0-9])+(\.[0-9_]*)?")
_FLOAT_RE = re.compile(
    r"""[-+]?(
        [0-9][0-9_]*\.[0-9_]*([eE][-+]?[0-9]+)?  # 1.5, 1., 1.5e3
      | \.[0-9][0-9_]*([eE][-+]?[0-9]+)?         # .5
      | [0-9][0-9_]*[eE][-+]?[0-9]+              # 1e3 (YAML 1.2 only)
      | \.(inf|Inf|INF)
    )
    | \.(nan|NaN|NAN)""",
    re.VERBOSE,
)
_TIMESTAMP_RE = re.compile(
    r"""[0-9]{4}-[0-9]{2}-[0-9]{2}                   # a date
    | [0-9]{4}-[0-9]{1,2}-[0-9]{1,2}                 # or a date and a time
      ([Tt]|[ \t]+)[0-9]{1,2}:[0-9]{2}:[0-9]{2}(\.[0-9]*)?
      ([ \t]*(Z|[-+][0-9]{1,2}(:[0-9]{2})?))?""",
    re.VERBOSE,
)


class ExplicitStrNode(ScalarNode):
    """A scalar node written with the ``!!str`` tag: a string whatever its text."""


@dataclass(frozen=True)
class ScalarReading:
    """The type YAML gives an unquoted scalar that is not a string.

    Attributes:
        kind: ``"null"``, ``"boolean"``, ``"number"`` or ``"date"``.
        detail: extra words for the message, such as ``"the base-60 number 80"``
            for ``1:20`` in YAML 1.1, or empty.
    """

    kind: str
    detail: str = ""


def read_plain_scalar(node: ScalarNode) -> ScalarReading | None:
    """Return how YAML 1.1 or 1.2 would read the scalar if it is not a string.

    Quoted, block (``|``, ``>``) and ``!!str`` scalars are always strings and
    return None, as does a plain scalar that both YAML versions read as text.
    """
    if isinstance(node, ExplicitStrNode) or node.style is not None:
        return None
    text = node.value
    if _NULL_RE.fullmatch(text):
        return ScalarReading("null")
    if _BOOL_RE.fullmatch(text):
        return ScalarReading("boolean")
    if _SEXAGESIMAL_RE.fullmatch(text):
        return ScalarReading("number", _sexagesimal_detail(text))
    if _INT_RE.fullmatch(text) or _FLOAT_RE.fullmatch(text):
        return ScalarReading("number")
    if _TIMESTAMP_RE.fullmatch(text):
        return ScalarReading("date")
    return None


def _sexagesimal_detail(text: str) -> str:
    if not re.fullmatch(r"[-+]?[0-9:_]+", text):
        return "a base-60 number"
    value = 0
    for part in text.lstrip("+-").replace("_", "").split(":"):
        value = value * 60 + int(part)
    sign = "-" if text.startswith("-") else ""
    return f"the base-60 number {sign}{value}"


def line_and_column(mark: _Position | None) -> tuple[int | None, int | None]:
    """Return the 1-based line and column of a PyYAML mark (which is 0-based)."""
    if mark is None:
        return None, None
    return mark.line + 1, mark.column + 1


def decode_job_bytes(data: bytes, path: Path) -> str:
    """Decode a job file's bytes as UTF-8, with or without a byte order mark.

    Raises:
        JobFileError: the file is empty, too large, binary or not UTF-8.
    """
    if len(data) > MAX_FILE_BYTES:
        raise _fatal(path, too_large_message(len(data)))
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise _fatal(path, "file is encoded as UTF-16; save it as UTF-8")
    nul = data.find(b"\x00")
    if nul >= 0:
        raise _fatal(
            path,
            f"file contains a NUL byte at byte offset {nul}, so it is binary "
            "data, not a YAML text file; replace it with a YAML job file",
            line=data.count(b"\n", 0, nul) + 1,
        )
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        text = data[start:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = start + exc.start
        raise _fatal(
            path,
            f"file is not valid UTF-8: byte 0x{data[offset]:02X} at byte "
            f"offset {offset} cannot be decoded; save the file as UTF-8",
            line=data.count(b"\n", 0, offset) + 1,
        ) from None
    if not text.strip():
        raise _fatal(path, EMPTY_FILE_MESSAGE)
    return text


def too_large_message(size: int) -> str:
    """Return the message for a file of ``size`` bytes over ``MAX_FILE_BYTES``."""
    return (
        f"file is {size:,} bytes, larger than the limit of {MAX_FILE_BYTES:,} "
        "bytes (1 MiB); a job file needs well under 2 KiB, so check that this is "
        "the intended file"
    )


EMPTY_FILE_MESSAGE = "file is empty; a job file needs batch_ids, openai and keboola"
_NO_CONTENT_MESSAGE = (
    "file contains only comments or blank lines; a job file needs batch_ids, "
    "openai and keboola"
)


def compose_document(text: str, path: Path) -> Node:
    """Compose the single YAML document of a job file into a node tree.

    Raises:
        JobFileError: with one problem, for a syntax error, several documents,
            no document, an anchor, alias or unsupported tag, or nesting deeper
            than ``MAX_DEPTH``.
    """
    loader: _JobFileLoader | None = None
    try:
        # The constructor already rejects characters that YAML does not allow.
        loader = _JobFileLoader(text)
        return _compose_single(loader, path)
    except _RejectedNode as exc:
        line, column = line_and_column(exc.mark)
        raise _fatal(path, exc.message, line=line, column=column) from None
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(path, text, exc) from None
    except yaml.reader.ReaderError as exc:
        raise _reader_error(path, text, exc) from None
    except yaml.YAMLError as exc:
        raise _fatal(path, f"YAML syntax error: {exc}; fix the syntax") from None
    except RecursionError:
        raise _fatal(path, _depth_message()) from None
    finally:
        if loader is not None:
            loader.dispose()


def _compose_single(loader: _JobFileLoader, path: Path) -> Node:
    loader.get_event()  # type: ignore[no-untyped-call]  # the stream start event
    if loader.check_event(StreamEndEvent):
        raise _fatal(path, _NO_CONTENT_MESSAGE)
    document = loader.compose_document()
    if not loader.check_event(StreamEndEvent):
        second = loader.next_event()
        line, column = line_and_column(second.start_mark)
        raise _fatal(
            path,
            f"file contains more than one YAML document (another starts at line "
            f"{line}); a job file holds exactly one, so remove the '---' "
            "separator or move the second job to its own file",
            line=line,
            column=column,
        )
    if document is None:  # PyYAML composes None only at the end of the stream
        raise _fatal(path, _NO_CONTENT_MESSAGE)
    return document


def find_duplicate_keys(root: Node, path: Path, field: str = "") -> list[Problem]:
    """Return one problem per key that appears more than once in a mapping.

    Every mapping in the tree is checked. ``field`` is the dotted name of
    ``root``, used to name the duplicate keys in the problems.
    """
    problems: list[Problem] = []
    if isinstance(root, MappingNode):
        first_marks: dict[str, Mark] = {}
        for key_node, value_node in root.value:
            key = key_node.value if isinstance(key_node, ScalarNode) else None
            child_field = f"{field}.{key}" if field else str(key)
            if key is not None and key in first_marks:
                first_line = first_marks[key].line + 1
                line, column = line_and_column(key_node.start_mark)
                lines = (
                    f"on line {line}"
                    if line == first_line
                    else f"on line {first_line} and on line {line}"
                )
                problems.append(
                    Problem(
                        path,
                        f"key {key!r} appears twice, {lines}; keep only one of them",
                        field=child_field,
                        line=line,
                        column=column,
                    )
                )
            elif key is not None:
                first_marks[key] = key_node.start_mark
            problems += find_duplicate_keys(value_node, path, child_field)
    elif isinstance(root, SequenceNode):
        for index, item in enumerate(root.value):
            problems += find_duplicate_keys(item, path, f"{field}[{index}]")
    return problems


class _Position(Protocol):
    """A PyYAML mark: ``yaml.error.Mark`` or the C extension's ``Mark``."""

    line: int
    column: int


class _RejectedNode(Exception):
    def __init__(self, message: str, mark: _Position | None) -> None:
        super().__init__(message)
        self.message = message
        self.mark = mark


class _JobFileLoader(yaml.SafeLoader):
    """A SafeLoader that rejects aliases, anchors, tags but ``!!str``, deep nesting."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def next_event(self) -> Event:
        """Return the next parser event without consuming it."""
        event: Event = self.peek_event()  # type: ignore[no-untyped-call]
        return event

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        event = self.next_event()
        if isinstance(event, AliasEvent):
            raise _RejectedNode(_ALIAS_MESSAGE, event.start_mark)
        if isinstance(event, NodeEvent) and event.anchor is not None:
            raise _RejectedNode(_ALIAS_MESSAGE, event.start_mark)
        tag: str | None = getattr(event, "tag", None)
        explicit_str = tag == STR_TAG and isinstance(event, ScalarEvent)
        if tag is not None and not explicit_str:
            short_tag = tag.replace(_YAML_TAG_PREFIX, "!!")
            raise _RejectedNode(
                f"YAML tags such as {short_tag} are not supported in job files; "
                "remove the tag (write a value in quotes to make it a string)",
                event.start_mark,
            )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _RejectedNode(_depth_message(), event.start_mark)
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if explicit_str and isinstance(node, ScalarNode):
            return ExplicitStrNode(
                node.tag, node.value, node.start_mark, node.end_mark, style=node.style
            )
        return node


_ALIAS_MESSAGE = (
    "YAML anchors and aliases (&name, *name) are not supported in job files; "
    "write the value out"
)


def _depth_message() -> str:
    return (
        f"YAML is nested more than {MAX_DEPTH} levels deep; a job file needs "
        "three levels, so check for unclosed brackets or runaway indentation"
    )


def _fatal(
    path: Path, message: str, *, line: int | None = None, column: int | None = None
) -> JobFileError:
    return JobFileError(path, [Problem(path, message, line=line, column=column)])


def _syntax_error(path: Path, text: str, exc: yaml.MarkedYAMLError) -> JobFileError:
    mark = exc.problem_mark or exc.context_mark
    line, column = line_and_column(mark)
    problem = exc.problem or ""
    context = exc.context or ""
    if "'\\t'" in problem or "tab character" in problem:
        message = _tab_message(text, mark)
    elif problem == "mapping values are not allowed here":
        message = (
            "a key (a word followed by ':') is not allowed here; put each key on "
            "its own line at the right indentation, or write the value in quotes "
            "if it contains ':'"
        )
    elif problem == "could not find expected ':'":
        message = (
            "a line is neither 'key: value' nor '- item'; add the missing colon "
            "or fix the indentation"
        )
        line, column = line_and_column(exc.context_mark or mark)
    elif "quoted scalar" in context and "end of stream" in problem:
        message = "a quoted string is not closed; add the closing quote"
        line, column = line_and_column(exc.context_mark or mark)
    elif problem.startswith("found unknown escape character"):
        message = (
            f"{problem[len('found ') :]} in a double-quoted string; use single "
            "quotes, or write a backslash as \\\\"
        )
    elif "that cannot start any token" in problem:
        character = problem.split("'")[1] if "'" in problem else "?"
        message = (
            f"the character {character!r} cannot start a plain YAML value; "
            "write the value in quotes"
        )
    elif problem.startswith("expected <block end>"):
        message = (
            "the indentation does not match the lines above; indent the keys of "
            "one mapping, and the items of one list, by the same number of spaces"
        )
    elif problem.startswith("expected ',' or ']'"):
        message = "a list opened with [ is not closed; add ] or a missing comma"
        line, column = line_and_column(exc.context_mark or mark)
    elif problem.startswith("expected ',' or '}'"):
        message = "a mapping opened with { is not closed; add } or a missing comma"
        line, column = line_and_column(exc.context_mark or mark)
    else:
        detail = f"{problem} ({context})" if context else problem
        message = f"YAML syntax error: {detail}; fix the syntax at this place"
    return _fatal(path, message, line=line, column=column)


def _tab_message(text: str, mark: _Position | None) -> str:
    if mark is None:
        return "tab characters cannot indent YAML; use spaces"
    lines = text.splitlines()
    line_text = lines[mark.line] if mark.line < len(lines) else ""
    if line_text[: mark.column].strip() == "":
        return "tab characters cannot indent YAML; use spaces"
    return "tab characters cannot separate YAML values here; use spaces"


def _reader_error(path: Path, text: str, exc: yaml.reader.ReaderError) -> JobFileError:
    position = min(exc.position, len(text))
    line = text.count("\n", 0, position) + 1
    column = position - (text.rfind("\n", 0, position) + 1) + 1
    character = exc.character
    code = f"U+{character:04X}" if isinstance(character, int) else repr(character)
    return _fatal(
        path,
        f"file contains the character {code}, which YAML does not allow; remove it",
        line=line,
        column=column,
    )
