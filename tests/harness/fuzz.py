"""A bounded, repeatable schemathesis pass over one service's OpenAPI document."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import response_schema_conformance

_KEEP_PER_OPERATION = 3


@dataclass
class FuzzReport:
    operations: int = 0
    requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def summary(self) -> str:
        codes = ", ".join(f"{code}: {n}" for code, n in sorted(self.statuses.items()))
        lines = [f"{self.operations} operations, {self.requests} requests ({codes}), "
                 f"{len(self.failures)} failures"]  # fmt: skip
        return "\n".join([*lines, *self.failures])


def _fuzz_operation(
    operation: Any, mode: GenerationMode, base_url: str, headers: dict[str, str],
    max_examples: int, report: FuzzReport,
) -> None:  # fmt: skip
    found: list[str] = []

    @settings(max_examples=max_examples, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        report.requests += 1
        try:
            response = case.call_and_validate(
                base_url=base_url, headers=headers, timeout=60,
                checks=[not_a_server_error, response_schema_conformance],
            )  # fmt: skip
        except Exception as exc:  # a failed check names the request and the answer
            response = getattr(exc, "response", None)
            if len(found) < _KEEP_PER_OPERATION:
                found.append(
                    f"{operation.label} ({mode.value}): {type(exc).__name__}: {exc}"[:2000]
                )
        status = getattr(response, "status_code", 0)
        report.statuses[status] = report.statuses.get(status, 0) + 1

    try:
        run()
    except Unsatisfiable:
        # An operation without parameters or body has no invalid request to make.
        if mode is not GenerationMode.NEGATIVE:
            raise
    report.failures += found


def fuzz_schema(
    document: dict[str, Any], base_url: str, headers: dict[str, str], *, max_examples: int
) -> FuzzReport:
    """Send up to `max_examples` valid and as many invalid generated requests to every
    operation of `document` at `base_url`; collect each 5xx and each documented answer
    that does not match its schema. Hypothesis runs derandomized (a fixed seed, no example
    database), so a failure found once is found again."""
    schema = schemathesis.openapi.from_dict(document)
    report = FuzzReport()
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            report.failures.append(f"the document has an operation schemathesis cannot read: "
                                   f"{result.err()}")  # fmt: skip
            continue
        operation = result.ok()
        report.operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz_operation(operation, mode, base_url, headers, max_examples, report)
    return report
