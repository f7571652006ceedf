"""Pulumi mocks that record every resource, with recognisable fake secret values."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import pulumi

SECRET_SIG = "4dabf18193072939515e22adb298388d"
SECRET_MARK = "SECRET-"


@dataclass
class Recorded:
    typ: str
    name: str
    inputs: dict[str, Any]
    provider: str


@dataclass
class RecordingMocks(pulumi.runtime.Mocks):
    resources: list[Recorded] = field(default_factory=list)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.resources.append(Recorded(args.typ, args.name, dict(args.inputs), args.provider or ""))
        outs = dict(args.inputs)
        if args.typ == "random:index/randomPassword:RandomPassword":
            outs.update(result=f"{SECRET_MARK}{args.name}", bcryptHash=f"{SECRET_MARK}bcrypt")
        elif args.typ == "random:index/randomId:RandomId":
            # hex: a valid, distinct value per resource (key ids and salts are parsed from it).
            digest = hashlib.sha256(args.name.encode()).hexdigest()
            outs.update(
                b64Std=f"{SECRET_MARK}gossip", hex=digest[: 2 * int(args.inputs["byteLength"])]
            )
        elif args.typ == "random:index/randomUuid:RandomUuid":
            outs.update(result=f"{SECRET_MARK}uuid-{args.name}")  # distinct per token
        elif args.typ == "tls:index/privateKey:PrivateKey":
            outs.update(privateKeyPem=f"{SECRET_MARK}key-{args.name}", publicKeyPem="PUBLIC")
        elif args.typ == "tls:index/certRequest:CertRequest":
            outs.update(certRequestPem=f"CSR-{args.name}")
        elif args.typ in (
            "tls:index/selfSignedCert:SelfSignedCert",
            "tls:index/locallySignedCert:LocallySignedCert",
        ):
            outs.update(certPem=f"CERT-{args.name}")
        elif args.typ == "docker:index/remoteImage:RemoteImage":
            outs.update(imageId=f"sha256:{args.name}")
        return f"{args.name}_id", outs

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        return {}

    def of_type(self, typ: str) -> list[Recorded]:
        return [r for r in self.resources if r.typ == typ]


def plain_strings(value: Any) -> list[str]:
    """Every string in a serialized input that is not inside a secret wrapper."""
    if isinstance(value, dict):
        if SECRET_SIG in value:
            return []
        return [s for v in value.values() for s in plain_strings(v)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in plain_strings(v)]
    if isinstance(value, str):
        return [value]
    return []


def is_secret(value: Any) -> bool:
    return isinstance(value, dict) and SECRET_SIG in value


def unwrap(value: Any) -> Any:
    if is_secret(value):
        return unwrap(value["value"])
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value
