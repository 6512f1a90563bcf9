"""vCPU state round trip (what a snapshot needs) on /dev/kvm, with the trivial guest."""

from __future__ import annotations

import pytest

from _vmcore import bootparams
from _vmcore.bus import Bus
from _vmcore.devices.i8042 import I8042
from _vmcore.errors import KvmError
from _vmcore.host import KvmKind, detect_kvm
from _vmcore.kvm import Vm
from _vmcore.loader import parse_elf
from _vmcore.machine import IDENTITY_MAP_ADDR, TSS_ADDR
from _vmcore.memory import GuestMemory
from _vmcore.vcpu import Vcpu
from tests.support.tinyguest import tiny_guest_elf

KVM = detect_kvm()
pytestmark = pytest.mark.skipif(KVM.kind is KvmKind.NONE, reason=f"needs /dev/kvm: {KVM.reason}")


def make_vcpu():
    vm = Vm()
    vm.set_tss_addr(TSS_ADDR)
    vm.set_identity_map_addr(IDENTITY_MAP_ADDR)
    mem = GuestMemory(16 << 20)
    vm.add_memory(0, 0, mem)
    vm.create_irqchip()
    kernel = parse_elf(tiny_guest_elf())
    kernel.place(mem)
    layout = bootparams.write_boot_layout(mem, "")
    pio = Bus("pio")
    vcpu = Vcpu(vm, 0, mem, pio, Bus("mmio"))
    pio.insert(0x60, 5, I8042(on_reset=vcpu.request_stop))
    vcpu.set_cpuid(vm.supported_cpuid())
    return vm, mem, vcpu, kernel, layout


def test_run_save_restore():
    vm, mem, vcpu, kernel, layout = make_vcpu()
    vcpu.setup_long_mode(kernel.entry, layout["boot_params"], layout["gdt"], layout["gdt_limit"], layout["idt"],
                         layout["pml4"], layout["stack"])
    assert vcpu.run() == "stopped"  # the guest asked for a reset after its first byte
    saved = vcpu.save_state()
    assert saved["regs"] and dict(saved["msrs"]).get(0x1A0) is not None
    rip = vcpu.get_regs()["rip"]
    assert kernel.entry < rip <= kernel.entry + 14

    vm2, mem2, vcpu2, _, _ = make_vcpu()
    vcpu2.restore_state(saved)
    again = vcpu2.save_state()
    assert again["regs"] == saved["regs"] and again["sregs"] == saved["sregs"]
    assert vcpu2.get_regs()["rip"] == rip
    for v, m, mm in ((vcpu, vm, mem), (vcpu2, vm2, mem2)):
        v.close()
        m.close()
        mm.close()


def test_restore_refuses_wrong_sizes():
    vm, mem, vcpu, _, _ = make_vcpu()
    st = vcpu.save_state()
    st["sregs"] = st["sregs"][:-1]
    with pytest.raises(KvmError, match="sregs"):
        vcpu.restore_state(st)
    vcpu.close()
    vm.close()
