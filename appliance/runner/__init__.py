"""Runner implementations: local subprocess, SSH (Fabric), dry-run and recording (tests)."""
from appliance.core.runner import CommandFailed, Result, Runner, Secret, display, reveal

from .dry import DryRunner
from .local import LocalRunner
from .recording import Expected, RecordingRunner

__all__ = ["CommandFailed", "DryRunner", "Expected", "LocalRunner", "RecordingRunner", "Result", "Runner", "Secret",
           "display", "reveal"]
