# cython: language_level=3
"""One virtual CPU: x86-64 long-mode setup, CPUID/MSR/LAPIC, and the run loop.

``run()`` calls ``KVM_RUN`` with the GIL released; on an I/O or MMIO exit it takes the GIL and dispatches to the
port or MMIO bus (devices are Cython classes, so dispatch is C calls). ``request_stop()`` may be called from any
thread: it sets ``immediate_exit`` and signals the vCPU thread so a blocked ``KVM_RUN`` returns at once.

On kvm_pvm hosts (``pvm_quirks``) a few instructions the software hypervisor cannot emulate in guest kernel mode
are handled here: ``int3`` is re-injected after advancing RIP, ``fwait`` and ``(v)ldmxcsr`` are skipped.
"""

from libc.errno cimport errno, EINTR, EAGAIN
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset, strerror
from posix.mman cimport mmap, munmap, PROT_READ, PROT_WRITE, MAP_SHARED, MAP_FAILED
from posix.unistd cimport close as c_close
from posix.ioctl cimport ioctl
from libc.stdlib cimport calloc, free

from _vmcore.linux_kvm cimport *
from _vmcore.kvm cimport Vm
from _vmcore.memory cimport GuestMemory
from _vmcore.bus cimport Bus

from _vmcore.errors import KvmError
from _vmcore.pvm_quirks import INT3, classify

cdef extern from "<pthread.h>" nogil:
    ctypedef unsigned long pthread_t
    pthread_t pthread_self()
    int pthread_kill(pthread_t thread, int sig)

cdef extern from "<signal.h>" nogil:
    ctypedef struct sigset_t:
        pass
    ctypedef struct struct_sigaction "struct sigaction":
        void (*sa_handler)(int) noexcept nogil
        sigset_t sa_mask
        int sa_flags
    int sigaction(int sig, const struct_sigaction *act, struct_sigaction *old)
    int sigemptyset(sigset_t *s)
    int SIGRTMIN

cdef int KICK_SIGNAL_OFFSET = 6
# SYSENTER_CS/ESP/EIP, PAT, STAR, LSTAR, CSTAR, SFMASK, KERNEL_GS_BASE, TSC_AUX, MISC_ENABLE, MTRRdefType, TSC
SAVED_MSRS = (0x174, 0x175, 0x176, 0x277, 0xC0000081, 0xC0000082, 0xC0000083, 0xC0000084, 0xC0000102,
              0xC0000103, 0x1A0, 0x2FF, 0x10)
cdef bint _kick_installed = False


cdef void _kick_handler(int sig) noexcept nogil:
    pass  # exists only to interrupt KVM_RUN with EINTR


cdef int _install_kick_signal() except -1:
    global _kick_installed
    cdef struct_sigaction act
    if _kick_installed:
        return 0
    memset(&act, 0, sizeof(act))
    act.sa_handler = _kick_handler
    sigemptyset(&act.sa_mask)
    act.sa_flags = 0  # no SA_RESTART: the ioctl must return EINTR
    if sigaction(SIGRTMIN + KICK_SIGNAL_OFFSET, &act, NULL) != 0:
        raise KvmError("cannot install the vCPU kick signal handler")
    _kick_installed = True
    return 0


cdef int _check(long r, str what) except -1:
    if r < 0:
        err = errno
        raise KvmError(f"{what} failed: {strerror(err).decode()} (errno {err})")
    return <int>r


cdef inline void _set_seg(kvm_segment *s, uint16_t sel, uint8_t type_, uint8_t db, uint8_t l, uint8_t system) noexcept:
    s.base = 0
    s.limit = 0xFFFFFFFF
    s.selector = sel
    s.type = type_
    s.present = 1
    s.dpl = 0
    s.db = db
    s.s = 0 if system else 1
    s.l = l
    s.g = 1
    s.avl = 0
    s.unusable = 0


cdef class Vcpu:
    """vCPU ``index`` of ``vm``; port I/O goes to ``pio``, MMIO to ``mmio``."""

    cdef readonly int index
    cdef readonly int fd
    cdef kvm_run *run_area
    cdef size_t run_size
    cdef Bus pio
    cdef Bus mmio
    cdef GuestMemory mem
    cdef public bint pvm_quirks
    cdef int stop_requested
    cdef pthread_t thread
    cdef bint has_thread
    cdef readonly list device_errors
    cdef readonly dict quirks
    cdef readonly str detail

    def __cinit__(self):
        self.fd = -1
        self.run_area = NULL

    def __init__(self, Vm vm not None, int index, GuestMemory mem not None, Bus pio not None, Bus mmio not None):
        _install_kick_signal()
        self.index = index
        self.mem = mem
        self.pio = pio
        self.mmio = mmio
        self.device_errors = []
        self.quirks = {}
        self.detail = ""
        self.fd = vm.create_vcpu(index)
        self.run_size = vm.run_size
        cdef void *p = mmap(NULL, self.run_size, PROT_READ | PROT_WRITE, MAP_SHARED, self.fd, 0)
        if p == MAP_FAILED:
            c_close(self.fd)
            self.fd = -1
            raise KvmError("cannot map the vCPU run area")
        self.run_area = <kvm_run *>p

    def close(self) -> None:
        if self.run_area != NULL:
            munmap(self.run_area, self.run_size)
            self.run_area = NULL
        if self.fd >= 0:
            c_close(self.fd)
            self.fd = -1

    def __dealloc__(self):
        if self.run_area != NULL:
            munmap(self.run_area, self.run_size)
        if self.fd >= 0:
            c_close(self.fd)

    # ---- setup -------------------------------------------------------------------------------------------
    def set_cpuid(self, list entries) -> None:
        cdef size_t n = len(entries)
        cdef kvm_cpuid2 *c = <kvm_cpuid2 *>calloc(1, sizeof(kvm_cpuid2) + n * sizeof(kvm_cpuid_entry2))
        if c == NULL:
            raise MemoryError()
        try:
            c.nent = n
            for i, e in enumerate(entries):
                c.entries[i].function, c.entries[i].index, c.entries[i].flags = e[0], e[1], e[2]
                c.entries[i].eax, c.entries[i].ebx, c.entries[i].ecx, c.entries[i].edx = e[3], e[4], e[5], e[6]
            _check(ioctl(self.fd, KVM_SET_CPUID2, c), "KVM_SET_CPUID2")
        finally:
            free(c)

    def set_msrs(self, list pairs) -> None:
        cdef size_t n = len(pairs)
        cdef kvm_msrs *m = <kvm_msrs *>calloc(1, sizeof(kvm_msrs) + n * sizeof(kvm_msr_entry))
        if m == NULL:
            raise MemoryError()
        try:
            m.nmsrs = n
            for i, (idx, val) in enumerate(pairs):
                m.entries[i].index = idx
                m.entries[i].data = val
            done = _check(ioctl(self.fd, KVM_SET_MSRS, m), "KVM_SET_MSRS")
            if done != n:
                raise KvmError(f"KVM_SET_MSRS set {done} of {n} MSRs (first refused: {pairs[done][0]:#x})")
        finally:
            free(m)

    def setup_lapic(self) -> None:
        """LINT0 as ExtINT (the legacy PIC reaches CPU 0) and LINT1 as NMI, as a BIOS leaves them."""
        cdef kvm_lapic_state st
        cdef uint32_t v
        _check(ioctl(self.fd, KVM_GET_LAPIC, &st), "KVM_GET_LAPIC")
        memcpy(&v, &st.regs[0x350], 4)
        v = (v & ~<uint32_t>0x700) | 0x700
        memcpy(&st.regs[0x350], &v, 4)
        memcpy(&v, &st.regs[0x360], 4)
        v = (v & ~<uint32_t>0x700) | 0x400
        memcpy(&st.regs[0x360], &v, 4)
        _check(ioctl(self.fd, KVM_SET_LAPIC, &st), "KVM_SET_LAPIC")

    def setup_fpu(self) -> None:
        cdef kvm_fpu f
        memset(&f, 0, sizeof(f))
        f.fcw = 0x37F
        f.mxcsr = 0x1F80
        _check(ioctl(self.fd, KVM_SET_FPU, &f), "KVM_SET_FPU")

    def setup_long_mode(self, uint64_t entry, uint64_t boot_params, uint64_t gdt_base, uint16_t gdt_limit,
                        uint64_t idt_base, uint64_t pml4, uint64_t stack) -> None:
        """64-bit mode with paging on through identity page tables at ``pml4``; RSI points at boot_params."""
        cdef kvm_sregs s
        cdef kvm_regs r
        _check(ioctl(self.fd, KVM_GET_SREGS, &s), "KVM_GET_SREGS")
        _set_seg(&s.cs, 0x10, 11, 0, 1, 0)
        _set_seg(&s.ds, 0x18, 3, 1, 0, 0)
        s.es = s.ds
        s.fs = s.ds
        s.gs = s.ds
        s.ss = s.ds
        _set_seg(&s.tr, 0x20, 11, 0, 0, 1)
        s.tr.limit = 0xFFFFF
        s.tr.g = 0
        s.gdt.base = gdt_base
        s.gdt.limit = gdt_limit
        s.idt.base = idt_base
        s.idt.limit = 7
        s.cr0 = 0x80000031  # PG | NE | ET | PE
        s.cr3 = pml4
        s.cr4 = 0x20  # PAE
        s.efer = 0x500  # LME | LMA
        _check(ioctl(self.fd, KVM_SET_SREGS, &s), "KVM_SET_SREGS")
        memset(&r, 0, sizeof(r))
        r.rflags = 2
        r.rip = entry
        r.rsi = boot_params
        r.rsp = stack
        r.rbp = stack
        _check(ioctl(self.fd, KVM_SET_REGS, &r), "KVM_SET_REGS")

    def get_regs(self) -> dict:
        cdef kvm_regs r
        _check(ioctl(self.fd, KVM_GET_REGS, &r), "KVM_GET_REGS")
        return {"rip": r.rip, "rsp": r.rsp, "rflags": r.rflags, "rax": r.rax, "rbx": r.rbx, "rcx": r.rcx,
                "rdx": r.rdx, "rsi": r.rsi, "rdi": r.rdi, "rbp": r.rbp}

    # ---- state, for snapshots ----------------------------------------------------------------------------
    def save_state(self) -> dict:
        """Registers, segment/control registers, FPU, LAPIC, pending events, MP state and the common MSRs, as
        plain bytes and ints (the raw KVM structures of this host's ABI). Call it while the vCPU is stopped."""
        cdef kvm_regs r
        cdef kvm_sregs s
        cdef kvm_fpu f
        cdef kvm_lapic_state l
        cdef kvm_vcpu_events e
        cdef kvm_mp_state mp
        _check(ioctl(self.fd, KVM_GET_REGS, &r), "KVM_GET_REGS")
        _check(ioctl(self.fd, KVM_GET_SREGS, &s), "KVM_GET_SREGS")
        _check(ioctl(self.fd, KVM_GET_FPU, &f), "KVM_GET_FPU")
        _check(ioctl(self.fd, KVM_GET_LAPIC, &l), "KVM_GET_LAPIC")
        _check(ioctl(self.fd, KVM_GET_VCPU_EVENTS, &e), "KVM_GET_VCPU_EVENTS")
        _check(ioctl(self.fd, KVM_GET_MP_STATE, &mp), "KVM_GET_MP_STATE")
        return {"index": self.index, "regs": (<char *>&r)[:sizeof(r)], "sregs": (<char *>&s)[:sizeof(s)],
                "fpu": (<char *>&f)[:sizeof(f)], "lapic": (<char *>&l)[:sizeof(l)],
                "events": (<char *>&e)[:sizeof(e)], "mp_state": mp.mp_state, "msrs": self.get_msrs(SAVED_MSRS)}

    def restore_state(self, dict st) -> None:
        cdef kvm_regs r
        cdef kvm_sregs s
        cdef kvm_fpu f
        cdef kvm_lapic_state l
        cdef kvm_vcpu_events e
        cdef kvm_mp_state mp
        for name, size in (("regs", sizeof(r)), ("sregs", sizeof(s)), ("fpu", sizeof(f)), ("lapic", sizeof(l)),
                           ("events", sizeof(e))):
            if len(st[name]) != size:
                raise KvmError(f"saved {name} is {len(st[name])} bytes, this host's KVM wants {size}")
        memcpy(&s, <const char *>st["sregs"], sizeof(s))
        memcpy(&r, <const char *>st["regs"], sizeof(r))
        memcpy(&f, <const char *>st["fpu"], sizeof(f))
        memcpy(&l, <const char *>st["lapic"], sizeof(l))
        memcpy(&e, <const char *>st["events"], sizeof(e))
        mp.mp_state = st["mp_state"]
        _check(ioctl(self.fd, KVM_SET_SREGS, &s), "KVM_SET_SREGS")
        _check(ioctl(self.fd, KVM_SET_REGS, &r), "KVM_SET_REGS")
        _check(ioctl(self.fd, KVM_SET_FPU, &f), "KVM_SET_FPU")
        _check(ioctl(self.fd, KVM_SET_LAPIC, &l), "KVM_SET_LAPIC")
        _check(ioctl(self.fd, KVM_SET_VCPU_EVENTS, &e), "KVM_SET_VCPU_EVENTS")
        _check(ioctl(self.fd, KVM_SET_MP_STATE, &mp), "KVM_SET_MP_STATE")
        self.set_msrs(list(st["msrs"]))

    def get_xsave(self):
        """XSAVE area and XCRs as raw bytes, or None where this host's KVM has no XSAVE support."""
        cdef kvm_xsave x
        cdef kvm_xcrs c
        if ioctl(self.fd, KVM_GET_XSAVE, &x) < 0 or ioctl(self.fd, KVM_GET_XCRS, &c) < 0:
            return None
        return {"xsave": (<char *>&x)[:sizeof(x)], "xcrs": (<char *>&c)[:sizeof(c)]}

    def set_xsave(self, dict st) -> None:
        cdef kvm_xsave x
        cdef kvm_xcrs c
        if len(st["xsave"]) != sizeof(x) or len(st["xcrs"]) != sizeof(c):
            raise KvmError("saved XSAVE state does not fit this host's KVM")
        memcpy(&x, <const char *>st["xsave"], sizeof(x))
        memcpy(&c, <const char *>st["xcrs"], sizeof(c))
        _check(ioctl(self.fd, KVM_SET_XSAVE, &x), "KVM_SET_XSAVE")
        _check(ioctl(self.fd, KVM_SET_XCRS, &c), "KVM_SET_XCRS")

    def complete_pending_io(self) -> None:
        """Let KVM finish an instruction whose I/O exit we already served (an MMIO or port read's result waits in
        the run area), without running the guest further: required before saving the vCPU's state."""
        cdef int r
        if self.run_area == NULL:
            raise KvmError("vCPU is closed")
        self.run_area.immediate_exit = 1
        r = ioctl(self.fd, KVM_RUN, 0)
        self.run_area.immediate_exit = 0
        if r < 0 and errno != EINTR and errno != EAGAIN:
            _check(r, "KVM_RUN (complete pending I/O)")

    def clear_stop(self) -> None:
        """Undo ``request_stop()`` so that ``run()`` can be called again (resume after a pause)."""
        self.stop_requested = 0
        if self.run_area != NULL:
            self.run_area.immediate_exit = 0

    def get_msrs(self, indices) -> list:
        """[(index, value)] for the MSRs this host's KVM lets us read, in order."""
        cdef size_t n = len(indices)
        cdef kvm_msrs *m = <kvm_msrs *>calloc(1, sizeof(kvm_msrs) + n * sizeof(kvm_msr_entry))
        if m == NULL:
            raise MemoryError()
        try:
            m.nmsrs = n
            for i, idx in enumerate(indices):
                m.entries[i].index = idx
            done = _check(ioctl(self.fd, KVM_GET_MSRS, m), "KVM_GET_MSRS")
            return [(m.entries[i].index, m.entries[i].data) for i in range(done)]
        finally:
            free(m)

    # ---- run loop ----------------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Ask the run loop to return; safe from any thread, including the vCPU's own device handlers."""
        self.stop_requested = 1
        if self.run_area != NULL:
            self.run_area.immediate_exit = 1
        if self.has_thread and self.thread != pthread_self():
            pthread_kill(self.thread, SIGRTMIN + KICK_SIGNAL_OFFSET)

    cdef _dispatch_io(self):
        cdef kvm_run *run = self.run_area
        cdef uint8_t *data = <uint8_t *>run + run.io.data_offset
        cdef unsigned int size = run.io.size
        cdef uint64_t value
        cdef uint32_t i
        for i in range(run.io.count):
            if run.io.direction == KVM_EXIT_IO_OUT:
                value = 0
                memcpy(&value, data + i * size, size)
                self.pio.write(run.io.port, size, value)
            else:
                value = self.pio.read(run.io.port, size)
                memcpy(data + i * size, &value, size)

    cdef _dispatch_mmio(self):
        cdef kvm_run *run = self.run_area
        cdef uint64_t value = 0
        cdef unsigned int size = run.mmio.len
        if size > 8:
            return
        if run.mmio.is_write:
            memcpy(&value, run.mmio.data, size)
            self.mmio.write(run.mmio.phys_addr, size, value)
        else:
            value = self.mmio.read(run.mmio.phys_addr, size)
            memcpy(run.mmio.data, &value, size)

    cdef bint _handle_emulation_failure(self) except -1:
        """Step over what kvm_pvm cannot emulate in guest kernel mode; False when the instruction is unknown."""
        cdef kvm_run *run = self.run_area
        cdef kvm_regs r
        cdef kvm_translation t
        cdef kvm_vcpu_events ev
        cdef uint8_t insn[16]
        cdef int n = 0
        _check(ioctl(self.fd, KVM_GET_REGS, &r), "KVM_GET_REGS")
        if (run.emulation_failure.flags & KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES) \
                and run.emulation_failure.insn_size > 0:
            n = min(<int>run.emulation_failure.insn_size, 15)
            memcpy(insn, run.emulation_failure.insn_bytes, n)
        else:
            memset(&t, 0, sizeof(t))
            t.linear_address = r.rip
            if ioctl(self.fd, KVM_TRANSLATE, &t) == 0 and t.valid and self.mem.contains(t.physical_address, 15):
                n = 15
                memcpy(insn, self.mem.base + t.physical_address, n)
        code = bytes(insn[:n])
        self.detail = f"emulation failure at rip {r.rip:#x}: " + code.hex(" ")
        action = classify(code)
        if action is None:
            return False
        kind, length = action
        r.rip += length
        _check(ioctl(self.fd, KVM_SET_REGS, &r), "KVM_SET_REGS")
        if kind == INT3:  # deliver #BP as the CPU would have, with RIP after the int3
            _check(ioctl(self.fd, KVM_GET_VCPU_EVENTS, &ev), "KVM_GET_VCPU_EVENTS")
            ev.exception.injected = 1
            ev.exception.nr = 3
            ev.exception.has_error_code = 0
            ev.exception.pending = 0
            _check(ioctl(self.fd, KVM_SET_VCPU_EVENTS, &ev), "KVM_SET_VCPU_EVENTS")
        name = kind if kind == INT3 else code[:length].hex(" ")
        self.quirks[name] = self.quirks.get(name, 0) + 1
        return True

    def run(self) -> str:
        """Run until the guest stops or ``request_stop()``; returns why: stopped, hlt, shutdown, reset,
        poweroff, crash, fail_entry, internal_error or unknown_exit."""
        cdef int r, err
        cdef uint32_t reason
        cdef kvm_run *run = self.run_area
        if run == NULL:
            raise KvmError("vCPU is closed")
        self.thread = pthread_self()
        self.has_thread = True
        try:
            while True:
                if self.stop_requested:
                    return "stopped"
                with nogil:
                    r = ioctl(self.fd, KVM_RUN, 0)
                    err = errno
                if r < 0:
                    if err == EINTR or err == EAGAIN:
                        run.immediate_exit = 0
                        continue
                    raise KvmError(f"KVM_RUN failed: {strerror(err).decode()} (errno {err})")
                reason = run.exit_reason
                if reason == KVM_EXIT_IO:
                    try:
                        self._dispatch_io()
                    except Exception as e:
                        self.device_errors.append(f"pio {run.io.port:#x}: {e!r}")
                elif reason == KVM_EXIT_MMIO:
                    try:
                        self._dispatch_mmio()
                    except Exception as e:
                        self.device_errors.append(f"mmio {run.mmio.phys_addr:#x}: {e!r}")
                elif reason == KVM_EXIT_HLT:
                    return "hlt"
                elif reason == KVM_EXIT_SHUTDOWN:
                    return "shutdown"
                elif reason == KVM_EXIT_SYSTEM_EVENT:
                    if run.system_event.type == KVM_SYSTEM_EVENT_RESET:
                        return "reset"
                    if run.system_event.type == KVM_SYSTEM_EVENT_SHUTDOWN:
                        return "poweroff"
                    return "crash"
                elif reason == KVM_EXIT_INTERNAL_ERROR:
                    if run.internal.suberror == KVM_INTERNAL_ERROR_EMULATION and self.pvm_quirks:
                        if self._handle_emulation_failure():
                            continue
                    elif not self.detail:
                        self.detail = f"internal error, suberror {run.internal.suberror}"
                    return "internal_error"
                elif reason == KVM_EXIT_FAIL_ENTRY:
                    self.detail = f"hardware entry failure {run.fail_entry.hardware_entry_failure_reason:#x}"
                    return "fail_entry"
                elif reason == KVM_EXIT_INTR:
                    continue
                else:
                    self.detail = f"unhandled exit reason {reason}"
                    return "unknown_exit"
        finally:
            self.has_thread = False
