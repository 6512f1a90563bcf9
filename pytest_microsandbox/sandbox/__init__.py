"""Sandboxes: a microVM (``vm``) or, opted into by name, Linux namespaces (``namespace``) running our agent."""

from pytest_microsandbox.sandbox._config import Isolation, Security
from pytest_microsandbox.sandbox._sync import LastExec, Sandbox

__all__ = ["Isolation", "LastExec", "Sandbox", "Security"]
