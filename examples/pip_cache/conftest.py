"""One cache volume for the whole run, shared by every xdist worker (try ``pytest -n 2``): filled once, under a
lock, before any test uses it; removed once at the end of the run."""


def pytest_microsandbox_populate_shared_volume(volume, config):
    # Stand-in for an expensive download (e.g. `pip download -d`): done once per run, not once per worker.
    for name in ("alpha", "beta"):
        volume.fs.write(f"wheels/{name}-1.0-py3-none-any.whl", f"pretend wheel {name}".encode())
