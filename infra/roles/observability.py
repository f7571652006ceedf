"""Container specs of prometheus, Alertmanager, Grafana, Loki and Promtail."""

from __future__ import annotations

from typing import Any

from infra.configs import alerting, monitoring_auth
from infra.configs import dashboards as dashboards_cfg
from infra.configs import logs as logs_cfg
from infra.configs import observability as obs_cfg
from infra.model import (
    TLS_DIR,
    UNPRIVILEGED,
    BindMount,
    ConfigFile,
    ContainerSpec,
    Healthcheck,
    Port,
    SecretFile,
    Volume,
)
from infra.placement import Plan, Replica
from infra.roles.exporters import EXPORTER_SPECS
from infra.spec_common import (
    auth_probe,
    port_encryption,
    role_labels,
    tls_files,
    wget_probe,
)
from infra.support_privileges import image_user


def _auth_files(plan: Plan, web_base: str, client: str | None) -> tuple[ConfigFile, ...]:
    """The web config's TLS part (the start line appends the user) and the config of a
    client inside the container (amtool): neither holds a secret, which stays in the files
    the start line writes."""
    web = obs_cfg.web_config(plan)
    tls = plan.config.security.internal_tls
    # Never an empty file: compose turns an empty config into a directory.
    files = [ConfigFile(web_base, obs_cfg.to_yaml(web) if web else "# plain HTTP: no TLS\n")]
    if client is not None:
        files.append(ConfigFile(client, obs_cfg.to_yaml(monitoring_auth.client_config(tls))))
    return tuple(files)


def observability_spec(plan: Plan, replica: Replica) -> ContainerSpec:
    cfg = plan.config
    obs = cfg.observability
    role = replica.role
    tls = cfg.security.internal_tls
    port = obs_cfg.PORTS[role]
    enc = port_encryption(plan)
    base: dict[str, Any] = {
        "name": f"morgan-{role}-{replica.host}" if role in obs_cfg.PER_HOST else f"morgan-{role}",
        "role": role,
        "host": replica.host,
        "platform": cfg.host(replica.host).platform,
        "tls": tls_files(plan, role),
        "labels": role_labels(plan, replica),
        # Every image here runs without capabilities: Prometheus, Alertmanager, Grafana
        # and Loki as their own users, Promtail as root reading root's own log files.
        "privileges": UNPRIVILEGED,
    }
    if role == "prometheus":
        command = [
            "--config.file=/etc/prometheus/prometheus.yml",
            "--storage.tsdb.path=/prometheus",
            f"--storage.tsdb.retention.time={obs.metrics_retention}",
            f"--web.listen-address={plan.listen_address(replica.host)}:{port}",
        ]
        files = [
            ConfigFile(
                "/etc/prometheus/prometheus.yml", obs_cfg.to_yaml(obs_cfg.prometheus_config(plan))
            ),
            ConfigFile("/etc/prometheus/alerts.yml", obs_cfg.to_yaml(alerting.alert_rules(plan))),
            *_auth_files(plan, "/etc/prometheus/web-tls.yml", None),
        ]
        start = monitoring_auth.start_script(
            "/bin/prometheus", command, web_base="/etc/prometheus/web-tls.yml"
        )
        return ContainerSpec(
            image=cfg.images.support.prometheus,
            runs_as=image_user(cfg.images.support.prometheus),
            entrypoint=("/bin/sh",),
            command=("-c", start),
            env=dict(f.env for f in monitoring_auth.secret_files()),
            secret_files=monitoring_auth.secret_files(),
            ports=(Port(port, encryption=enc, purpose="api"),),
            volumes=(Volume(name="morgan-prometheus-data", path="/prometheus"),),
            files=tuple(files),
            healthcheck=Healthcheck(test=auth_probe(port, "/-/healthy", tls)),
            memory_mb=1024,
            **base,
        )
    if role == "alertmanager":
        listen = plan.listen_address(replica.host)
        flags = [
            "--config.file=/etc/alertmanager/alertmanager.yml",
            "--storage.path=/alertmanager",
            f"--web.listen-address={listen}:{port}",
            "--cluster.listen-address=",
        ]
        files = [
            ConfigFile(
                "/etc/alertmanager/alertmanager.yml",
                obs_cfg.to_yaml(alerting.alertmanager_config(plan)),
            ),
            *(
                ConfigFile(path, obs_cfg.to_yaml(alerting.amtool_config(plan, listen)))
                for path in alerting.AMTOOL_CONFIGS
            ),
            *_auth_files(plan, "/etc/alertmanager/web-tls.yml", alerting.AMTOOL_HTTP_CONFIG),
        ]
        secret_files = alerting.alertmanager_secret_files(plan)
        return ContainerSpec(
            image=cfg.images.support.alertmanager,
            runs_as=image_user(cfg.images.support.alertmanager),
            entrypoint=("/bin/sh",),
            command=(
                "-c",
                monitoring_auth.start_script(
                    "/bin/alertmanager", flags, web_base="/etc/alertmanager/web-tls.yml"
                ),
            ),
            env=dict(f.env for f in secret_files),
            secret_files=secret_files,
            ports=(Port(port, encryption=enc, purpose="api"),),
            volumes=(Volume(name="morgan-alertmanager-data", path="/alertmanager"),),
            files=tuple(files),
            healthcheck=Healthcheck(test=auth_probe(port, "/-/healthy", tls)),
            memory_mb=256,
            **base,
        )
    if role == "grafana":
        # The admin's password (Grafana reads `<variable>__FILE`), and the Prometheus data
        # source's ($__file{} in its provisioning file).
        grafana_files = (
            SecretFile("GF_SECURITY_ADMIN_PASSWORD", "grafana_admin_password", suffix="__FILE"),
            monitoring_auth.PASSWORD,
        )
        files = [
            ConfigFile(
                "/etc/grafana/provisioning/datasources/morgan.yml",
                obs_cfg.to_yaml(obs_cfg.grafana_datasources(plan)),
            ),
            ConfigFile(
                "/etc/grafana/provisioning/dashboards/morgan.yml",
                obs_cfg.to_yaml(obs_cfg.grafana_dashboard_provider()),
            ),
        ]
        files += [
            ConfigFile(f"/var/lib/grafana/dashboards/{name}", obs_cfg.to_json(board))
            for name, board in dashboards_cfg.dashboards(plan).items()
        ]
        env = {
            "GF_SERVER_HTTP_PORT": str(port),
            "GF_USERS_ALLOW_SIGN_UP": "false",
            "GF_ANALYTICS_REPORTING_ENABLED": "false",
        }
        if tls:
            env.update(
                {
                    "GF_SERVER_PROTOCOL": "https",
                    "GF_SERVER_CERT_FILE": f"{TLS_DIR}/cert.pem",
                    "GF_SERVER_CERT_KEY": f"{TLS_DIR}/key.pem",
                }
            )
        return ContainerSpec(
            image=cfg.images.support.grafana,
            runs_as=image_user(cfg.images.support.grafana),
            env={**env, **dict(f.env for f in grafana_files)},
            secret_files=grafana_files,
            ports=(Port(port, encryption=enc, purpose="ui"),),
            volumes=(Volume(name="morgan-grafana-data", path="/var/lib/grafana"),),
            files=tuple(files),
            healthcheck=Healthcheck(test=wget_probe(port, "/api/health", tls)),
            memory_mb=512,
            **base,
        )
    if role == "loki":
        return ContainerSpec(
            image=cfg.images.support.loki,
            runs_as=image_user(cfg.images.support.loki),
            # expand-env: the ruler's Alertmanager password comes from the environment.
            command=("-config.file=/etc/loki/loki.yml", "-config.expand-env=true"),
            secret_env=(monitoring_auth.secret_env()[0],),
            ports=(
                Port(port, encryption=enc, purpose="push, query"),
                Port(obs_cfg.LOKI_GRPC_PORT, encryption="none", purpose="grpc", loopback_only=True),
            ),
            volumes=(Volume(name="morgan-loki-data", path="/loki"),),
            files=(
                ConfigFile("/etc/loki/loki.yml", obs_cfg.to_yaml(obs_cfg.loki_config(plan))),
                # The log alerts, in the ruler's directory for the single tenant.
                ConfigFile(logs_cfg.RULES_FILE, obs_cfg.to_yaml(logs_cfg.loki_rules())),
            ),
            healthcheck=Healthcheck(test=wget_probe(port, "/ready", tls), start_period="30s"),
            memory_mb=512,
            **base,
        )
    if role in EXPORTER_SPECS:
        return EXPORTER_SPECS[role](plan, replica, base)
    # promtail: ships every container's JSON log lines to Loki.
    return ContainerSpec(
        image=cfg.images.support.promtail,
        runs_as=image_user(cfg.images.support.promtail),
        command=("-config.file=/etc/promtail/promtail.yml",),
        ports=(Port(port, encryption="none", purpose="status", loopback_only=True),),
        volumes=(Volume(name="morgan-promtail-positions", path="/promtail"),),
        binds=(
            BindMount(obs_cfg.DOCKER_CONTAINERS_DIR, obs_cfg.DOCKER_CONTAINERS_DIR, read_only=True),
        ),
        files=(
            ConfigFile(
                "/etc/promtail/promtail.yml",
                obs_cfg.to_yaml(obs_cfg.promtail_config(plan, replica.host)),
            ),
        ),
        healthcheck=Healthcheck(
            test=("CMD-SHELL", f"bash -c ':> /dev/tcp/127.0.0.1/{port}' || exit 1")
        ),
        memory_mb=128,
        **base,
    )
