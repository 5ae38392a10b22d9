"""The dealer: correlated randomness for the online phase (see material.py for the scheme)."""

from mpcrt.dealer.admission import DealerLimits, DealerRefused
from mpcrt.dealer.client import CorrectionSource, DealerClient, LocalDealer, Pregenerated
from mpcrt.dealer.material import KINDS, Request
from mpcrt.dealer.request import MaskRef, Spec
from mpcrt.dealer.service import DealerService, RemoteDealer

__all__ = ["KINDS", "CorrectionSource", "DealerClient", "DealerLimits", "DealerRefused", "DealerService",
           "LocalDealer", "MaskRef", "Pregenerated", "RemoteDealer", "Request", "Spec"]
