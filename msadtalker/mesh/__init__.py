"""The default, checkpoint-free renderer: the photo warped by a dense landmark mesh on CPU.

Public API: ``MeshRenderer`` (``render`` / ``render_full``), ``FaceControls`` and
``rotation_matrix`` (sign conventions in ``controls``), ``contact_sheet``.
"""

from __future__ import annotations

from msadtalker.mesh.contact_sheet import contact_sheet
from msadtalker.mesh.controls import FaceControls, rotation_matrix
from msadtalker.mesh.renderer import MeshRenderer

__all__ = ["FaceControls", "MeshRenderer", "contact_sheet", "rotation_matrix"]
