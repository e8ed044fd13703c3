"""The targets the issues set. They are printed beside the measured figures and ratios, and
never used as a baseline."""

from __future__ import annotations

from bench.figures import MIB, Target

WARM_BUILD = Target(60.0, on_ratio=False, source="issue 3: a cold build with the package cache warm < 60 s")
NOOP_BUILD = Target(3.0, on_ratio=False, source="issue 3: a no-op rebuild < 3 s")
SEALED_VS_INSTALLED = Target(
    0.25, on_ratio=True, source="issue 5: sealed root <= 25 % of the same packages installed normally"
)
# per recipe: an absolute size target only where an issue set one
SEALED_ROOT = {
    "homepage": Target(16.0 * MIB, on_ratio=False, source="issue 3: sealed root of homepage <= 16 MiB")
}
HEALTHY_VS_MARKER = Target(
    2.0, on_ratio=True, source="issues 3, 4: boot to healthy <= 2x the bare kernel's marker"
)
