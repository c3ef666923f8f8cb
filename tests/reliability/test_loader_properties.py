"""Property tests of the job-file loader with YAML built from its own syntax.

tests/test_spec.py feeds random characters, random bytes, dumped mappings and
shuffled lines of a valid file. Those rarely form anchors, tags, directives,
block scalars or flow collections, so here the text is assembled from YAML
tokens instead, and also fed to `tc validate` as a subprocess. A file may be
rejected; the loader must return its result and never raise.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_support import child_environment

from reconciler.errors import JobFileError
from reconciler.spec import discover, load_job_file, status_path_for

KEYS = [
    "version",
    "name",
    "description",
    "batch_ids",
    "openai",
    "api_key",
    "base_url",
    "keboola",
    "stack_url",
    "queue_url",
    "token",
    "component_id",
    "configuration_id",
    "poll_interval_seconds",
    "suspend",
    "unknown",
    "",
]
SCALARS = [
    "batch_abc",
    "secret:key",
    "env:VAR",
    "file:/run/secret",
    "sk-abc123",
    "https://api.openai.com/v1",
    "http://127.0.0.1:1",
    "12345",
    "012345",
    "1_000",
    "1:20",
    "1e3",
    "0x1F",
    "yes",
    "no",
    "off",
    "~",
    "null",
    "true",
    "2026-01-05",
    ".inf",
    "'quoted'",
    '"double"',
    '"unterminated',
    "'it''s'",
    "!!str 12345",
    "!!binary aGVsbG8=",
    "!!python/object:os.system x",
    "&anchor value",
    "*anchor",
    "[a, b]",
    "{a: b}",
    "[",
    "{",
    "|",
    ">-",
    "# comment",
    "\t",
    "é",
    "\u0007",
    "-",
    "? ",
    ": ",
    "",
]
LINES = st.one_of(
    st.builds(
        lambda indent, dash, key, value: f"{indent}{dash}{key}: {value}",
        st.sampled_from(["", "  ", "    ", "\t"]),
        st.sampled_from(["", "- "]),
        st.sampled_from(KEYS),
        st.sampled_from(SCALARS),
    ),
    st.builds(
        lambda indent, value: f"{indent}- {value}",
        st.sampled_from(["", "  ", "    "]),
        st.sampled_from(SCALARS),
    ),
    st.sampled_from(["---", "...", "%YAML 1.1", "%TAG ! tag:x,2000:", "? key"]),
)
DOCUMENTS = st.builds(
    lambda lines, newline: newline.join(lines),
    st.lists(LINES, max_size=25),
    st.sampled_from(["\n", "\r\n"]),
)
PROPERTY_SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _check_loads(path: Path) -> None:
    try:
        job = load_job_file(path)
    except JobFileError:
        return
    assert (job.spec is None) == (job.error is not None)
    if job.error is not None:
        assert job.error.problems
        for problem in job.error.problems:
            assert problem.path == path
            assert problem.message.strip()


@PROPERTY_SETTINGS
@given(DOCUMENTS, st.booleans())
def test_token_yaml_never_raises(text: str, bom: bool) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "job.yaml"
        path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())

        _check_loads(path)


FILE_NAMES = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="/\x00"),
    min_size=1,
    max_size=30,
).filter(lambda name: name not in (".", ".."))


@settings(max_examples=150, deadline=None)
@given(st.lists(FILE_NAMES, min_size=1, max_size=6, unique=True), DOCUMENTS)
def test_any_file_names_discovered_safely(names: list[str], text: str) -> None:
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        for name in names:
            try:
                (root / f"{name}.yaml").write_text(text, encoding="utf-8")
            except OSError:
                continue  # a name too long for the file system

        try:
            jobs = discover(root)
        except JobFileError:
            return

        for job in jobs:
            assert job.path.parent == root
            assert status_path_for(job.path).parent == root
            assert (job.spec is None) == (job.error is not None)


@settings(max_examples=8, deadline=None)
@given(st.lists(DOCUMENTS, min_size=1, max_size=5))
def test_tc_validate_any_files(texts: list[str]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        paths = [root / f"job-{index}.yaml" for index in range(len(texts))]
        for path, text in zip(paths, texts, strict=True):
            path.write_text(text, encoding="utf-8", newline="")

        run = subprocess.run(
            [sys.executable, "-m", "reconciler", "validate", str(root)],
            env=child_environment(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

        assert run.returncode in (0, 1), run.stderr
        assert "Traceback" not in run.stderr, run.stderr
        for path in paths:
            assert f"ok      {path}" in run.stdout or f"invalid {path}" in run.stderr
