"""The one error exporters add: an artefact that was written but failed verification."""

from __future__ import annotations

from hwkit.errors import EXIT_VERIFY_FAILED, HwkitError


class VerificationError(HwkitError):
    """The exported model disagrees with the torch model beyond the threshold; nothing was
    renamed into place."""

    exit_code = EXIT_VERIFY_FAILED
