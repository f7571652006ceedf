"""A deployed stack's outputs: the JSON `morgan deploy` writes, which has the keys that
`pulumi stack output --json --show-secrets` gives for the same stack (infra/outputs.py),
and what `morgan verify`, the chaos tests and the lab bench read back.

`morgan verify --outputs FILE` reads a file a pipeline saved from `pulumi stack output`
instead of `morgan deploy`'s own: both go through `read_outputs`, which names what is
wrong with a file before any check runs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from infra.configs.monitoring_auth import MONITORING_USER
from infra.deployment import Deployment, secret_variable
from morgan.deploy.engine import DeployError
from morgan.deploy.pki import IssuedTls
from morgan.lab.secrets import DASHBOARD_PASSWORD
from morgan.lab.stack import StackPaths
from morgan.shared.auth import parse_key

# What `morgan verify` needs of a fleet's outputs: the gateway it sends turns through, the
# CA it trusts there, and the Consul API and token it makes its own API key with.
REQUIRED = ("gateway_url", "ca_certificate", "consul_ui_url", "consul_management_token")
# `morgan verify --outputs FILE` hands FILE to the checks through this variable.
OUTPUTS_ENV = "MORGAN_OUTPUTS"
PULUMI_OUTPUTS_COMMAND = "pulumi stack output --json --show-secrets > FILE"
# How `pulumi stack output --json` prints a secret without --show-secrets.
PULUMI_HIDDEN_SECRET = "[secret]"


def outputs_file(p: StackPaths) -> Path:
    return p.state / "outputs.json"


def write_outputs(
    deployment: Deployment, env: dict[str, str], tls: dict[str, IssuedTls], p: StackPaths
) -> Path:
    """What `pulumi stack output --json --show-secrets` gives for the stack (infra/outputs.py),
    plus where each host is reached and which containers it runs."""
    ep = deployment.endpoints
    ca = next(iter(tls.values())).ca if tls else None
    store_key = env[deployment.service_key.variable]
    outputs = {
        "gateway_url": f"{ep.gateway_url}/",
        "traefik_dashboard_url": ep.dashboard_url,
        "traefik_dashboard_password": env.get(DASHBOARD_PASSWORD),
        "consul_ui_url": f"{ep.consul.url}/ui/",
        "consul_management_token": env[secret_variable("consul_management_token")],
        "grafana_url": f"{ep.grafana.url}/" if ep.grafana else None,
        "grafana_admin_password": env.get(secret_variable("grafana_admin_password")),
        "monitoring_password": env.get(secret_variable("monitoring_password")),
        "services_by_host": deployment.plan.by_host(),
        "ca_certificate": ca,
        # tcp:// hosts' daemon certificates are the operator's (the lab makes its own CA).
        "docker_ca_certificate": None,
        "kv_keys": sorted(deployment.kv),
        "core_service_key_id": parse_key(store_key)[0],
        "hosts": {
            h.name: {"docker": h.docker, "address": h.address} for h in deployment.plan.hosts
        },
        "containers": {
            host: [s.name for s in deployment.rendered_specs(host, kv_seed=False)]
            for host in deployment.hosts
        },
    }
    path = outputs_file(p)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(outputs, indent=2) + "\n")
    os.chmod(path, 0o600)
    return path


def read_outputs(path: Path, made_by: str) -> dict[str, Any]:
    """The outputs in `path`, with every key `morgan verify` needs present and readable.

    `made_by` is the command that writes such a file, named in the errors.
    """
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DeployError(f"no stack outputs at {path}; run `{made_by}` first") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DeployError(f"cannot read the stack outputs {path}: {error}") from None
    except json.JSONDecodeError as error:
        raise DeployError(
            f"{path} is not JSON ({error.msg}, line {error.lineno}); write it with `{made_by}`"
        ) from None
    if not isinstance(data, dict):
        raise DeployError(
            f"{path} holds a JSON {type(data).__name__}, not the stack's outputs object;"
            f" write it with `{made_by}`"
        )
    missing = [k for k in REQUIRED if not data.get(k)]
    if missing:
        raise DeployError(
            f"{path} lacks {', '.join(missing)}: is it the outputs of a stack deployed with"
            f" internal TLS? write it with `{made_by}`"
        )
    hidden = sorted(k for k, v in data.items() if v == PULUMI_HIDDEN_SECRET)
    if hidden:
        raise DeployError(
            f"{path} has {', '.join(hidden)} as {PULUMI_HIDDEN_SECRET!r}: add --show-secrets"
            " (`pulumi stack output --json --show-secrets`)"
        )
    return data


def load_outputs(p: StackPaths) -> dict[str, Any]:
    """The outputs `morgan deploy` wrote for the stack on this machine."""
    return read_outputs(outputs_file(p), made_by=f"morgan deploy --stack {p.stack}")


def monitoring_auth(outputs: dict[str, Any]) -> tuple[str, str]:
    """User and password of Prometheus' and Alertmanager's basic auth."""
    password = outputs.get("monitoring_password")
    if not password:
        raise DeployError(
            "the stack's outputs have no monitoring_password (Prometheus and Alertmanager ask"
            " for it): they predate it; deploy the stack again (`morgan deploy` or"
            " `pulumi up`) and read the outputs anew"
        )
    return MONITORING_USER, str(password)


def consul_api_url(outputs: dict[str, Any]) -> str:
    """The stack's Consul HTTP API, e.g. `https://10.213.87.11:8501`."""
    return str(outputs["consul_ui_url"]).removesuffix("/ui/")


def consul_factory(outputs: dict[str, Any], ca_file: Path, timeout: float = 10.0) -> Any:
    """A ConsulClientFactory for the stack's Consul API as its operator (the management
    token), verifying it against the fleet CA in `ca_file` (`write_ca_file`)."""
    from morgan.shared.consul_client import ConsulClientFactory, parse_consul_addr

    scheme, host, port = parse_consul_addr(consul_api_url(outputs))
    return ConsulClientFactory(scheme=scheme, host=host, port=port,
                               token=str(outputs["consul_management_token"]),
                               cacert=str(ca_file) if scheme == "https" else None,
                               timeout=timeout)  # fmt: skip


def write_ca_file(outputs: dict[str, Any], directory: Path) -> Path:
    """The fleet CA from the outputs as `directory`/ca.pem, for clients that verify the
    fleet's listeners (httpx, Consul's API, Prometheus)."""
    path = directory / "ca.pem"
    path.write_text(outputs["ca_certificate"])
    return path
