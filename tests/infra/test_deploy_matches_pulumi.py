"""`morgan deploy` runs the containers the Pulumi program declares, host by host.

The Pulumi program runs under mocks; `morgan deploy`'s `docker create` arguments are
built from the same deployment with stand-in secrets and certificates. Per container
both must agree on host, name, image, environment keys, uploaded files (with their modes
and owners), mounts, healthcheck, restart policy, memory limit, labels, network,
entrypoint, command, GPUs, capabilities and security options.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
from morgan.deploy.containers import HASH_LABEL, create_args, prepare
from morgan.deploy.pki import IssuedTls

from infra.config import load_stack_file
from infra.container_run import container_run
from infra.deployment import build_deployment
from infra.placement import make_plan
from tests.infra.mocks import unwrap
from tests.infra.program import build_under_mocks

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CONTAINER = "docker:index/container:Container"


def _pulumi_view(stack: str) -> dict[str, dict[str, Any]]:
    plan = make_plan(load_stack_file(ROOT / "stacks" / f"Pulumi.{stack}.yaml"))
    built = build_under_mocks(plan)
    images = {
        f"sha256:{r.name}": r.inputs["name"]
        for r in built.mocks.of_type("docker:index/remoteImage:RemoteImage")
    }
    volumes = {r.name: r.inputs["name"] for r in built.mocks.of_type("docker:index/volume:Volume")}
    out = {}
    for r in built.mocks.of_type(CONTAINER):
        i = unwrap(r.inputs)
        hc = i["healthcheck"]
        test = hc["tests"]
        out[r.name] = {
            "host": r.provider.split("::")[-1].split("_")[0].removesuffix("-docker"),
            "image": images.get(i["image"], i["image"]),
            "network": i["networkMode"],
            "env": sorted(e.split("=", 1)[0] for e in i["envs"]),
            "files": sorted(
                (u["file"], u["permissions"], u.get("owner"), u.get("group"))
                for u in i.get("uploads") or []
            ),
            "mounts": sorted(
                (
                    v.get("volumeName") or v.get("hostPath"),
                    v["containerPath"],
                    bool(v.get("readOnly")),
                )
                for v in i.get("volumes") or []
            ),
            "health": (
                test[1] if test[0] == "CMD-SHELL" else shlex.join(test[1:]),
                hc["interval"],
                hc["timeout"],
                hc["retries"],
                hc["startPeriod"],
            ),
            "restart": i["restart"]
            + (f":{int(i['maxRetryCount'])}" if i.get("maxRetryCount") else ""),
            "memory": f"{int(i['memory'])}m",
            "labels": sorted((lb["label"], lb["value"]) for lb in i["labels"]),
            "entrypoint": i.get("entrypoints") or [],
            "command": i.get("command") or [],
            "log": sorted(i["logOpts"].items()),
            "gpus": [d for r in i.get("deviceRequests") or [] for d in r["deviceIds"]],
            "cap_drop": (i.get("capabilities") or {}).get("drops") or [],
            "cap_add": (i.get("capabilities") or {}).get("adds") or [],
            "security_opt": i.get("securityOpts") or [],
            "scratch": sorted((i.get("tmpfs") or {}).items()),
        }
    for view in out.values():
        view["mounts"] = sorted(
            (volumes.get(name, name), path, ro) for name, path, ro in view["mounts"]
        )
    return out


def _flag_values(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == flag]


def _deploy_view(stack: str) -> dict[str, dict[str, Any]]:
    plan = make_plan(load_stack_file(ROOT / "stacks" / f"Pulumi.{stack}.yaml"))
    deployment = build_deployment(plan, ROOT)
    secrets = {s.name: f"secret-{s.name}" for s in deployment.secrets}
    tls = IssuedTls(ca="CA", cert="CERT", key="KEY")
    out = {}
    for spec in deployment.specs:
        prepared = prepare(container_run(spec), secrets, tls if spec.tls else None, "sha256:x")
        args = create_args(prepared)
        image_at = args.index(spec.image)
        entry = _flag_values(args, "--entrypoint")
        out[spec.name] = {
            "host": spec.host,
            "image": args[image_at],
            "network": _flag_values(args, "--network")[0],
            "env": sorted(prepared.env),
            "files": sorted(
                (path, f"{f.mode:04o}", *(map(str, f.owner) if f.owner else (None, None)))
                for path, f in prepared.files.items()
            ),
            "mounts": sorted(
                (v.split(":")[0], v.split(":")[1], v.endswith(":ro"))
                for v in _flag_values(args, "-v")
            ),
            "health": (
                _flag_values(args, "--health-cmd")[0],
                _flag_values(args, "--health-interval")[0],
                _flag_values(args, "--health-timeout")[0],
                float(_flag_values(args, "--health-retries")[0]),
                _flag_values(args, "--health-start-period")[0],
            ),
            "restart": _flag_values(args, "--restart")[0],
            "memory": _flag_values(args, "--memory")[0],
            "labels": sorted(
                tuple(lb.split("=", 1))
                for lb in _flag_values(args, "--label")
                if not lb.startswith(HASH_LABEL)
            ),
            "entrypoint": entry + args[image_at + 1 : image_at + len(spec.entrypoint or ())]
            if entry
            else [],
            "command": args[image_at + len(spec.entrypoint or ()) or image_at + 1 :]
            if spec.entrypoint
            else args[image_at + 1 :],
            "log": sorted(tuple(o.split("=", 1)) for o in _flag_values(args, "--log-opt")),
            "gpus": [
                d
                for g in _flag_values(args, "--gpus")
                for d in g.strip('"').removeprefix("device=").split(",")
            ],
            "cap_drop": [a.split("=", 1)[1] for a in args if a.startswith("--cap-drop=")],
            "cap_add": [a.split("=", 1)[1] for a in args if a.startswith("--cap-add=")],
            "security_opt": [o.replace("=", ":") for o in _flag_values(args, "--security-opt")],
            "scratch": sorted(tuple(t.split(":", 1)) for t in _flag_values(args, "--tmpfs")),
        }
    return out


@pytest.mark.parametrize("stack", ["lab", "homelab"])
def test_deploy_runs_what_pulumi_declares(stack: str) -> None:
    pulumi_side, deploy_side = _pulumi_view(stack), _deploy_view(stack)
    assert sorted(pulumi_side) == sorted(deploy_side)
    for name, declared in pulumi_side.items():
        assert deploy_side[name] == declared, name
    # The jobs run images that declare a data volume: both paths put a tmpfs there.
    jobs = {n: v["scratch"] for n, v in deploy_side.items() if n.endswith(("-app-role", "-create"))}
    assert jobs["morgan-postgres-app-role"] == [("/var/lib/postgresql/data", "size=16m")]
    if "morgan-redis-cluster-create" in jobs:
        assert jobs["morgan-redis-cluster-create"] == [("/data", "size=16m")]


def test_the_secrets_reach_deploy_only_on_stdin() -> None:
    """No secret value is on a `docker create` command line (it shows in `ps`)."""
    plan = make_plan(load_stack_file(ROOT / "stacks" / "Pulumi.lab.yaml"))
    deployment = build_deployment(plan, ROOT)
    secrets = {s.name: f"secret-{s.name}-value" for s in deployment.secrets}
    for spec in deployment.specs:
        prepared = prepare(container_run(spec), secrets, None if not spec.tls else
                           IssuedTls("CA", "CERT", "KEY"), "sha256:x")  # fmt: skip
        line = " ".join(create_args(prepared))
        assert "-value" not in line, spec.name
        if spec.secret_env:
            assert any("-value" in v for v in prepared.env.values()), spec.name


def test_deploy_outputs_have_the_pulumi_stacks_keys(tmp_path: Path) -> None:
    """`morgan verify` reads the outputs file as it would read `pulumi stack output --json`."""
    import json

    from morgan.deploy.outputs import write_outputs
    from morgan.lab.stack import StackPaths
    from morgan.shared.auth import compose_key

    plan = make_plan(load_stack_file(ROOT / "stacks" / "Pulumi.lab.yaml"))
    deployment = build_deployment(plan, ROOT)
    env = {s.variable: f"value-{s.name}" for s in deployment.secrets}
    env[deployment.service_key.variable] = compose_key("0123456789ab", "s" * 24)
    path = write_outputs(deployment, env, {"core": IssuedTls("CA", "C", "K")},
                         StackPaths(tmp_path, "lab"))  # fmt: skip
    written = json.loads(path.read_text())
    declared = set(build_under_mocks(plan).outputs)
    assert set(written) == declared | {"hosts", "containers"}
    assert written["core_service_key_id"] == "0123456789ab"
    assert written["ca_certificate"] == "CA"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
