"""Our VMM core: KVM machines, virtio-mmio devices, the virtio-fs server and the guest agent.

This package takes plain configs and knows nothing of pytest or of ``pytest_microsandbox``.
"""
