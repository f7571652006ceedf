"""Alerts reach a person: on the deployed lab, stopping a core replica fires
MorganServiceDown, Alertmanager delivers it to the stack's webhook receiver (a server this
test runs on the lab network), and delivers the resolved notice once the replica is back.
Silences and inhibition are driven with amtool inside the Alertmanager container."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from morgan.deploy.rollout import DeployReport, engines
from morgan.lab import hosts as lab
from morgan.lab import stack as st

from infra.deployment import build_deployment
from infra.placement import make_plan

ROOT = Path(__file__).resolve().parents[2]
RECEIVER = "lab-webhook"

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(3000)]


@dataclass
class Inbox:
    """Every notification Alertmanager POSTed, with the time it came."""

    received: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, body: dict[str, Any]) -> None:
        with self.lock:
            self.received.append((time.monotonic(), body))

    def alerts(self) -> list[tuple[float, str, dict[str, Any]]]:
        """(arrival, the notification's receiver, one alert) for every alert delivered."""
        with self.lock:
            return [(t, b["receiver"], a) for t, b in self.received for a in b["alerts"]]

    def wait_for(self, what: str, match: Callable[[dict[str, Any]], bool], seconds: float) -> float:
        """The arrival time of the first alert that matches; every 10 s, what came so far."""
        deadline = time.monotonic() + seconds
        next_report = time.monotonic() + 10
        while True:
            found = [t for t, _r, a in self.alerts() if match(a)]
            if found:
                return found[0]
            now = time.monotonic()
            if now >= next_report:
                seen = [(a["status"], a["labels"].get("alertname")) for _t, _r, a in self.alerts()]
                print(f"still waiting for {what}; delivered so far: {seen}")
                next_report = now + 10
            assert now < deadline, f"no {what} within {seconds:.0f} s; delivered: {self.alerts()}"
            time.sleep(0.5)


def _handler(inbox: Inbox) -> type[BaseHTTPRequestHandler]:
    class Webhook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            inbox.add(json.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Webhook


@pytest.fixture(scope="module")
def inbox(lab_fleet: DeployReport) -> Iterator[Inbox]:
    """The lab stack's webhook receiver, served on this machine's address on the lab network."""
    config = st.load_config("lab", ROOT)
    receiver = next(r for r in config.observability.alerting.receivers if r.name == RECEIVER)
    assert receiver.webhook is not None
    url = urlsplit(receiver.webhook.url)
    gateway = lab.network_gateway()
    assert url.hostname == gateway, (
        f"stacks/Pulumi.lab.yaml's {RECEIVER} points at {url.hostname}, but this machine is"
        f" {gateway} on the lab network"
    )
    box = Inbox()
    server = ThreadingHTTPServer((url.hostname, url.port or 80), _handler(box))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield box
    finally:
        server.shutdown()
        server.server_close()


def _amtool(*args: str) -> str:
    config = st.load_config("lab", ROOT)
    deployment = build_deployment(make_plan(config), ROOT)
    spec = deployment.of_role("alertmanager")[0]
    return engines(config, ROOT)[spec.host].text("exec", spec.name, "amtool", *args, timeout=60)


def _is(alertname: str, status: str, **labels: str) -> Callable[[dict[str, Any]], bool]:
    def match(alert: dict[str, Any]) -> bool:
        have = alert["labels"]
        return (
            alert["status"] == status
            and have.get("alertname") == alertname
            and all(have.get(k) == v for k, v in labels.items())
        )

    return match


def test_a_stopped_core_replica_is_alerted_and_then_resolved(inbox: Inbox) -> None:
    config = st.load_config("lab", ROOT)
    deployment = build_deployment(make_plan(config), ROOT)
    victim = deployment.of_role("core")[-1]
    engine = engines(config, ROOT)[victim.host]
    labels = {"service": "morgan-core", "host": victim.host}
    started = time.monotonic()
    engine.text("stop", victim.name, timeout=120)
    try:
        fired = inbox.wait_for(
            f"MorganServiceDown for {victim.name}",
            _is("MorganServiceDown", "firing", **labels),
            180,
        )
        print(f"{victim.name} stopped; the down alert reached the webhook in"
              f" {fired - started:.1f} s")  # fmt: skip
    finally:
        back = time.monotonic()
        engine.text("start", victim.name, timeout=120)
    resolved = inbox.wait_for(
        f"the resolved notice for {victim.name}",
        _is("MorganServiceDown", "resolved", **labels),
        240,
    )
    print(f"{victim.name} started; the resolved notice came {resolved - back:.1f} s later")
    delivered = [(r, a) for _t, r, a in inbox.alerts() if a["labels"].get("host") == victim.host]
    assert all(r == RECEIVER for r, _a in delivered), delivered
    is_down = _is("MorganServiceDown", "firing", **labels)
    firing = next(a for _t, _r, a in inbox.alerts() if is_down(a))
    assert firing["labels"]["severity"] == "critical"
    assert firing["annotations"]["summary"] == f"morgan-core on {victim.host} is down"


def test_silenced_and_inhibited_alerts_stay_quiet(inbox: Inbox) -> None:
    """A silence keeps its alert from the receiver while an unsilenced twin arrives; a
    service's down alert inhibits its warnings. amtool shows both states."""
    probe = f"morgan-probe-{uuid.uuid4().hex[:8]}"
    end = (datetime.now(UTC) + timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    silence = _amtool("silence", "add", "--duration=10m", "--comment=lab test",
                      "alertname=MorganSilenceProbe", f"service={probe}").strip()  # fmt: skip
    assert silence, "amtool printed no silence id"
    try:
        for name, severity in (("MorganSilenceProbe", "critical"),
                               ("MorganSilenceControl", "critical"),
                               ("MorganServiceDown", "critical"),
                               ("MorganHighErrorRate", "warning")):  # fmt: skip
            _amtool("alert", "add", f"alertname={name}", f"service={probe}",
                    f"severity={severity}", f"--end={end}",
                    "--annotation=summary=lab test alert")  # fmt: skip
        control = inbox.wait_for(
            "the unsilenced control alert",
            _is("MorganSilenceControl", "firing", service=probe),
            120,
        )
        inbox.wait_for("the inhibiting down alert",
                       _is("MorganServiceDown", "firing", service=probe), 120)  # fmt: skip
        # Both were added before the control arrived; give the others one more group
        # interval (10 s in the lab stack) to show up if they were not held back.
        time.sleep(max(0.0, control + 15 - time.monotonic()))
        names = {a["labels"]["alertname"] for _t, _r, a in inbox.alerts()
                 if a["labels"].get("service") == probe}  # fmt: skip
        assert names == {"MorganSilenceControl", "MorganServiceDown"}, names
        silenced = json.loads(_amtool("alert", "query", "--silenced", "-o", "json",
                                      f"service={probe}"))  # fmt: skip
        assert [a["labels"]["alertname"] for a in silenced] == ["MorganSilenceProbe"]
        assert silenced[0]["status"]["silencedBy"] == [silence]
        inhibited = json.loads(_amtool("alert", "query", "--inhibited", "-o", "json",
                                       f"service={probe}"))  # fmt: skip
        assert [a["labels"]["alertname"] for a in inhibited] == ["MorganHighErrorRate"]
    finally:
        _amtool("silence", "expire", silence)
