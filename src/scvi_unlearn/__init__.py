"""scvi-unlearn: machine unlearning, membership audits and Fisher analysis for scVI models."""

from importlib.metadata import PackageNotFoundError, version

# scvi-tools 1.4.2's view_anndata_setup()/view_registry() use rich.pretty without importing it
import rich.pretty  # noqa: F401

from scvi_unlearn import attack, benchmark, data, fisher, metrics, toy, unlearn
from scvi_unlearn.model import SCVI, ConditionalSCVI
from scvi_unlearn.unlearn.core._certificate import verify_certificate

try:
    __version__ = version("scvi-unlearn")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "SCVI",
    "ConditionalSCVI",
    "__version__",
    "attack",
    "benchmark",
    "data",
    "fisher",
    "metrics",
    "toy",
    "unlearn",
    "verify_certificate",
]
