"""Error taxonomy, the code registry and its export, and severity rules."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from faultlens_sdk import (
    ConflictError,
    FaultlensError,
    NotFoundError,
    SeverityRule,
    registry,
)
from faultlens_sdk.errors import CodeRegistry
from faultlens_sdk.severity import SeverityClassifier


def test_ready_kinds_declare_status_code_severity_and_retry() -> None:
    expected = {
        "NOT_FOUND": (404, False),
        "VALIDATION_FAILED": (422, False),
        "CONFLICT": (409, False),
        "UNAUTHORIZED": (401, False),
        "FORBIDDEN": (403, False),
        "RATE_LIMITED": (429, True),
        "UPSTREAM_FAILURE": (502, True),
        "TIMEOUT": (504, True),
        "INTERNAL_ERROR": (500, False),
    }
    for code, (status, retryable) in expected.items():
        entry = registry.get(code)
        assert entry is not None, code
        assert (entry.status, entry.retryable) == (status, retryable)
        assert entry.public_message


def test_subclass_registers_and_inherits() -> None:
    class ChartSealed(ConflictError):
        code = "CHART_SEALED_TEST"
        public_message = "The chart is sealed."

    class ChartSealedAgain(ChartSealed):
        """No code of its own: answers as its parent, registers nothing new."""

    entry = registry.get("CHART_SEALED_TEST")
    assert entry is not None
    assert entry.status == 409 and entry.severity == "warning"
    assert entry.exception.endswith("ChartSealed")
    err = ChartSealedAgain("internal detail")
    assert err.code == "CHART_SEALED_TEST"
    assert err.client_detail == "The chart is sealed."
    assert str(err) == "internal detail"
    assert FaultlensError(public_message="per-instance").client_detail == "per-instance"


def test_bad_declarations_are_refused_at_class_definition() -> None:
    with pytest.raises(ValueError, match="UPPER_SNAKE_CASE"):

        class Lower(FaultlensError):
            code = "lower"

    with pytest.raises(ValueError, match="4xx or 5xx"):

        class Ok(FaultlensError):
            code = "NOT_AN_ERROR_STATUS"
            status = 200

    with pytest.raises(ValueError, match="defined twice"):

        class Duplicate(FaultlensError):
            code = "NOT_FOUND"


def test_registry_exports_json_and_markdown() -> None:
    local = CodeRegistry()
    local.register(NotFoundError)
    local.register(ConflictError)
    data = json.loads(local.to_json())
    assert [c["code"] for c in data["codes"]] == ["CONFLICT", "NOT_FOUND"]
    markdown = local.to_markdown()
    assert "| `NOT_FOUND` | 404 | info | no |" in markdown
    assert markdown.count("\n") == 4


def test_codes_command_lists_the_application_codes(tmp_path: Path) -> None:
    (tmp_path / "clinic_errors.py").write_text(
        textwrap.dedent(
            """
            from faultlens_sdk import ConflictError

            class PatientRecordLocked(ConflictError):
                code = "PATIENT_RECORD_LOCKED"
                public_message = "The record is being edited by someone else."
                retryable = True
            """
        )
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "faultlens_sdk", "codes", *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        )

    as_json = run("--module", "clinic_errors")
    assert as_json.returncode == 0, as_json.stderr
    codes = {c["code"]: c for c in json.loads(as_json.stdout)["codes"]}
    assert codes["PATIENT_RECORD_LOCKED"]["status"] == 409
    assert codes["PATIENT_RECORD_LOCKED"]["retryable"] is True
    assert "NOT_FOUND" in codes
    as_markdown = run("--module", "clinic_errors", "--format", "markdown")
    assert "| `PATIENT_RECORD_LOCKED` | 409 | warning | yes |" in as_markdown.stdout
    missing = run("--module", "no_such_module")
    assert missing.returncode == 2 and "cannot import no_such_module" in missing.stderr


class LegacyBillingError(Exception):
    pass


def test_severity_rules_and_defaults() -> None:
    classify = SeverityClassifier(
        [
            SeverityRule("info", exception=LegacyBillingError),
            SeverityRule("fatal", code="LEDGER_CORRUPT"),
            SeverityRule("warning", logger="payments.retry."),
            SeverityRule("error", exception="builtins.LookupError", status=404),
        ]
    ).classify
    assert classify(LegacyBillingError()) == "info"
    assert classify(RuntimeError(), code="LEDGER_CORRUPT") == "fatal"
    assert classify(None, logger="payments.retry.card") == "warning"
    assert classify(None, logger="payments.retryable") is None
    assert classify(KeyError("k"), status=404) == "error"
    # Defaults: 4xx are warnings, 5xx errors, interpreter-level failures fatal.
    assert classify(ValueError(), status=400) == "warning"
    assert classify(ValueError(), status=503) == "error"
    assert classify(MemoryError()) == "fatal"
    assert classify(ValueError()) is None
    # An error class's own severity wins over every rule.
    assert classify(NotFoundError(), status=404) == "info"


def test_a_rule_needs_something_to_match() -> None:
    with pytest.raises(ValueError, match="at least one field"):
        SeverityRule("error")
    with pytest.raises(ValueError, match="severity must be one of"):
        SeverityRule("loud", code="X")  # type: ignore[arg-type]
