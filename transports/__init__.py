"""Framed byte channels between two endpoints: in-memory, TCP/TLS and a simulated WAN.

Knows nothing of MPC. Every transport implements `Transport`: `send(frame)`,
`await recv(timeout)`, `await close()`, and frame/byte `counters`.
"""

from transports.base import Counters, Frame, Transport, WrappingTransport
from transports.certs import Credentials, generate_certificates, load_credentials
from transports.errors import (
    AuthenticationError,
    ConnectionClosed,
    FrameError,
    TransportError,
    TransportTimeout,
)
from transports.memory import MemoryTransport, pair
from transports.tcp import Listener, TcpTransport, connect, listen
from transports.tls import TLSConfig
from transports.wan import PRESETS, NetworkModel, WanTransport, resolve_network

__all__ = [
    "PRESETS", "AuthenticationError", "ConnectionClosed", "Counters", "Credentials", "Frame",
    "FrameError", "Listener", "MemoryTransport", "NetworkModel", "TLSConfig", "TcpTransport",
    "Transport", "TransportError", "TransportTimeout", "WanTransport", "WrappingTransport", "connect",
    "generate_certificates", "listen", "load_credentials", "pair", "resolve_network",
]
