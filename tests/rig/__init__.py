"""The nested rig: real KVM for the ``vm`` tests on hosts without it (see l1.py), prepared from Debian's packages.

``python -m tests.rig run -- CMD ...`` runs one command inside L1 with this checkout and its environment;
tests/conftest.py runs the suite's ``vm`` tests there (delegate.py).
"""
