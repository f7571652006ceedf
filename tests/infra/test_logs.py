"""Log alerts and saved LogQL queries, checked as far as this machine allows (Loki cannot be
run here): every stream label they select on is one Promtail ships, and every field they
read with `| json` is in the lines a real Morgan service writes (an access line of a 401,
of a 500, and the traceback of that 500). Loki's own parsing of them stays unverified."""

from __future__ import annotations

import io
import json
import logging
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import APIRouter
from morgan.shared.app import create_app
from morgan.shared.logging import JsonFormatter
from morgan.shared.settings import ServiceSettings

from infra.configs import logs as logs_cfg
from infra.configs import observability as obs
from infra.placement import Plan
from tests.harness.ports import free_port
from tests.harness.servers import ConsulServer
from tests.shared.helpers import UvicornThread

pytestmark = pytest.mark.integration

SELECTOR = re.compile(r"\{([^}]*)\}")
LABEL = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"')
# A label filter after `| json`: field, operator.
FILTER = re.compile(r"\|\s*(\w+)\s*(>=|<=|==|!=|=~|!~|=|>|<)\s*")


def _every_logql(plan: Plan) -> dict[str, str]:
    queries = {f"saved {q.name}": q.logql for q in logs_cfg.SAVED_QUERIES}
    queries |= {f"alert {a.name}": a.expr for a in logs_cfg.log_alerts()}
    return queries


def _promtail_labels(plan: Plan) -> set[str]:
    config = obs.promtail_config(plan, plan.hosts[0].name)
    scrape = config["scrape_configs"][0]
    labels = {k for k in scrape["static_configs"][0]["labels"] if not k.startswith("__")}
    for stage in scrape["pipeline_stages"]:
        labels |= set(stage.get("labels", {}))
    labels |= set(config["clients"][0]["external_labels"])
    return labels


@pytest.fixture(scope="module")
def logged_lines(consul_server: ConsulServer) -> Iterator[list[dict[str, Any]]]:
    """What a Morgan service writes for a 401 and for a 500 (with its traceback)."""
    router = APIRouter()

    @router.get("/api/boom")
    async def boom() -> None:
        raise RuntimeError("the disk is on fire")

    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter("morgan-logs-test", "h1"))
    answers = []
    for auth_enabled in (True, False):  # a 401, then (no key needed) the 500
        port = free_port()
        settings = ServiceSettings(
            service_name="morgan-logs-test", host="127.0.0.1", bind_host="127.0.0.1", port=port,
            consul_http_addr=consul_server.addr, auth_enabled=auth_enabled,
            register_in_consul=False,
        )  # type: ignore[call-arg]  # fmt: skip
        with UvicornThread(create_app(settings, routers=[router]), port=port):
            logging.getLogger().addHandler(handler)
            try:
                answers.append(httpx.get(f"http://127.0.0.1:{port}/api/boom", timeout=10))
                # The access line is written once the answer is sent: wait for it.
                status = f'"status": {answers[-1].status_code}'
                for _ in range(50):
                    if status in buffer.getvalue():
                        break
                    time.sleep(0.1)
            finally:
                logging.getLogger().removeHandler(handler)
    assert [a.status_code for a in answers] == [401, 500], [a.text for a in answers]
    yield [json.loads(line) for line in buffer.getvalue().splitlines() if line.startswith("{")]


def test_queries_select_only_labels_promtail_ships(homelab_plan: Plan) -> None:
    shipped = _promtail_labels(homelab_plan)
    assert {"job", "role", "level", "service", "host"} <= shipped, shipped
    for what, logql in _every_logql(homelab_plan).items():
        selectors = SELECTOR.findall(logql)
        assert selectors, f"{what}: no stream selector in {logql}"
        for selector in selectors:
            used = {name for name, _op in LABEL.findall(selector)}
            assert used and used <= shipped, f"{what}: {used - shipped} are not shipped"


def test_json_fields_are_in_what_the_services_write(
    homelab_plan: Plan, logged_lines: list[dict[str, Any]]
) -> None:
    access = [line for line in logged_lines if line.get("logger") == "morgan.access"]
    assert sorted(line["status"] for line in access) == [401, 500], access
    tracebacks = [line for line in logged_lines if "exception" in line]
    assert tracebacks and "the disk is on fire" in tracebacks[0]["exception"]
    written = {key for line in logged_lines for key in line}
    for what, logql in _every_logql(homelab_plan).items():
        if "| json" not in logql:
            continue
        fields = {name for name, _op in FILTER.findall(logql.split("| json", 1)[1])}
        assert fields, f"{what}: reads no field after | json"
        assert fields <= written, f"{what}: {fields - written} are in no Morgan log line"


def test_the_ruler_reads_the_rules_and_sends_to_alertmanager(homelab_plan: Plan) -> None:
    config = obs.loki_config(homelab_plan)
    ruler = config["ruler"]
    assert ruler["storage"]["local"]["directory"] == logs_cfg.RULES_DIR
    assert logs_cfg.RULES_FILE.startswith(f"{logs_cfg.RULES_DIR}/fake/")  # no auth: "fake"
    assert ruler["alertmanager_url"] == "https://h3.lan:9093"
    assert ruler["alertmanager_client"]["basic_auth_password"] == "${MONITORING_PASSWORD}"
    spec = next(s for s in _specs(homelab_plan) if s.role == "loki")
    assert "-config.expand-env=true" in spec.command
    assert [e.name for e in spec.secret_env] == ["MONITORING_PASSWORD"]
    files = {f.path for f in spec.files}
    assert logs_cfg.RULES_FILE in files
    groups = logs_cfg.loki_rules()["groups"]
    names = [r["alert"] for g in groups for r in g["rules"]]
    assert names == ["MorganLog5xxBurst", "MorganLogAuthFailures", "MorganLogTracebacks"]
    for rule in (r for g in groups for r in g["rules"]):
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert "count_over_time(" in rule["expr"] and "[5m]" in rule["expr"]


def _specs(plan: Plan) -> Any:
    from infra.specs import build_specs

    return build_specs(plan)


def test_the_logs_page_lists_every_query_and_alert() -> None:
    from tests.infra.conftest import ROOT

    page = (ROOT / "docs" / "operations" / "logs.md").read_text()
    for logql in [q.logql for q in logs_cfg.SAVED_QUERIES] + [
        a.expr for a in logs_cfg.log_alerts()
    ]:
        assert f"`{logql.replace('|', chr(92) + '|')}`" in page, logql
