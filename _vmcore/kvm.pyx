# cython: language_level=3
"""/dev/kvm and one VM: memory slots, the in-kernel irqchip, irqfd/ioeventfd and vCPU creation."""

from libc.errno cimport errno
from libc.stdint cimport uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset, strerror
from posix.fcntl cimport open as c_open, O_RDWR, O_CLOEXEC
from posix.unistd cimport close as c_close
from posix.ioctl cimport ioctl

from _vmcore.linux_kvm cimport *
from _vmcore.memory cimport GuestMemory

from _vmcore.errors import KvmError

cdef extern from "<sys/eventfd.h>" nogil:
    int eventfd(unsigned int initval, int flags)
    int EFD_CLOEXEC
    int EFD_NONBLOCK

cdef enum:
    MAX_CPUID_ENTRIES = 256


cdef object _supported_cpuid = None


cdef int _check(long r, str what) except -1:
    if r < 0:
        err = errno
        raise KvmError(f"{what} failed: {strerror(err).decode()} (errno {err})")
    return <int>r


def new_eventfd(bint nonblocking=False) -> int:
    """An eventfd (close-on-exec) for irqfd/ioeventfd use."""
    return _check(eventfd(0, EFD_CLOEXEC | (EFD_NONBLOCK if nonblocking else 0)), "eventfd")


cdef class Vm:
    """A KVM virtual machine. Close it (or let it be collected) to release the kernel objects."""

    def __cinit__(self):
        self.kvm_fd = -1
        self.fd = -1
        self._memories = []

    def __init__(self, str device="/dev/kvm"):
        cdef bytes raw = device.encode()
        self.kvm_fd = _check(c_open(raw, O_RDWR | O_CLOEXEC), f"open {device}")
        version = _check(ioctl(self.kvm_fd, KVM_GET_API_VERSION, 0), "KVM_GET_API_VERSION")
        if version != 12:
            raise KvmError(f"unsupported KVM API version {version}")
        self.fd = _check(ioctl(self.kvm_fd, KVM_CREATE_VM, 0), "KVM_CREATE_VM")
        self.run_size = _check(ioctl(self.kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0), "KVM_GET_VCPU_MMAP_SIZE")

    def close(self) -> None:
        if self.fd >= 0:
            c_close(self.fd)
            self.fd = -1
        if self.kvm_fd >= 0:
            c_close(self.kvm_fd)
            self.kvm_fd = -1
        self._memories = []

    def __dealloc__(self):
        if self.fd >= 0:
            c_close(self.fd)
        if self.kvm_fd >= 0:
            c_close(self.kvm_fd)

    def check_extension(self, int cap) -> int:
        return _check(ioctl(self.fd, KVM_CHECK_EXTENSION, cap), "KVM_CHECK_EXTENSION")

    def set_tss_addr(self, uint64_t addr) -> None:
        _check(ioctl(self.fd, KVM_SET_TSS_ADDR, <unsigned long>addr), "KVM_SET_TSS_ADDR")

    def set_identity_map_addr(self, uint64_t addr) -> None:
        _check(ioctl(self.fd, KVM_SET_IDENTITY_MAP_ADDR, &addr), "KVM_SET_IDENTITY_MAP_ADDR")

    def create_irqchip(self) -> None:
        _check(ioctl(self.fd, KVM_CREATE_IRQCHIP, 0), "KVM_CREATE_IRQCHIP")

    def create_pit(self) -> None:
        """The in-kernel i8254 PIT (after the irqchip): the guest's first clock event device, which it needs to
        tick and to calibrate its local APIC timer (port 0x61's speaker is a dummy)."""
        cdef kvm_pit_config cfg
        memset(&cfg, 0, sizeof(cfg))
        cfg.flags = KVM_PIT_SPEAKER_DUMMY
        _check(ioctl(self.fd, KVM_CREATE_PIT2, &cfg), "KVM_CREATE_PIT2")

    # ---- state, for snapshots: raw KVM structures of this host's ABI --------------------------------------
    def get_irqchip(self, uint32_t chip_id) -> bytes:
        """KVM_GET_IRQCHIP for chip 0 (PIC master), 1 (PIC slave) or 2 (I/O APIC), as raw bytes."""
        cdef kvm_irqchip chip
        memset(&chip, 0, sizeof(chip))
        chip.chip_id = chip_id
        _check(ioctl(self.fd, KVM_GET_IRQCHIP, &chip), "KVM_GET_IRQCHIP")
        return (<char *>&chip)[:sizeof(chip)]

    def set_irqchip(self, bytes raw) -> None:
        cdef kvm_irqchip chip
        if len(raw) != sizeof(chip):
            raise KvmError(f"saved irqchip is {len(raw)} bytes, this host's KVM wants {sizeof(chip)}")
        memcpy(&chip, <const char *>raw, sizeof(chip))
        _check(ioctl(self.fd, KVM_SET_IRQCHIP, &chip), "KVM_SET_IRQCHIP")

    def get_pit(self) -> bytes:
        """KVM_GET_PIT2: the PIT's channels as raw bytes."""
        cdef kvm_pit_state2 pit
        memset(&pit, 0, sizeof(pit))
        _check(ioctl(self.fd, KVM_GET_PIT2, &pit), "KVM_GET_PIT2")
        return (<char *>&pit)[:sizeof(pit)]

    def set_pit(self, bytes raw) -> None:
        cdef kvm_pit_state2 pit
        if len(raw) != sizeof(pit):
            raise KvmError(f"saved PIT is {len(raw)} bytes, this host's KVM wants {sizeof(pit)}")
        memcpy(&pit, <const char *>raw, sizeof(pit))
        _check(ioctl(self.fd, KVM_SET_PIT2, &pit), "KVM_SET_PIT2")

    def get_clock(self) -> int:
        """The KVM clock (the guest's kvmclock base) in nanoseconds."""
        cdef kvm_clock_data c
        memset(&c, 0, sizeof(c))
        _check(ioctl(self.fd, KVM_GET_CLOCK, &c), "KVM_GET_CLOCK")
        return c.clock

    def set_clock(self, uint64_t ns) -> None:
        cdef kvm_clock_data c
        memset(&c, 0, sizeof(c))
        c.clock = ns
        _check(ioctl(self.fd, KVM_SET_CLOCK, &c), "KVM_SET_CLOCK")

    def add_memory(self, uint32_t slot, uint64_t guest_addr, GuestMemory mem not None, bint readonly=False) -> None:
        cdef kvm_userspace_memory_region region
        memset(&region, 0, sizeof(region))
        region.slot = slot
        region.flags = KVM_MEM_READONLY if readonly else 0
        region.guest_phys_addr = guest_addr
        region.memory_size = mem.size
        region.userspace_addr = mem.address
        _check(ioctl(self.fd, KVM_SET_USER_MEMORY_REGION, &region), "KVM_SET_USER_MEMORY_REGION")
        self._memories.append(mem)  # the mapping must outlive the slot

    def irq_line(self, uint32_t gsi, uint32_t level) -> None:
        cdef kvm_irq_level irq
        irq.irq = gsi
        irq.level = level
        _check(ioctl(self.fd, KVM_IRQ_LINE, &irq), "KVM_IRQ_LINE")

    def register_irqfd(self, int efd, uint32_t gsi) -> None:
        """Writing to ``efd`` raises an edge on ``gsi`` inside the kernel: no exit, no lock."""
        cdef kvm_irqfd req
        memset(&req, 0, sizeof(req))
        req.fd = efd
        req.gsi = gsi
        _check(ioctl(self.fd, KVM_IRQFD, &req), "KVM_IRQFD")

    def register_ioeventfd(self, int efd, uint64_t addr, uint32_t length=4, bint pio=False, datamatch=None) -> None:
        """A guest write to ``addr`` (matching ``datamatch`` if given) signals ``efd`` instead of exiting."""
        cdef kvm_ioeventfd req
        memset(&req, 0, sizeof(req))
        req.addr = addr
        req.len = length
        req.fd = efd
        req.flags = KVM_IOEVENTFD_FLAG_PIO if pio else 0
        if datamatch is not None:
            req.flags |= KVM_IOEVENTFD_FLAG_DATAMATCH
            req.datamatch = datamatch
        _check(ioctl(self.fd, KVM_IOEVENTFD, &req), "KVM_IOEVENTFD")

    def supported_cpuid(self) -> list:
        """KVM_GET_SUPPORTED_CPUID as a list of [function, index, flags, eax, ebx, ecx, edx] (asked once per
        process: it describes the host, not the VM)."""
        global _supported_cpuid
        if _supported_cpuid is None:
            _supported_cpuid = self._query_cpuid()
        return [list(e) for e in _supported_cpuid]

    def _query_cpuid(self) -> list:
        cdef kvm_cpuid2 *c = <kvm_cpuid2 *>calloc(1, sizeof(kvm_cpuid2) + MAX_CPUID_ENTRIES * sizeof(kvm_cpuid_entry2))
        if c == NULL:
            raise MemoryError()
        try:
            c.nent = MAX_CPUID_ENTRIES
            _check(ioctl(self.kvm_fd, KVM_GET_SUPPORTED_CPUID, c), "KVM_GET_SUPPORTED_CPUID")
            return [(c.entries[i].function, c.entries[i].index, c.entries[i].flags, c.entries[i].eax,
                     c.entries[i].ebx, c.entries[i].ecx, c.entries[i].edx) for i in range(c.nent)]
        finally:
            free(c)

    def create_vcpu(self, int index) -> int:
        return _check(ioctl(self.fd, KVM_CREATE_VCPU, index), "KVM_CREATE_VCPU")
