"""Exceptions raised by transports; every one says which peer and what to do."""

from __future__ import annotations


class TransportError(ConnectionError):
    """Base of every transport failure."""


class ConnectionClosed(TransportError):
    """The peer closed the connection, died, or the connection was reset."""


class FrameError(TransportError):
    """The peer sent bytes that are not a valid frame (bad magic or oversized)."""


class TransportTimeout(TransportError, TimeoutError):
    """Nothing arrived within the allowed time."""


class AuthenticationError(TransportError):
    """TLS handshake failed or the peer's certificate names the wrong party."""
