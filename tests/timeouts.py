"""The one setting behind every boot and request timeout in the tests.

Times are written for hardware KVM; the nested rig sets ``MSB_TEST_TIME_SCALE`` (10 by default) because everything
under QEMU's emulation is 10-50x slower. A test asks for ``scaled(30)``, never a bare 30.
"""

from __future__ import annotations

import os

SCALE_VARIABLE = "MSB_TEST_TIME_SCALE"
SCALE = float(os.environ.get(SCALE_VARIABLE) or 1)


def scaled(seconds: float) -> float:
    """``seconds`` on hardware, stretched by the rig's scale under emulation."""
    return seconds * SCALE


# A vm sandbox's boot (a cold one builds its snapshot template first).
BOOT = scaled(60)
