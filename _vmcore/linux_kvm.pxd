# cython: language_level=3
"""Declarations from <linux/kvm.h> and <asm/kvm.h>: only what our VMM uses."""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t

cdef extern from "<linux/kvm.h>" nogil:
    unsigned long KVM_GET_API_VERSION, KVM_CREATE_VM, KVM_GET_VCPU_MMAP_SIZE, KVM_CHECK_EXTENSION
    unsigned long KVM_GET_SUPPORTED_CPUID, KVM_CREATE_VCPU, KVM_SET_USER_MEMORY_REGION, KVM_SET_TSS_ADDR
    unsigned long KVM_SET_IDENTITY_MAP_ADDR, KVM_CREATE_IRQCHIP, KVM_IRQ_LINE, KVM_IRQFD, KVM_IOEVENTFD
    unsigned long KVM_RUN, KVM_GET_REGS, KVM_SET_REGS, KVM_GET_SREGS, KVM_SET_SREGS, KVM_SET_CPUID2
    unsigned long KVM_SET_MSRS, KVM_GET_MSRS, KVM_GET_LAPIC, KVM_SET_LAPIC, KVM_SET_FPU, KVM_GET_FPU
    unsigned long KVM_GET_VCPU_EVENTS, KVM_SET_VCPU_EVENTS, KVM_TRANSLATE, KVM_GET_MP_STATE, KVM_SET_MP_STATE
    unsigned long KVM_GET_IRQCHIP, KVM_SET_IRQCHIP, KVM_GET_CLOCK, KVM_SET_CLOCK
    unsigned long KVM_CREATE_PIT2, KVM_GET_PIT2, KVM_SET_PIT2
    unsigned int KVM_PIT_SPEAKER_DUMMY
    unsigned long KVM_GET_XSAVE, KVM_SET_XSAVE, KVM_GET_XCRS, KVM_SET_XCRS
    unsigned int KVM_MEM_READONLY
    unsigned int KVM_IOEVENTFD_FLAG_DATAMATCH, KVM_IOEVENTFD_FLAG_PIO, KVM_IOEVENTFD_FLAG_DEASSIGN
    unsigned int KVM_IRQFD_FLAG_DEASSIGN

    enum:
        KVM_EXIT_UNKNOWN, KVM_EXIT_EXCEPTION, KVM_EXIT_IO, KVM_EXIT_HYPERCALL, KVM_EXIT_DEBUG, KVM_EXIT_HLT
        KVM_EXIT_MMIO, KVM_EXIT_IRQ_WINDOW_OPEN, KVM_EXIT_SHUTDOWN, KVM_EXIT_FAIL_ENTRY, KVM_EXIT_INTR
        KVM_EXIT_INTERNAL_ERROR, KVM_EXIT_SYSTEM_EVENT
        KVM_EXIT_IO_IN, KVM_EXIT_IO_OUT
        KVM_INTERNAL_ERROR_EMULATION
        KVM_SYSTEM_EVENT_SHUTDOWN, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_CRASH
        KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES

    struct kvm_userspace_memory_region:
        uint32_t slot
        uint32_t flags
        uint64_t guest_phys_addr
        uint64_t memory_size
        uint64_t userspace_addr

    struct kvm_irq_level:
        uint32_t irq
        uint32_t level

    struct kvm_irqfd:
        uint32_t fd
        uint32_t gsi
        uint32_t flags
        uint32_t resamplefd

    struct kvm_ioeventfd:
        uint64_t datamatch
        uint64_t addr
        uint32_t len
        int32_t fd
        uint32_t flags

    struct kvm_pit_config:
        uint32_t flags

    struct kvm_pit_state2:  # three channels' state and flags; sizeof() comes from the header
        uint32_t flags

    struct kvm_irqchip:  # the chip union (PIC or IOAPIC state) follows; sizeof() comes from the header
        uint32_t chip_id
        uint32_t pad

    struct kvm_clock_data:
        uint64_t clock
        uint32_t flags

    struct kvm_mp_state:
        uint32_t mp_state

    struct kvm_translation:
        uint64_t linear_address
        uint64_t physical_address
        uint8_t valid
        uint8_t writeable
        uint8_t usermode

    struct _run_io:
        uint8_t direction
        uint8_t size
        uint16_t port
        uint32_t count
        uint64_t data_offset

    struct _run_mmio:
        uint64_t phys_addr
        uint8_t data[8]
        uint32_t len
        uint8_t is_write

    struct _run_fail_entry:
        uint64_t hardware_entry_failure_reason
        uint32_t cpu

    struct _run_internal:
        uint32_t suberror
        uint32_t ndata
        uint64_t data[16]

    struct _run_emulation_failure:
        uint32_t suberror
        uint32_t ndata
        uint64_t flags
        uint8_t insn_size
        uint8_t insn_bytes[15]

    struct _run_system_event:
        uint32_t type
        uint32_t ndata

    struct kvm_run:
        uint8_t request_interrupt_window
        uint8_t immediate_exit
        uint32_t exit_reason
        _run_io io
        _run_mmio mmio
        _run_fail_entry fail_entry
        _run_internal internal
        _run_emulation_failure emulation_failure
        _run_system_event system_event

cdef extern from "<asm/kvm.h>" nogil:
    struct kvm_regs:
        uint64_t rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp
        uint64_t r8, r9, r10, r11, r12, r13, r14, r15
        uint64_t rip, rflags

    struct kvm_segment:
        uint64_t base
        uint32_t limit
        uint16_t selector
        uint8_t type
        uint8_t present, dpl, db, s, l, g, avl
        uint8_t unusable

    struct kvm_dtable:
        uint64_t base
        uint16_t limit

    struct kvm_sregs:
        kvm_segment cs, ds, es, fs, gs, ss, tr, ldt
        kvm_dtable gdt, idt
        uint64_t cr0, cr2, cr3, cr4, cr8, efer, apic_base

    struct kvm_fpu:
        uint16_t fcw
        uint32_t mxcsr

    struct kvm_msr_entry:
        uint32_t index
        uint32_t reserved
        uint64_t data

    struct kvm_msrs:
        uint32_t nmsrs
        kvm_msr_entry entries[0]

    struct kvm_cpuid_entry2:
        uint32_t function
        uint32_t index
        uint32_t flags
        uint32_t eax, ebx, ecx, edx

    struct kvm_cpuid2:
        uint32_t nent
        kvm_cpuid_entry2 entries[0]

    struct kvm_lapic_state:
        char regs[1024]

    struct _ev_exception:
        uint8_t injected
        uint8_t nr
        uint8_t has_error_code
        uint8_t pending
        uint32_t error_code

    struct kvm_vcpu_events:
        _ev_exception exception
        uint32_t flags

    struct kvm_xsave:
        uint32_t region[1024]

    struct kvm_xcrs:
        uint32_t nr_xcrs
        uint32_t flags
