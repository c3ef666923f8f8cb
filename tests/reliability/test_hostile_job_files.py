"""Hostile and odd job files, through `tc validate` and `tc apply`.

All cases sit in one job directory beside two valid jobs, one of them with a
UTF-8 byte order mark and CRLF line ends. Each hostile file must get exactly
one problem that names the file, the line where the file has one, and what
to do, and the valid jobs must be triggered as if the others were not there.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from reliability_support import (
    Run,
    Workspace,
    assert_clean_exit,
    scenario,
    terminal,
)

from reconciler.simulator import Simulator

VALID_JOBS = ("good", "bom-crlf")


@dataclass(frozen=True)
class Case:
    """A hostile job file and the problem `tc` must report for it.

    ``line`` is the line the problem must name, or None for a problem with
    the whole file. ``advice`` is part of the sentence that tells what to do.
    """

    filename: str
    line: int | None
    advice: str

    @property
    def job(self) -> str:
        return self.filename.removesuffix(".yaml")


def _replace(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


ALIAS_BOMB = (
    'a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]\n'
    "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
    "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
    "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
    "f: [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
)
COMPONENT_LINE = "component_id: kds-team.app-custom-python"
CONFIGURATION_LINE = "configuration_id: '12345'"


def _texts(good: str) -> dict[str, bytes]:
    """Return the hostile files' bytes by file name; ``good`` is a valid job."""
    texts = {
        "duplicate-key.yaml": "description: one\ndescription: two\n" + good,
        "yes-for-text.yaml": _replace(good, COMPONENT_LINE, "component_id: yes"),
        "no-for-text.yaml": _replace(good, CONFIGURATION_LINE, "configuration_id: no"),
        "off-for-text.yaml": _replace(good, COMPONENT_LINE, "component_id: off"),
        "id-012345.yaml": _replace(
            good, CONFIGURATION_LINE, "configuration_id: 012345"
        ),
        "id-1-000.yaml": _replace(good, CONFIGURATION_LINE, "configuration_id: 1_000"),
        "id-1-20.yaml": _replace(good, CONFIGURATION_LINE, "configuration_id: 1:20"),
        "id-1e3.yaml": _replace(good, CONFIGURATION_LINE, "configuration_id: 1e3"),
        "id-0x1f.yaml": _replace(good, CONFIGURATION_LINE, "configuration_id: 0x1F"),
        "tab-indent.yaml": _replace(good, "  api_key:", "\tapi_key:"),
        "two-documents.yaml": good + "---\n" + good,
        "alias-bomb.yaml": ALIAS_BOMB + good,
        "deep-nesting.yaml": "description: " + "[" * 5000 + "]" * 5000 + "\n" + good,
        "name-dot-dot.yaml": "name: ../x\n" + good,
        "name-control.yaml": 'name: "x\\u0007y"\n' + good,
        "bad Name.yaml": good,
    }
    data = {name: text.encode() for name, text in texts.items()}
    data["latin-1.yaml"] = ("description: caf\xe9\n" + good).encode("latin-1")
    data["megabytes.yaml"] = b"description: " + b"x" * (5 * 1024 * 1024) + b"\n"
    data["garbage.yaml"] = bytes(range(256)) * 20
    data["empty.yaml"] = b""
    return data


# Lines of the valid job text as yaml.safe_dump writes it.
COMPONENT_AT = 10
CONFIGURATION_AT = 11
CASES = [
    Case("duplicate-key.yaml", 2, "keep only one of them"),
    Case("yes-for-text.yaml", COMPONENT_AT, 'write it in quotes: "yes"'),
    Case("no-for-text.yaml", CONFIGURATION_AT, 'write it in quotes: "no"'),
    Case("off-for-text.yaml", COMPONENT_AT, 'write it in quotes: "off"'),
    Case("id-012345.yaml", CONFIGURATION_AT, 'write it in quotes: "012345"'),
    Case("id-1-000.yaml", CONFIGURATION_AT, 'write it in quotes: "1_000"'),
    Case("id-1-20.yaml", CONFIGURATION_AT, 'write it in quotes: "1:20"'),
    Case("id-1e3.yaml", CONFIGURATION_AT, 'write it in quotes: "1e3"'),
    Case("id-0x1f.yaml", CONFIGURATION_AT, 'write it in quotes: "0x1F"'),
    Case("tab-indent.yaml", 4, "use spaces"),
    Case("two-documents.yaml", 12, "remove the '---' separator"),
    Case("alias-bomb.yaml", 1, "write the value out"),
    Case("deep-nesting.yaml", 1, "check for unclosed brackets"),
    Case("name-dot-dot.yaml", 1, "remove the name key"),
    Case("name-control.yaml", 1, "remove the name key"),
    Case("bad Name.yaml", None, "rename the file, for example to bad-name.yaml"),
    Case("latin-1.yaml", 1, "save the file as UTF-8"),
    Case("megabytes.yaml", None, "check that this is the intended file"),
    Case("garbage.yaml", 1, "replace it with a YAML job file"),
    Case("empty.yaml", None, "a job file needs batch_ids, openai and keboola"),
    Case("link-outside.yaml", None, "copy the file into the job directory"),
]


@dataclass
class Outcome:
    """The job directory and what `tc validate` and `tc apply` printed."""

    workspace: Workspace
    validate: Run
    apply: Run


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outcome]:
    root: Path = tmp_path_factory.mktemp("hostile")
    simulator = Simulator(
        scenario({"batch_good": terminal(), "batch_bom_crlf": terminal()})
    )
    simulator.start()
    try:
        ws = Workspace(root, simulator)
        good = ws.job_text(["batch_good"])
        ws.write_bytes("good.yaml", good.encode())
        crlf = ws.job_text(["batch_bom_crlf"]).replace("\n", "\r\n")
        ws.write_bytes("bom-crlf.yaml", b"\xef\xbb\xbf" + crlf.encode())
        for filename, data in _texts(good).items():
            ws.write_bytes(filename, data)
        outside = root / "outside"
        outside.mkdir()
        (outside / "elsewhere.yaml").write_text(good, encoding="utf-8")
        os.symlink(outside / "elsewhere.yaml", ws.job_dir / "link-outside.yaml")

        validate = ws.tc("validate", str(ws.job_dir))
        apply = ws.apply()
        yield Outcome(ws, validate, apply)
    finally:
        simulator.stop()


def _problems(run: Run, path: Path) -> list[str]:
    """Return the problems printed for one file, each joined onto one line.

    The block of a file starts with ``invalid PATH``; each problem starts with
    the path, indented. Long lines may be wrapped, so lines are joined first.
    """
    blocks = re.split(r"^invalid ", run.stderr, flags=re.MULTILINE)
    prefix = f"{path}\n"
    block = next((b for b in blocks if b.startswith(prefix)), None)
    assert block is not None, f"no block for {path}\n{run.stderr}"
    starts = [
        m.start() for m in re.finditer(rf"^  {re.escape(str(path))}", block, re.M)
    ]
    ends = [*starts[1:], len(block)]
    return [" ".join(block[s:e].split()) for s, e in zip(starts, ends, strict=True)]


IDS = [case.job for case in CASES]


@pytest.mark.parametrize("command", ["validate", "apply"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_hostile_file_one_problem(outcome: Outcome, case: Case, command: str) -> None:
    run = outcome.validate if command == "validate" else outcome.apply
    path = outcome.workspace.job_dir / case.filename

    problems = _problems(run, path)

    assert len(problems) == 1, problems
    place = f"{path}:{case.line}:" if case.line is not None else f"{path}:"
    assert problems[0].startswith(place), problems[0]
    assert case.advice in problems[0]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_hostile_file_job_invalid(outcome: Outcome, case: Case) -> None:
    job = outcome.workspace.status_json()[case.job]

    assert job["status"] == "invalid"
    assert job["trigger"] is None
    assert case.advice in " ".join(job["error"]["message"].split())


def test_valid_jobs_unaffected(outcome: Outcome) -> None:
    ws = outcome.workspace

    assert ws.keboola_jobs_per_job() == {name: 1 for name in VALID_JOBS}
    files = ws.status_files()
    for name in VALID_JOBS:
        assert files[name]["status"] == "completed"
        assert files[name]["error"] is None
    assert f"ok      {ws.job_dir / 'good.yaml'}" in outcome.validate.stdout
    assert f"ok      {ws.job_dir / 'bom-crlf.yaml'}" in outcome.validate.stdout


def test_hostile_files_exit_cleanly(outcome: Outcome) -> None:
    for run in (outcome.validate, outcome.apply):
        assert_clean_exit(run)
        assert run.returncode == 1
        assert run.seconds < 30


def test_hostile_files_no_escape(outcome: Outcome) -> None:
    """Write nothing outside the job directory, whatever the names contain."""
    ws = outcome.workspace
    outside = ws.root / "outside"

    assert sorted(p.name for p in outside.iterdir()) == ["elsewhere.yaml"]
    assert not (ws.root / "x.status.yaml").exists()
    written = {p.name for p in ws.job_dir.glob("*.status.yaml")}
    expected = {f"{case.job}.status.yaml" for case in CASES}
    assert written == expected | {f"{name}.status.yaml" for name in VALID_JOBS}
