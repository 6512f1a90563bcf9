import pytest


@pytest.mark.parametrize("package", ["alpha", "beta"])
def test_cache_is_there_for_every_worker(sandbox_factory, shared_volume, package):
    sb = sandbox_factory(volumes={"/root/.cache/pip": shared_volume.mount(readonly=True)})
    listing = sb.shell("ls /root/.cache/pip/wheels").stdout.split()
    assert f"{package}-1.0-py3-none-any.whl" in listing
    assert sb.shell("touch /root/.cache/pip/wheels/x").exit_code != 0  # shared read-only: no test can spoil it
