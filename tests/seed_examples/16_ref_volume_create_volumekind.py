# Source: superradcompany/microsandbox docs/sdk/python/volumes.mdx @ 8a393635bac48abbd694ce2e62811e7e3fb5d20d (Python SDK Volume API reference, newest, VolumeKind/NamedVolumeMode, cloud badges)
# Section: Volume > Static methods > Volume.create() > Example
# Verbatim code block (top-level await: run inside an async function / asyncio.run).

from microsandbox import VolumeKind

await Volume.create("pip-cache", quota_mib=2048)
await Volume.create("docker-data", kind=VolumeKind.DISK, size_mib=20 * 1024)
