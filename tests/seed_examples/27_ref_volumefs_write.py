# Source: superradcompany/microsandbox docs/sdk/python/volumes.mdx @ 75338142ce86dee4ef9ec868ebd8385f510e812e (Python SDK Volume API reference, pre-cloud, kind: str)
#   also: superradcompany/microsandbox docs/sdk/python/volumes.mdx @ 8a393635bac48abbd694ce2e62811e7e3fb5d20d (Python SDK Volume API reference, newest, VolumeKind/NamedVolumeMode, cloud badges)
# Section: VolumeFs methods > fs.write() > Example (identical in both versions)
# Verbatim code block (top-level await: run inside an async function / asyncio.run).

handle = await Volume.get("pip-cache")
await handle.fs.write("seed.txt", b"hello")
