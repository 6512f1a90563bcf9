# Source: superradcompany/microsandbox docs/sdk/python/volumes.mdx @ 75338142ce86dee4ef9ec868ebd8385f510e812e (Python SDK Volume API reference, pre-cloud, kind: str)
# Section: ## Static methods > Volume.create() > Example
# Verbatim code block (top-level await: run inside an async function / asyncio.run).
# NOTE: kind passed as plain string 'disk' (VolumeKind is a StrEnum, so 'disk' == VolumeKind.DISK).

await Volume.create("pip-cache", quota_mib=2048)
await Volume.create("docker-data", kind="disk", size_mib=20 * 1024)
