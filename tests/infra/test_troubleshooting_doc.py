"""docs/operations/troubleshooting.md matches the code: each quoted message is still printed
by Morgan, each named query is a saved one, each LogQL selects a role the plan has, and
each metric it names is one Morgan exports."""

from __future__ import annotations

import re

import pytest

from infra.config import load_stack_file
from infra.configs.logs import SAVED_QUERIES
from infra.deployment import build_deployment
from infra.placement import make_plan
from tests.infra.conftest import ROOT

pytestmark = pytest.mark.unit

DOC = (ROOT / "docs" / "operations" / "troubleshooting.md").read_text()
SOURCES = "\n".join(p.read_text() for p in (ROOT / "services" / "morgan").rglob("*.py"))
LOGQL = re.compile(r'^\{job="containers", role=~"([^"]+)"\} \|= "[^"]+"$')


def _quoted(label: str) -> list[str]:
    return re.findall(rf"^- {label}: `([^`]+)`", DOC, flags=re.MULTILINE)


def test_each_message_is_one_morgan_still_prints() -> None:
    messages = _quoted("Message")
    assert len(messages) >= 4, messages
    for message in messages:
        assert message in SOURCES, f"no module under services/morgan prints {message!r}"


def test_each_named_query_is_a_saved_one() -> None:
    named = re.findall(r"query `([\w-]+)`", DOC) + [
        q for q in _quoted("Query") if not q.startswith("{")
    ]
    saved = {q.name for q in SAVED_QUERIES}
    assert named, "the page names no saved query"
    for name in named:
        assert name in saved, f"{name!r} is not a saved query ({sorted(saved)})"


def test_each_logql_selects_a_role_the_plan_has() -> None:
    plan = make_plan(load_stack_file(ROOT / "stacks" / "Pulumi.homelab.yaml"))
    roles = {s.role for s in build_deployment(plan, ROOT).specs}
    queries = [q for q in _quoted("Query") if q.startswith("{")]
    assert queries, "the page has no LogQL"
    for query in queries:
        match = LOGQL.match(query)
        assert match, f"{query!r} is not a stream selector with a line filter"
        selected = {r for r in roles if re.fullmatch(match.group(1), r)}
        assert selected, f"{query!r} selects none of the plan's roles {sorted(roles)}"


def test_each_metric_named_is_exported() -> None:
    metrics = set(re.findall(r"`(morgan_[a-z_]+)`", DOC))
    assert metrics, "the page names no metric"
    for metric in metrics:
        base = metric.removesuffix("_total")
        assert f'"{base}' in SOURCES, f"no Morgan metric is named {metric}"
