"""The public surface: explicit, sorted ``__all__`` lists that name what really exists."""

from __future__ import annotations

import importlib

import pytest

PUBLIC_MODULES = ["pytest_microsandbox", "pytest_microsandbox.sync"]


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_is_sorted_and_complete(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__all__ == sorted(module.__all__)
    for symbol in module.__all__:
        assert hasattr(module, symbol), symbol
    public = {n for n, v in vars(module).items() if not n.startswith("_") and isinstance(v, type)}
    assert public <= set(module.__all__), public - set(module.__all__)


def test_sync_and_async_share_names() -> None:
    import pytest_microsandbox as aio
    from pytest_microsandbox import sync

    for name in ("Volume", "VolumeHandle", "VolumeFs", "MountConfig", "MountKind", "FsEntry"):
        assert hasattr(aio, name) and hasattr(sync, name)
    assert sync.MountConfig is aio.MountConfig  # plain data is shared, not duplicated


def test_errors_hierarchy() -> None:
    from pytest_microsandbox import errors

    for name in ("VolumeAlreadyExistsError", "VolumeNotFoundError", "VolumeInUseError", "PathEscapeError",
                 "InvalidConfigError", "SandboxError", "BootError", "ExecError", "ImageError", "KvmUnavailableError"):
        assert issubclass(getattr(errors, name), errors.MicrosandboxError)
    assert str(errors.VolumeInUseError("v", "sb")) == "volume v is attached to active sandbox sb"
    assert "escapes volume root" in str(errors.PathEscapeError("../x"))
