"""Container specs of consul servers and client agents."""

from __future__ import annotations

from infra import consul_acl
from infra.configs import consul as consul_cfg
from infra.model import (
    TLS_DIR,
    ConfigFile,
    ContainerSpec,
    Healthcheck,
    Port,
    SecretFile,
    Volume,
)
from infra.placement import Plan, Replica
from infra.spec_common import (
    role_labels,
    tls_files,
)
from infra.support_privileges import image_user, support_privileges


def consul_spec(plan: Plan, replica: Replica) -> ContainerSpec:
    cfg = plan.config
    server = replica.role == "consul-server"
    tls = cfg.security.internal_tls
    document = consul_cfg.agent_config(plan, replica.host, server=server)
    ports_cfg = document["ports"]
    # Serf gossips over UDP and falls back to TCP: a firewall must pass both.
    ports = [
        Port(p, protocol=proto, encryption="gossip", purpose=k)
        for k, p in ports_cfg.items()
        if k in ("serf_lan", "serf_wan") and p > 0
        for proto in ("tcp", "udp")
    ]
    if server:
        ports.append(Port(ports_cfg["server"], encryption="tls" if tls else "none", purpose="rpc"))
    http_key = "https" if tls else "http"
    http_port = ports_cfg[http_key]
    remote = consul_cfg.serves_remote_api(plan, replica.host, server=server)
    ports.append(Port(http_port, encryption="tls" if tls else "none", purpose="http api",
                      loopback_only=not remote))  # fmt: skip
    if ports_cfg.get("dns", -1) > 0:
        # Consul answers DNS over UDP and over TCP (for long answers), on loopback only:
        # the host's own resolver may forward `.consul` to it; the LAN may not ask.
        ports += [
            Port(ports_cfg["dns"], protocol=proto, encryption="none", purpose="dns",
                 loopback_only=True)
            for proto in ("udp", "tcp")
        ]  # fmt: skip
    # A server acts with the management token it bootstraps ACLs with; a client agent
    # with its own host's scoped token where the stack has them.
    agent_secret = (
        consul_cfg.MANAGEMENT_TOKEN.secret
        if server or not consul_acl.scoped_tokens(plan)
        else consul_acl.agent_token_secret(replica.host)
    )
    token = (
        consul_cfg.MANAGEMENT_TOKEN
        if agent_secret == consul_cfg.MANAGEMENT_TOKEN.secret
        else SecretFile("CONSUL_HTTP_TOKEN", agent_secret)
    )
    write_secrets, secret_files = consul_cfg.secret_config(
        server=server,
        default_token=consul_cfg.default_token_for_anonymous(plan, replica.host, server=server),
        agent_token=token,
    )
    env = {
        "CONSUL_HTTP_ADDR": f"{'https' if tls else 'http'}://127.0.0.1:{http_port}",
        # The container's own `consul` CLI (its health check) acts with the agent's token.
        "CONSUL_HTTP_TOKEN_FILE": token.path,
        **dict(f.env for f in secret_files),
    }
    if tls:
        env["CONSUL_CACERT"] = f"{TLS_DIR}/ca.pem"
    return ContainerSpec(
        name=f"{replica.role}-{replica.host}",
        role=replica.role,
        host=replica.host,
        image=cfg.images.support.consul,
        privileges=support_privileges(cfg.images.support.consul),
        runs_as=image_user(cfg.images.support.consul),
        platform=cfg.host(replica.host).platform,
        # Through the image's entrypoint (`agent` gets -data-dir and -config-dir=/consul/config,
        # anything else runs as given): write the secret config, then start the agent.
        command=("/bin/sh", "-c", f"{write_secrets} && exec docker-entrypoint.sh agent"),
        env=env,
        secret_files=secret_files,
        ports=tuple(ports),
        volumes=(Volume(name=f"morgan-{replica.role}-data", path="/consul/data"),),
        files=(ConfigFile("/consul/config/morgan.json", consul_cfg.render(document)),),
        tls=tls_files(plan, replica.role),
        healthcheck=Healthcheck(test=("CMD", "consul", "members"), start_period="20s"),
        memory_mb=256,
        labels=role_labels(plan, replica),
    )
