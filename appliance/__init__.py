"""appliance: turns two servers into a highly available cloud frontend, and runs it."""

__version__ = "0.1.0"
