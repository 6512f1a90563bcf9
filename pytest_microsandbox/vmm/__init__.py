"""The VMM processes of ``vm`` sandboxes: the zygote (``zygote``) and the VMM it forks per sandbox (``process``),
which restores or boots the machine (``template``) from a ``spec.VmSpec``. Runs in those processes only, so it
imports nothing of the in-process API (each module imported is memory every VMM holds)."""
