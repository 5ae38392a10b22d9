"""TLS 1.3 contexts with mutual authentication, and the peer-identity check."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from transports.certs import Credentials
from transports.errors import AuthenticationError


@dataclass(frozen=True)
class TLSConfig:
    """Our credentials and the name the peer's certificate must carry (a server may accept
    several, e.g. the dealer serves party0 and party1)."""

    credentials: Credentials
    peer_name: str | tuple[str, ...]

    def context(self, *, server_side: bool) -> ssl.SSLContext:
        purpose = ssl.Purpose.CLIENT_AUTH if server_side else ssl.Purpose.SERVER_AUTH
        ctx = ssl.create_default_context(purpose, cafile=str(self.credentials.ca_file))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_cert_chain(str(self.credentials.cert_file), str(self.credentials.key_file))
        ctx.verify_mode = ssl.CERT_REQUIRED
        if not server_side:
            ctx.check_hostname = True  # checked against peer_name, passed as server_hostname
        return ctx

    @property
    def peer_names(self) -> tuple[str, ...]:
        return (self.peer_name,) if isinstance(self.peer_name, str) else self.peer_name

    def check_peer(self, peercert: dict | None) -> str:
        """The peer's name; refuses a (CA-verified) certificate that names another party."""
        names = [v for k, v in (peercert or {}).get("subjectAltName", ()) if k == "DNS"]
        for name in names:
            if name in self.peer_names:
                return name
        expected = " or ".join(repr(n) for n in self.peer_names)
        raise AuthenticationError(
            f"peer certificate is for {names or 'no name'}, expected {expected}; "
            "check that each side uses its own certificate from the same `lpgan certs` directory")


def describe_ssl_error(exc: BaseException) -> str:
    """A message saying what a TLS failure most likely means for the operator."""
    text = str(exc)
    if "Hostname mismatch" in str(getattr(exc, "verify_message", "")):
        return (f"TLS: the peer at this address is not the party expected here ({exc.verify_message}); "  # type: ignore[attr-defined]
                "check which address belongs to which party (party0/party1 swapped?)")
    if isinstance(exc, ssl.SSLCertVerificationError) or "certificate verify failed" in text:
        return (f"TLS: the peer's certificate was rejected ({getattr(exc, 'verify_message', text)}); "
                "both parties need certificates from the same CA (`lpgan certs DIR`)")
    if "unknown ca" in text or "certificate required" in text or "bad certificate" in text:
        return f"TLS: the peer rejected our certificate ({text}); use certificates from the peer's CA"
    return f"TLS handshake failed: {text}"
