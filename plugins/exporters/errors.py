"""The one error exporters add: an artefact that was written but failed verification."""

from __future__ import annotations

from hwkit.errors import HwkitError

EXIT_VERIFY = 8  # documented in docs/export.md (7 is `hwkit data check`)


class VerificationError(HwkitError):
    """The exported model disagrees with the torch model beyond the threshold; nothing was
    renamed into place."""

    exit_code = EXIT_VERIFY
