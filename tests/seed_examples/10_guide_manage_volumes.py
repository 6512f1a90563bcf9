# Source: superradcompany/microsandbox docs/sandboxes/volumes.mdx @ 01ad40988c018dd33d82e17eafe7f6e94891e7fa (newest guide; 'Volumes: Persist and share data across sandboxes')
#   also: superradcompany/microsandbox docs/sandboxes/volumes.mdx @ 05c6bfc9d62d7b2f8d0968ed45cdb936a7a21569 (older guide; 'Persistent volumes for sandbox data sharing'; also published as contextqmd 0.4.4)
# Section: ## Named volumes > ### Manage volumes (identical in both guide versions)
# Verbatim code block (top-level await: run inside an async function / asyncio.run).
# NOTE: Needs a volume 'old-cache' to exist, else VolumeNotFoundError.

volumes = await Volume.list()
await Volume.remove("old-cache")
