# Source: superradcompany/microsandbox docs/sandboxes/volumes.mdx @ 05c6bfc9d62d7b2f8d0968ed45cdb936a7a21569 (older guide; 'Persistent volumes for sandbox data sharing'; also published as contextqmd 0.4.4)
# Section: ## Named volumes > ### Create a volume
# Verbatim code block (top-level await: run inside an async function / asyncio.run).

cache = await Volume.create("pip-cache", quota_mib=1024)
