"""Exceptions of the MPC runtime. Each names the party and says what to check."""

from __future__ import annotations


class MPCError(Exception):
    """Base of runtime failures."""


class ProgramMismatch(MPCError):
    """The two parties are not running the same program (different ops, shapes or order)."""


class PeerAborted(MPCError):
    """The peer failed and told us why."""


class PeerLost(MPCError, ConnectionError):
    """The connection to the peer broke (closed, died, malformed data)."""


class PeerTimeout(MPCError, TimeoutError):
    """The peer sent nothing for longer than the party's timeout."""


class HandshakeError(MPCError):
    """The parties disagree on who is who, on the session, or on the protocol version."""


class DealerError(MPCError):
    """The dealer is unreachable, died, or sent material that does not fit the request."""
