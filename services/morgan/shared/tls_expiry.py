"""When this service's TLS certificate and the fleet CA end, as Unix timestamps, for the
`morgan_tls_certificate_expiry_timestamp_seconds` gauge (alert: MorganCertificateExpiring).

The standard library decodes a certificate only as the peer of a verified connection or
as a loaded CA, so the certificate's end is read from a TLS handshake between two
in-memory ends (no socket): the server end presents the service's own certificate, the
client end verifies it against the CA and reads it.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

from morgan.shared.metrics import TLS_CERTIFICATE_EXPIRY

log = logging.getLogger(__name__)

# Rounds of the in-memory handshake; TLS 1.3 needs two or three.
_MAX_ROUNDS = 10


def _pump(source: ssl.MemoryBIO, target: ssl.MemoryBIO) -> None:
    data = source.read()
    if data:
        target.write(data)


def certificate_not_after(cert: Path, key: Path, ca: Path) -> float:
    """The end of `cert` (with its `key`), as verified against `ca`."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(str(cert), str(key))
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False  # its names are not the question here
    client_ctx.load_verify_locations(cafile=str(ca))
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(_MAX_ROUNDS):
        for name, end in (("client", client), ("server", server)):
            if done[name]:
                continue
            try:
                end.do_handshake()
                done[name] = True
            except ssl.SSLWantReadError:
                pass
        _pump(c_out, s_in)
        _pump(s_out, c_in)
        if all(done.values()):
            break
    peer = client.getpeercert()
    if not peer or "notAfter" not in peer:
        raise ValueError(f"{cert}: no certificate came out of the handshake with {ca}")
    return float(ssl.cert_time_to_seconds(str(peer["notAfter"])))


def ca_not_after(ca: Path) -> float:
    """The end of the (first) CA certificate in `ca`."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(ca))
    loaded = ctx.get_ca_certs()
    if not loaded:
        raise ValueError(f"{ca} holds no CA certificate")
    return float(ssl.cert_time_to_seconds(str(loaded[0]["notAfter"])))


def record_expiry(service: str, cert: Path, key: Path, ca: Path) -> None:
    """Set the gauge for the certificate and the CA; a failure is logged, never raised
    (the service serves with the files either way; the alert then lacks its series)."""
    try:
        ends = {"certificate": certificate_not_after(cert, key, ca), "ca": ca_not_after(ca)}
    except (OSError, ssl.SSLError, ValueError) as error:
        log.warning(
            "could not read when the TLS certificate %s ends (%s); the certificate expiry"
            " alert has no series for %s",
            cert,
            error,
            service,
        )
        return
    # Only once both are read: a series of 0 would read as long expired.
    for kind, end in ends.items():
        TLS_CERTIFICATE_EXPIRY.labels(service=service, kind=kind).set(end)
