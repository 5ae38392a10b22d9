"""mpcrt: an asyncio two-party MPC runtime over Z_2^64.

    async def program(party):
        x = await party.input(tensor if party.id == 0 else None, src=0)
        return await (x + x).reveal()

    r0, r1 = mpcrt.run_local(program, transport="tcp", network="wan")
"""

from mpcrt import ops
from mpcrt.binary import BinaryShare, PackedBits
from mpcrt.errors import DealerError, HandshakeError, MPCError, PeerAborted, PeerLost, PeerTimeout, ProgramMismatch
from mpcrt.local import run_local, run_with_owner
from mpcrt.owner_link import OWNER, OwnerClient, OwnerLink, OwnerLost, ServerFailed
from mpcrt.runtime import Party, PartySettings
from mpcrt.scope import keyed_scope, op_label
from mpcrt.shares import ArithmeticShare, cat, stack
from mpcrt.stats import OpCounts, Stats

__all__ = [
    "ArithmeticShare", "BinaryShare", "DealerError", "HandshakeError", "MPCError", "OWNER", "OpCounts", "OwnerClient",
    "OwnerLink", "OwnerLost", "PackedBits", "Party", "PartySettings", "PeerAborted", "PeerLost", "PeerTimeout",
    "ProgramMismatch", "ServerFailed", "Stats", "cat", "keyed_scope", "op_label", "ops", "run_local",
    "run_with_owner", "stack",
]
