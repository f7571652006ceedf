"""Times of `morgan up` (cold and warm), image sizes and the dev stack's memory; prints numbers.

    .venv/bin/python bench/dev_stack.py          # warm: images already built
    .venv/bin/python bench/dev_stack.py --cold   # remove Morgan's images first (wheelhouse kept)

Cold here means every image is built again from the base image; the wheelhouse
(/var/cache/morgan/wheelhouse) is kept, so PyPI is not asked again (filling it
on a fresh machine took 46 s for 4.2 GB).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MORGAN = str(ROOT / ".venv" / "bin" / "morgan")
REPOS = (
    "morgan-runtime-slim", "morgan-runtime-core", "morgan-runtime-torch", "morgan-core",
    "morgan-llm", "morgan-stt", "morgan-tts", "morgan-local/consul", "morgan-local/traefik",
    "morgan-local/postgres", "morgan-local/redis", "morgan-local/prometheus",
)  # fmt: skip
UNITS = {"B": 1 / 2**20, "KiB": 1 / 1024, "MiB": 1.0, "GiB": 1024.0, "kB": 1 / 1024, "MB": 1.0}


def run(*cmd: str) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def timed_up() -> tuple[float, list[str]]:
    """Seconds `morgan up` took and the lines of the images it had to build."""
    start = time.monotonic()
    proc = subprocess.run([MORGAN, "up"], capture_output=True, text=True, check=False)
    took = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"morgan up failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return took, [line.strip() for line in proc.stdout.splitlines() if "built in" in line]


def mib(text: str) -> float:
    match = re.match(r"([\d.]+)\s*([A-Za-z]+)", text.strip())
    if not match:
        return 0.0
    return float(match.group(1)) * UNITS.get(match.group(2), 1.0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cold", action="store_true", help="remove Morgan's images first")
    args = parser.parse_args()
    subprocess.run([MORGAN, "down", "--volumes"], capture_output=True, check=False)
    if args.cold:
        # Service images first: a runtime image with children cannot be removed.
        for repo in sorted(REPOS, key=lambda r: r.startswith("morgan-runtime")):
            refs = [f"{repo}:{tag}" for tag in run("docker", "images", repo, "--format",
                                                    "{{.Tag}}").split()]  # fmt: skip
            if refs:
                subprocess.run(["docker", "rmi", "-f", *refs], capture_output=True, check=False)
        subprocess.run(["docker", "image", "prune", "-f"], capture_output=True, check=False)
    first, built = timed_up()
    print(f"morgan up ({'cold' if args.cold else 'warm'}, empty volumes): {first:.0f} s")
    for line in built:
        print(f"  {line}")
    second, built = timed_up()
    print(f"morgan up again (warm, stack running): {second:.0f} s, {len(built)} images rebuilt")
    for line in built:
        print(f"  {line}")
    time.sleep(20)  # let the services settle after start-up
    total = 0.0
    for line in run("docker", "stats", "--no-stream", "--format", "{{.Name}}\t{{.MemUsage}}")\
            .splitlines():  # fmt: skip
        name, usage = line.split("\t")
        used = mib(usage.split("/")[0])
        total += used
        print(f"  memory {name:<28} {used:8.1f} MiB")
    print(f"dev stack memory (docker stats, sum): {total:.0f} MiB")
    for repo in REPOS:
        size = run("docker", "images", repo, "--format", "{{.Tag}} {{.Size}}").split("\n")
        latest = next((s.split()[1] for s in size if s.startswith("latest ")), "-")
        print(f"  image {repo:<28} {latest}")


if __name__ == "__main__":
    main()
