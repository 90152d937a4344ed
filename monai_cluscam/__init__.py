"""monai-cluscam: gradient-free, cluster-based explanations (ClusCAM) for MONAI classifiers."""

from __future__ import annotations

__version__ = "0.1.0"
