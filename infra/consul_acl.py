"""Consul ACL identities of a fleet: who may do what in Consul, and how it is applied.

Every container that talks to Consul holds a token scoped to what it does:

- each Morgan service (`consul_token_<service>`): its own registration (a service
  identity) and reading its own config keys, the global ones and the key records;
- Patroni (`consul_token_patroni`): its leader key and sessions;
- each client agent (`consul_agent_token_<host>`, one per host): its own node (a node
  identity) and the supporting servers of its host, which it registers from its config
  files: an agent taken over cannot act as another host's agent;
- anyone without a token (the anonymous token): DNS and reading the catalogue, which is
  what Traefik and Prometheus do.

The management token stays with the Consul servers (and the deploy machine). A stack
whose servers also serve their host's containers (`consul.agent_on_server_hosts: false`,
the dev stack) keeps the management token as the loopback API's default token and no
scoped tokens (`scoped_tokens`). Pulumi (infra.components.consul_acl) and `morgan
deploy` both apply `acl_plan(plan)` with `apply_acl` once the servers run, and
`prune_acl` (the tokens a rotated secret replaced) once every container runs.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from infra.configs import consul as consul_cfg
from infra.configs.patroni import NAMESPACE as PATRONI_NAMESPACE
from infra.placement import Plan

log = logging.getLogger(__name__)

# The Morgan services that hold their own token; their secret is consul_token_<service>.
TOKEN_SERVICES = ("core", "llm", "stt", "tts", "vad")
# The client agents' tokens, one per host: consul_agent_token_<host> (agent_token_secret).
AGENT_TOKEN_SECRET = "consul_agent_token"
PATRONI_TOKEN_SECRET = "consul_token_patroni"
# Consul's built-in anonymous token (its accessor id is fixed).
ANONYMOUS_ACCESSOR = "00000000-0000-0000-0000-000000000002"
POLICY_PREFIX = "morgan-"
KV_CONFIG = "morgan/config/"
KV_AUTH = "morgan/auth/"

_READ = {"policy": "read"}
_WRITE = {"policy": "write"}
# DNS and the catalogue: what a request without a token may do.
ANONYMOUS_RULES: dict[str, Any] = {"node_prefix": {"": _READ}, "service_prefix": {"": _READ}}


def service_token_secret(service: str) -> str:
    return f"consul_token_{service}"


def host_slug(host: str) -> str:
    """A host name as it appears in secret and policy names (`h1.lan` -> `h1_lan`)."""
    return re.sub(r"[^a-z0-9]+", "_", host.lower()).strip("_")


def agent_token_secret(host: str) -> str:
    """The secret holding the client agent's token on `host`."""
    return f"{AGENT_TOKEN_SECRET}_{host_slug(host)}"


@dataclass(frozen=True)
class AclIdentity:
    """One token and its policy: `rules` in Consul's JSON rule form."""

    name: str
    secret: str
    description: str
    rules: dict[str, Any]
    service_identities: tuple[str, ...] = ()
    node_identities: tuple[str, ...] = ()

    @property
    def policy(self) -> str:
        return f"{POLICY_PREFIX}{self.name}"


@dataclass(frozen=True)
class AclPlan:
    datacenter: str
    identities: tuple[AclIdentity, ...]
    anonymous_rules: dict[str, Any] = field(default_factory=lambda: dict(ANONYMOUS_RULES))

    def secrets(self) -> tuple[str, ...]:
        return tuple(i.secret for i in self.identities)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (a Pulumi resource's inputs); `from_dict` reads it back."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AclPlan:
        identities = tuple(
            AclIdentity(
                name=i["name"],
                secret=i["secret"],
                description=i["description"],
                rules=dict(i["rules"]),
                service_identities=tuple(i.get("service_identities") or ()),
                node_identities=tuple(i.get("node_identities") or ()),
            )
            for i in data.get("identities") or ()
        )
        return cls(data["datacenter"], identities, dict(data["anonymous_rules"]))


def scoped_tokens(plan: Plan) -> bool:
    """Whether the stack's containers hold scoped tokens: only where every host's
    containers reach a client agent (no server doubles as its host's agent)."""
    return plan.config.consul.agent_on_server_hosts


def client_agent_hosts(plan: Plan) -> tuple[str, ...]:
    return tuple(dict.fromkeys(r.host for r in plan.replicas if r.role == "consul-agent"))


def host_secrets(plan: Plan) -> tuple[str, ...]:
    """The per-host secrets of the stack: each client agent's token, where the stack has
    scoped tokens."""
    if not scoped_tokens(plan):
        return ()
    return tuple(agent_token_secret(host) for host in client_agent_hosts(plan))


def _service_rules(service: str) -> dict[str, Any]:
    return {
        "key_prefix": {
            f"{KV_CONFIG}{service}/": _READ,
            f"{KV_CONFIG}global/": _READ,
            # API key records: core checks users' keys, the model services core's key.
            KV_AUTH: _READ,
        }
    }


def _agent_rules(plan: Plan, host: str) -> dict[str, Any]:
    # The supporting servers this host's agent registers from its config files.
    registered = sorted({d["name"] for d in consul_cfg.service_definitions(plan, host)})
    rules: dict[str, Any] = {
        # `consul members` (the agent container's health check) lists every node.
        "node_prefix": {"": _READ},
    }
    if registered:
        rules["service"] = {name: _WRITE for name in registered}
    return rules


def _patroni_rules() -> dict[str, Any]:
    return {
        "key_prefix": {PATRONI_NAMESPACE.strip("/") + "/": _WRITE},
        "session_prefix": {"": _WRITE},
        "node_prefix": {"": _READ},
        "agent_prefix": {"": _READ},
        "service_prefix": {"": _READ},
    }


def acl_plan(plan: Plan) -> AclPlan:
    """The identities of the plan's Consul clients; none where `scoped_tokens` is off."""
    datacenter = plan.config.consul.datacenter
    if not scoped_tokens(plan):
        return AclPlan(datacenter, ())
    roles = {r.role for r in plan.replicas}
    out: list[AclIdentity] = []
    for host in client_agent_hosts(plan):
        out.append(
            AclIdentity(
                name=f"agent-{host_slug(host)}",
                secret=agent_token_secret(host),
                description=f"the Consul client agent on {host}: its node and the servers "
                "it registers",
                rules=_agent_rules(plan, host),
                node_identities=(host,),
            )
        )
    for service in TOKEN_SERVICES:
        if service in roles:
            out.append(
                AclIdentity(
                    name=service,
                    secret=service_token_secret(service),
                    description=f"morgan-{service}: its registration and its config keys",
                    rules=_service_rules(service),
                    service_identities=(f"morgan-{service}",),
                )
            )
    if plan.config.postgres.ha == "patroni" and "postgres-primary" in roles:
        out.append(
            AclIdentity(
                name="patroni",
                secret=PATRONI_TOKEN_SECRET,
                description="Patroni: its leader key and sessions",
                rules=_patroni_rules(),
            )
        )
    return AclPlan(datacenter, tuple(out))


def token_secret(plan: Plan, secret: str, fallback: str = "consul_management_token") -> str:
    """The secret that is a container's Consul token: its scoped token where the stack has
    them, else the management token (the dev stack's loopback API)."""
    return secret if scoped_tokens(plan) else fallback


# Applying --------------------------------------------------------------------------------


# How long a first apply waits for a fresh cluster's ACL system: the servers elect a
# leader, then create the management token; until then Consul answers "ACL not found".
ACL_READY_WAIT_S = 90.0


def _policy_ids(client: Any, token: str) -> dict[str, str]:
    return {p["Name"]: p["ID"] for p in client.acl.policy.list(token=token)}


def _policies_once_ready(client: Any, token: str, wait_s: float) -> dict[str, str]:
    """The existing policies, once Consul accepts the management token (logs each try)."""
    import consul
    import tenacity

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_delay(wait_s),
        wait=tenacity.wait_exponential(multiplier=0.25, max=4),
        retry=tenacity.retry_if_exception_type(consul.ConsulException),
        before_sleep=tenacity.before_sleep_log(log, logging.WARNING),
        reraise=False,
    )
    try:
        return retrying(_policy_ids, client, token)
    except tenacity.RetryError as error:
        raise RuntimeError(
            f"Consul did not accept the management token for {wait_s:g} s"
            f" ({error.last_attempt.exception()!r}); its ACL system is not bootstrapped."
            " Check the servers' logs for `initial_management` and that they elected a"
            " leader (`consul operator raft list-peers`)"
        ) from None


def _upsert_policy(
    client: Any, token: str, existing: dict[str, str], name: str, description: str,
    rules: dict[str, Any],
) -> None:  # fmt: skip
    if name in existing:
        client.acl.policy.update(
            existing[name], name, token=token, description=description, rules=rules
        )
    else:
        client.acl.policy.create(name, token=token, description=description, rules=rules)


def _accessor(client: Any, secret_id: str) -> str | None:
    """The accessor id of the token with this secret, or None when Consul has none."""
    import consul

    try:
        return str(client.acl.token.read_self(token=secret_id)["AccessorID"])
    except (consul.ACLPermissionDenied, consul.NotFound):
        return None


def apply_acl(
    client: Any, token: str, acl: AclPlan, secret_ids: dict[str, str],
    wait_s: float = ACL_READY_WAIT_S,
) -> int:  # fmt: skip
    """Create or update every policy and token of `acl` (tokens keep the secret ids the
    stack made) and scope the anonymous token; returns how many tokens it wrote.
    Idempotent: a second run changes nothing."""
    if not acl.identities:
        return 0
    existing = _policies_once_ready(client, token, wait_s)
    anonymous = f"{POLICY_PREFIX}anonymous"
    _upsert_policy(client, token, existing, anonymous,
                   "DNS and the service catalogue, for requests without a token",
                   acl.anonymous_rules)  # fmt: skip
    client.acl.token.update(
        ANONYMOUS_ACCESSOR, token=token, description="Anonymous Token",
        policies_name=[anonymous],
    )  # fmt: skip
    for identity in acl.identities:
        _upsert_policy(client, token, existing, identity.policy, identity.description,
                       identity.rules)  # fmt: skip
        fields: dict[str, Any] = {
            "description": identity.description,
            "policies_name": [identity.policy],
            "service_identities": [{"ServiceName": s} for s in identity.service_identities] or None,
            "node_identities": [f"{n}:{acl.datacenter}" for n in identity.node_identities] or None,
        }
        secret_id = secret_ids[identity.secret]
        accessor = _accessor(client, secret_id)
        if accessor is None:
            made = client.acl.token.create(token=token, secret_id=secret_id, **fields)
            accessor = str(made["AccessorID"])
        else:
            client.acl.token.update(accessor, token=token, secret_id=secret_id, **fields)
        log.info("Consul token %s: policy %s", identity.name, identity.policy)
    return len(acl.identities)


def prune_acl(client: Any, token: str, acl: AclPlan, secret_ids: dict[str, str]) -> int:
    """Delete the tokens a rotated secret replaced (those of an identity's policy other
    than its current one), and the policies (with their tokens) of identities the stack
    no longer has: a host that left, or the client agents' one shared token of earlier
    releases. Returns how many tokens it deleted. Run once the containers hold the new
    tokens: until then the old ones keep the running containers working."""
    policies = _policy_ids(client, token)
    deleted = 0
    for identity in acl.identities:
        current = _accessor(client, secret_ids[identity.secret])
        if current is None or identity.policy not in policies:
            continue
        for held in client.acl.token.list(policy=policies[identity.policy], token=token):
            if held["AccessorID"] != current:
                client.acl.token.delete(held["AccessorID"], token=token)
                deleted += 1
                log.info("Consul token %s: deleted the one it replaced", identity.name)
    kept = {i.policy for i in acl.identities} | {f"{POLICY_PREFIX}anonymous"}
    for name, policy_id in policies.items():
        if not name.startswith(POLICY_PREFIX) or name in kept or not acl.identities:
            continue
        for held in client.acl.token.list(policy=policy_id, token=token):
            client.acl.token.delete(held["AccessorID"], token=token)
            deleted += 1
        client.acl.policy.delete(policy_id, token=token)
        log.info("Consul policy %s: the stack has no such identity now; deleted", name)
    return deleted


def remove_acl(client: Any, token: str, acl: AclPlan, secret_ids: dict[str, str]) -> None:
    """Delete the identities' tokens and policies (the anonymous token keeps its policy
    until the stack is gone: Consul refuses to delete a policy a token uses)."""
    for identity in acl.identities:
        accessor = _accessor(client, secret_ids[identity.secret])
        if accessor is not None:
            client.acl.token.delete(accessor, token=token)
    existing = _policy_ids(client, token)
    for identity in acl.identities:
        if identity.policy in existing:
            client.acl.policy.delete(existing[identity.policy], token=token)
