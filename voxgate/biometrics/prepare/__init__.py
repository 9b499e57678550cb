"""Model preparation (``voxgate models prepare``): the only place in voxgate that uses torch.

Importing this package does not import torch; ``prepare_models`` does, when it has something to export.
"""

from __future__ import annotations

from voxgate.biometrics.prepare.export import prepare_models

__all__ = ["prepare_models"]
