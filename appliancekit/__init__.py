"""appliancekit: sealed, single-purpose appliance images from per-service recipes."""

__version__ = "0.1.0"
