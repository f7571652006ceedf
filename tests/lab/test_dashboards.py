"""Every dashboard panel's queries, evaluated on the lab's live Prometheus: a panel drawn
per host shows each of the lab's hosts, a panel drawn per service each deployed Morgan
service (core's and the model services' panels theirs, the database panels every host of
their server); event panels (retries, rejected updates) must at least run. The test makes
the traffic the turn panels draw: a text turn and a spoken one through the gateway."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, get_args

import httpx
import pytest
from morgan.deploy.outputs import load_outputs, monitoring_auth, write_ca_file
from morgan.deploy.rollout import DeployReport, api_key_for
from morgan.lab import stack as st
from morgan.lab.sample_audio import one_second_wav

from infra.configs import dashboards as dash
from infra.configs.observability import PORTS
from infra.placement import Plan, make_plan

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(3000)]


def _query(plan: Plan, ca_file: Path, auth: tuple[str, str], expr: str) -> list[dict[str, Any]]:
    host = plan.config.host(plan.hosts_of("prometheus")[0]).address
    answer = httpx.get(f"https://{host}:{PORTS['prometheus']}/api/v1/query",
                       params={"query": expr}, verify=str(ca_file), auth=auth,
                       timeout=10)  # fmt: skip
    body = answer.json()
    assert answer.status_code == 200 and body["status"] == "success", (expr, body)
    return list(body["data"]["result"])


def _missing(
    plan: Plan, ca_file: Path, auth: tuple[str, str], panel: dash.Panel
) -> dict[str, set[str]]:
    """Per query of the panel, the hosts or services it should show and does not."""
    label, expected = dash.expected_series(plan, panel.per)
    missing = {}
    for expr, _legend in panel.queries:
        seen = {s["metric"].get(label, "") for s in _query(plan, ca_file, auth, expr)}
        if expected - seen:
            missing[expr] = expected - seen
    return missing


def _turns(outputs: dict[str, Any], ca_file: Path) -> None:
    """A text turn and a spoken one (stt, llm, tts) through the gateway."""
    key = api_key_for(st.load_config("lab", ROOT), outputs, ca_file, owner="dashboards")
    with httpx.Client(base_url=outputs["gateway_url"], verify=str(ca_file), timeout=120,
                      headers={"X-API-Key": key}) as api:  # fmt: skip
        text = api.post("api/text", json={"text": "Hello from the dashboards test"})
        assert text.status_code == 200, text.text
        audio = api.post("api/audio", files={"file": ("hi.wav", one_second_wav(), "audio/wav")})
        assert audio.status_code == 200, audio.text
        assert audio.json()["audio_base64"], "the spoken turn came back without speech"


def test_every_panel_shows_every_host_and_service(lab_fleet: DeployReport, tmp_path: Path) -> None:
    plan = make_plan(st.load_config("lab", ROOT))
    outputs = load_outputs(st.paths("lab", ROOT))
    ca_file = write_ca_file(outputs, tmp_path)
    auth = monitoring_auth(outputs)
    _turns(outputs, ca_file)
    panels = [p for _uid, _title, ps in dash.boards(plan).values() for p in ps]
    assert {p.per for p in panels} == set(get_args(dash.Per))
    assert set(dash.dashboards(plan)) == {"morgan-overview.json", "morgan-services.json",
                                          "morgan-core.json", "morgan-models.json",
                                          "morgan-databases.json"}  # fmt: skip
    assert sum(p.per == "host" for p in panels) >= 5, "the lab runs node-exporter: host panels"
    # A fresh Prometheus needs two scrapes for a rate: bounded, every try logged.
    for attempt in range(1, 13):
        missing = {p.title: m for p in panels if (m := _missing(plan, ca_file, auth, p))}
        if not missing:
            break
        print(f"try {attempt}: panels without every host/service yet: {missing}")
        time.sleep(5)
    assert not missing, missing
