"""Pki: the fleet CA with a server+client certificate per TLS role and host, and a separate CA for
Docker daemon access (pulumi-tls).

The daemons of `tcp://` hosts trust only the Docker-access CA: a certificate a container
holds (signed by the fleet CA) cannot open a host's Docker daemon.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_tls as tls

CERT_HOURS = 24 * 365
CA_HOURS = 24 * 365 * 5
# A certificate this close to its end is issued again by the next `pulumi up` or
# `morgan deploy`.
RENEW_HOURS = 24 * 30
USES = ["key_encipherment", "digital_signature", "server_auth", "client_auth"]


@dataclass(frozen=True)
class CertificateRequest:
    name: str  # infra.model.certificate_name: a TLS role on one host
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...] = ("127.0.0.1",)


@dataclass(frozen=True)
class PkiArgs:
    organization: str
    requests: tuple[CertificateRequest, ...]
    docker_hosts: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class IssuedCertificate:
    cert_pem: pulumi.Output[str]
    key_pem: pulumi.Output[str]


def _ca(name: str, common_name: str, organization: str,
        opts: pulumi.ResourceOptions) -> tuple[tls.PrivateKey, tls.SelfSignedCert]:  # fmt: skip
    key = tls.PrivateKey(f"{name}-key", algorithm="ECDSA", ecdsa_curve="P256", opts=opts)
    cert = tls.SelfSignedCert(
        name,
        private_key_pem=key.private_key_pem,
        is_ca_certificate=True,
        validity_period_hours=CA_HOURS,
        allowed_uses=["cert_signing", "crl_signing", "digital_signature"],
        subject=tls.SelfSignedCertSubjectArgs(common_name=common_name, organization=organization),
        opts=opts,
    )
    return key, cert


class Pki(pulumi.ComponentResource):
    ca_cert_pem: pulumi.Output[str]
    docker_ca_cert_pem: pulumi.Output[str] | None
    certificates: dict[str, IssuedCertificate]

    def __init__(
        self, name: str, args: PkiArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("morgan:security:Pki", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        ca_key, ca = _ca(f"{name}-ca", f"{args.organization} CA", args.organization, child)
        self.ca_cert_pem = ca.cert_pem
        self.certificates = {}
        signers = [(request, ca_key, ca) for request in args.requests]
        self.docker_ca_cert_pem = None
        if args.docker_hosts:
            docker_key, docker_ca = _ca(
                f"{name}-docker-ca", f"{args.organization} Docker access CA",
                args.organization, child,
            )  # fmt: skip
            self.docker_ca_cert_pem = docker_ca.cert_pem
            signers += [
                (CertificateRequest(name=f"docker-{h}", dns_names=(h,)), docker_key, docker_ca)
                for h in args.docker_hosts
            ]
        for request, signer_key, signer in signers:
            key = tls.PrivateKey(
                f"{name}-{request.name}-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child
            )
            csr = tls.CertRequest(
                f"{name}-{request.name}-csr",
                private_key_pem=key.private_key_pem,
                dns_names=list(request.dns_names),
                ip_addresses=list(request.ip_addresses),
                subject=tls.CertRequestSubjectArgs(
                    common_name=request.name, organization=args.organization
                ),
                opts=child,
            )
            cert = tls.LocallySignedCert(
                f"{name}-{request.name}-cert",
                cert_request_pem=csr.cert_request_pem,
                ca_private_key_pem=signer_key.private_key_pem,
                ca_cert_pem=signer.cert_pem,
                validity_period_hours=CERT_HOURS,
                early_renewal_hours=RENEW_HOURS,
                allowed_uses=USES,
                opts=child,
            )
            self.certificates[request.name] = IssuedCertificate(
                cert_pem=cert.cert_pem, key_pem=pulumi.Output.secret(key.private_key_pem)
            )
        self.register_outputs(
            {
                "ca_cert_pem": self.ca_cert_pem,
                "docker_ca_cert_pem": self.docker_ca_cert_pem,
                "certificates": sorted(self.certificates),
            }
        )
