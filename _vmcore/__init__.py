"""Our VMM core: KVM machines, virtio-mmio devices, the virtio-fs server and the guest agent.

This package takes plain configs, reads no settings of its own (no environment variables) and knows nothing of
the library built on it.
"""
