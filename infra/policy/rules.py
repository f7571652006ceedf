"""The invariants as plain functions over one resource (type, inputs, provider URN).

`__main__.py` wraps them in a pulumi-policy PolicyPack; tests call them directly.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from typing import Any

CONTAINER = "docker:index/container:Container"
DOCKER_TYPES = (
    CONTAINER,
    "docker:index/volume:Volume",
    "docker:index/image:Image",
    "docker:index/remoteImage:RemoteImage",
)
GPU_LABEL = "morgan.host.gpu"
_URL = re.compile(r"[a-z][a-z0-9+.-]*://(?:[^@/\s]*@)?([^/:\s\"]+)")
_IPV4 = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b")

Rule = Callable[[str, Mapping[str, Any], str], list[str]]


def _get(props: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if name in props:
            return props[name]
    return None


def _labels(props: Mapping[str, Any]) -> dict[str, str]:
    return {str(i.get("label")): str(i.get("value")) for i in _get(props, "labels") or []}


def container_basics(typ: str, props: Mapping[str, Any], provider: str) -> list[str]:
    """Every container has a healthcheck, a restart policy and a memory limit."""
    if typ != CONTAINER:
        return []
    problems = []
    healthcheck = _get(props, "healthcheck") or {}
    if not healthcheck.get("tests"):
        problems.append("has no healthcheck; give it healthcheck.tests")
    if _get(props, "restart") not in ("unless-stopped", "on-failure", "always"):
        problems.append("has no restart policy; set restart: unless-stopped")
    if not _get(props, "memory"):
        problems.append("has no memory limit; set memory (MB)")
    return problems


def gpu_only_on_gpu_hosts(typ: str, props: Mapping[str, Any], provider: str) -> list[str]:
    """GPU device requests only on hosts whose label says they have a GPU."""
    if typ != CONTAINER:
        return []
    requests = _get(props, "deviceRequests", "device_requests") or []
    if requests and _labels(props).get(GPU_LABEL) != "true":
        return ["requests a GPU on a host without one; place it on a GPU host or drop the request"]
    return []


def no_addresses_in_env(typ: str, props: Mapping[str, Any], provider: str) -> list[str]:
    """No service URL or host IP in a container's environment: names resolve through Consul."""
    if typ != CONTAINER:
        return []
    problems = []
    for entry in _get(props, "envs") or []:
        if not isinstance(entry, str):
            continue
        name, _, value = entry.partition("=")
        for host in _URL.findall(value):
            if host != "127.0.0.1" and not host.endswith(".service.consul"):
                problems.append(f"env {name} holds a URL to {host}; use its Consul name")
        for ip in _IPV4.findall(value):
            try:
                loopback = ipaddress.ip_address(ip).is_loopback
            except ValueError:
                continue
            if not loopback:
                problems.append(f"env {name} holds the address {ip}; use a Consul name")
    return problems


def explicit_provider(typ: str, props: Mapping[str, Any], provider: str) -> list[str]:
    """Docker resources use their host's explicit provider, never the default one."""
    if typ not in DOCKER_TYPES:
        return []
    if not provider or "::default" in provider:
        return ["uses the default Docker provider; pass the host's docker.Provider"]
    return []


RULES: dict[str, Rule] = {
    "morgan-container-basics": container_basics,
    "morgan-gpu-only-on-gpu-hosts": gpu_only_on_gpu_hosts,
    "morgan-no-addresses-in-env": no_addresses_in_env,
    "morgan-explicit-docker-provider": explicit_provider,
}
