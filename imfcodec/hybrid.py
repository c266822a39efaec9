"""The hybrid mode under its old name: ``imfcodec.modes.hybrid``, re-exported so ``from imfcodec.hybrid
import ...`` keeps working."""

from .modes.common import Packet  # noqa: F401
from .modes.hybrid import HybridDecoder, HybridEncoder, is_enhancer, load_enhancer  # noqa: F401
