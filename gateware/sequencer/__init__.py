"""The accelerator's layer sequencer, one component per unit (``gateware/README.md`` draws
how :class:`~gateware.accelerator.Accelerator` connects them)."""

from .classifier import Classifier
from .collector import Collector
from .fetcher import Fetcher
from .im2col import Im2col
from .issuer import Issuer
from .layer import AccelError, IssueSignature, LayerSignature
from .loader import WeightLoader
from .macro_unit import MacroUnit
from .pooler import Pooler
from .residual import ResidualReader
from .writer import Writer

__all__ = ["AccelError", "Classifier", "Collector", "Fetcher", "Im2col", "IssueSignature",
           "Issuer", "LayerSignature", "MacroUnit", "Pooler", "ResidualReader", "WeightLoader",
           "Writer"]
