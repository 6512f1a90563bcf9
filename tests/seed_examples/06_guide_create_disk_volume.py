# Source: superradcompany/microsandbox docs/sandboxes/volumes.mdx @ 01ad40988c018dd33d82e17eafe7f6e94891e7fa (newest guide; 'Volumes: Persist and share data across sandboxes')
# Section: ## Named volumes > ### Create a volume (disk-backed named volume)
# Verbatim code block (top-level await: run inside an async function / asyncio.run).

from microsandbox import VolumeKind

docker_data = await Volume.create(
    "docker-data",
    kind=VolumeKind.DISK,
    size_mib=20 * 1024,
)
