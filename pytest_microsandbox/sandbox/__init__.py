"""Sandboxes: a microVM (``vm``) or, opted into by name, Linux namespaces (``namespace``) running our agent."""

from pytest_microsandbox.sandbox._config import Isolation, Security, VmOptions
from pytest_microsandbox.sandbox._detached import start_detached
from pytest_microsandbox.sandbox._sandbox import LastExec, Sandbox
from pytest_microsandbox.sandbox._zygote_client import prestart_vmm

__all__ = ["Isolation", "LastExec", "Sandbox", "Security", "VmOptions", "prestart_vmm", "start_detached"]
