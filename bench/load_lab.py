"""50 people talking to the lab's fleet at once, through its gateway (locust, headless).

Each simulated user keeps a conversation going, mostly text turns and now and then a
spoken one, a turn every 5-10 s (bench/lab_load/locustfile.py). Prints, per endpoint
and per stage (stt, llm, tts, storage, memory, and Morgan's own overhead = core's total
minus the model stages): p50/p95/p99, errors and requests/s. `--closed-loop` also steps
through user counts with no think time and reports the turns/s at which text p95
crosses 2 s. Numbers only; nothing passes or fails (the exit status is locust's: 1 when
a request failed).

Needs the lab deployed (`morgan lab up`, `morgan deploy --stack lab`). Traffic goes
to the lab's gateway only.

    .venv/bin/python bench/load_lab.py [--users 50] [--duration 120] [--closed-loop 5,10,20,40]
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "services")]

from morgan.deploy.outputs import load_outputs  # noqa: E402
from morgan.deploy.rollout import api_key_for  # noqa: E402
from morgan.lab import stack as st  # noqa: E402

LOCUSTFILE = REPO / "bench" / "lab_load" / "locustfile.py"
P95_TARGET_MS = 2000.0


@dataclass(frozen=True)
class Row:
    kind: str
    name: str
    count: int
    failures: int
    p50: float
    p95: float
    p99: float
    rps: float


@dataclass(frozen=True)
class Target:
    url: str
    api_key: str
    ca_file: Path
    wav: Path


def lab_target(stack: str, work: Path) -> Target:
    paths = st.paths(stack, REPO)
    config = st.load_config(stack, REPO)
    outputs = load_outputs(paths)
    ca_file = work / "ca.pem"
    ca_file.write_text(outputs["ca_certificate"])
    wav = work / "turn.wav"
    subprocess.run(["espeak-ng", "-s", "150", "-w", str(wav), "What is the weather like today?"],
                   check=True, timeout=30)  # fmt: skip
    key = api_key_for(config, outputs, ca_file, owner="bench-load", scopes=("admin",))
    return Target(outputs["gateway_url"].rstrip("/"), key, ca_file, wav)


def run_locust(target: Target, users: int, duration_s: int, think: float, out: Path) -> int:
    env = {
        **os.environ,
        "MORGAN_LOAD_WAV": str(target.wav),
        "MORGAN_LOAD_API_KEY": target.api_key,
        "MORGAN_LOAD_CA": str(target.ca_file),
        "MORGAN_LOAD_THINK": str(think),
    }
    argv = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
            "--host", target.url, "-u", str(users), "-r", str(max(1, users // 5)),
            "-t", f"{duration_s}s", "--stop-timeout", "60", "--csv", str(out),
            "--only-summary", "--loglevel", "WARNING"]  # fmt: skip
    pause = f"{5 * think:g}-{10 * think:g} s" if think else "none"
    print(f"locust: {users} users, {duration_s} s, think time {pause}", flush=True)
    return subprocess.run(argv, env=env, timeout=duration_s + 180, check=False).returncode


def read_stats(out: Path) -> list[Row]:
    with open(f"{out}_stats.csv", newline="") as f:
        return [Row(r["Type"], r["Name"], int(r["Request Count"]), int(r["Failure Count"]),
                    float(r["50%"] or 0), float(r["95%"] or 0), float(r["99%"] or 0),
                    float(r["Requests/s"] or 0))
                for r in csv.DictReader(f) if r["Name"] != "Aggregated"]  # fmt: skip


def print_table(rows: list[Row]) -> None:
    print(f"{'':6} {'name':18} {'count':>6} {'errors':>6} {'p50 ms':>8} {'p95 ms':>8}"
          f" {'p99 ms':>8} {'req/s':>7}")  # fmt: skip
    for r in sorted(rows, key=lambda r: (r.kind != "POST", r.name)):
        print(f"{r.kind:6} {r.name:18} {r.count:6d} {r.failures:6d} {r.p50:8.0f} {r.p95:8.0f}"
              f" {r.p99:8.0f} {r.rps:7.2f}")  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stack", default="lab")
    ap.add_argument("--users", type=int, default=50)
    ap.add_argument("--duration", type=int, default=120, help="seconds of load (<= 600)")
    ap.add_argument("--think", type=float, default=1.0,
                    help="scale of the 5-10 s between a user's turns (0: none)")  # fmt: skip
    ap.add_argument("--closed-loop", default="", help="user counts to step through, e.g. 5,10,20")
    ap.add_argument("--step-duration", type=int, default=45)
    args = ap.parse_args()
    if not 1 <= args.users <= 200 or not 5 <= args.duration <= 600:
        ap.error("--users must be 1-200 and --duration 5-600 s: the load is bounded")
    with tempfile.TemporaryDirectory(prefix="morgan-load-") as tmp:
        work = Path(tmp)
        target = lab_target(args.stack, work)
        status = run_locust(target, args.users, args.duration, args.think, work / "open")
        print_table(read_stats(work / "open"))
        for users in [int(u) for u in args.closed_loop.split(",") if u]:
            out = work / f"closed-{users}"
            status |= run_locust(target, users, args.step_duration, 0.0, out)
            text = next(r for r in read_stats(out) if r.name == "/api/text")
            crossed = "over" if text.p95 > P95_TARGET_MS else "under"
            print(f"closed loop, {users} users: {text.rps:.2f} text turns/s, p95 {text.p95:.0f} ms"
                  f" ({crossed} {P95_TARGET_MS:.0f} ms), {text.failures} errors")  # fmt: skip
    return status


if __name__ == "__main__":
    raise SystemExit(main())
