# Source: superradcompany/microsandbox docs/sandboxes/volumes.mdx @ 05c6bfc9d62d7b2f8d0968ed45cdb936a7a21569 (older guide; 'Persistent volumes for sandbox data sharing'; also published as contextqmd 0.4.4)
# Section: ## Named volumes > ### Host-side access
# Verbatim code block (top-level await: run inside an async function / asyncio.run).
# NOTE: path has a leading '/'. The real SDK treats paths as relative to the volume root; a reimplementation that rejects absolute paths (PathEscapeError) would make this documented example fail. Decide explicitly (e.g. strip one leading '/' = volume root).

vol = await Volume.get("pip-cache")
await vol.fs.write("/requirements.txt", b"requests==2.28.0")
