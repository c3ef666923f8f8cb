"""Reusing the stored spec of a job file whose bytes did not change."""

from __future__ import annotations

from pathlib import Path

from reconciler.spec import load_job_file

JOB = """\
batch_ids:
  - batch_a
  - batch_b
openai:
  api_key: env:KEY
keboola:
  stack_url: https://connection.keboola.com
  token: env:TOKEN
  component_id: kds-team.app-custom-python
  configuration_id: "1"
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_same_bytes_reuse_known_spec(tmp_path: Path) -> None:
    path = _write(tmp_path, JOB)
    first = load_job_file(path)
    assert first.spec is not None
    stored = first.spec.model_dump(mode="json")
    stored["description"] = "from the database"
    again = load_job_file(path, known={"job": (first.revision, stored)})
    assert again.spec is not None
    assert again.spec.description == "from the database"


def test_changed_bytes_parse_again(tmp_path: Path) -> None:
    path = _write(tmp_path, JOB)
    first = load_job_file(path)
    assert first.spec is not None
    stored = first.spec.model_dump(mode="json")
    path.write_text(JOB.replace("batch_b", "batch_c"), encoding="utf-8")
    again = load_job_file(path, known={"job": (first.revision, stored)})
    assert again.spec is not None
    assert again.spec.batch_ids == ["batch_a", "batch_c"]


def test_lower_limit_judges_known_file(tmp_path: Path) -> None:
    path = _write(tmp_path, JOB)
    first = load_job_file(path)
    assert first.spec is not None
    stored = first.spec.model_dump(mode="json")
    again = load_job_file(
        path, max_batch_ids=1, known={"job": (first.revision, stored)}
    )
    assert again.spec is None
    assert again.error is not None
    assert "TC_MAX_BATCH_IDS" in str(again.error)
