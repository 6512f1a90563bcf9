"""A microVM built from a plain config: guest RAM, a kernel, virtio-mmio devices and one thread per vCPU.

    cfg = MachineConfig(kernel="/path/libkrunfw.so.5", memory_mib=256,
                        disks=[Disk("root.ext4", read_only=True)], cmdline_extra="root=/dev/vda ro")
    with Machine(cfg) as m:
        m.start()
        m.wait_for_console("Run /init", timeout=300)

Layout: RAM at guest physical 0 (at most 3328 MiB, below the MMIO window); virtio-mmio devices (the console, the
disks, the virtio-fs shares, any others) at 0xd0000000 + 4 KiB each with IRQs 5, 6, 7, 9, 10, ...
(``_vmcore.layout``: ISA lines of the PIC and I/O APIC, raised through irqfd; with more than one vCPU an MP table
describes the vCPUs and the I/O APIC); i8042 at port 0x60, CMOS at 0x70, an 8250 UART at 0x3f8 for kernels that
have the driver. Guest reset (i8042 0xFE, triple fault) and poweroff stop every vCPU; ``exit_reason`` tells which.

Snapshots (issue 9): ``m.snapshot(dir)`` pauses the vCPUs and writes the machine (``_vmcore.snapshot`` has the
format); ``Machine.restore(dir, cfg).start()`` goes on from there with guest RAM mapped copy-on-write from
the snapshot's memory file, so machines restored from one snapshot share the pages they do not write. ``pause()``
and ``resume()`` are there on their own too.
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from _vmcore import bootparams, host, loader, mptable, snapshot
from _vmcore.bus import Bus
from _vmcore.devices.cmos import Cmos
from _vmcore.devices.i8042 import I8042
from _vmcore.devices.uart8250 import Uart8250
from _vmcore.devices.virtio_blk import VirtioBlk
from _vmcore.devices.virtio_console import VirtioConsole
from _vmcore.devices.virtio_mmio import MMIO_SIZE, QUEUE_NOTIFY_OFFSET, MmioTransport
from _vmcore.errors import BootError, GuestMemoryError, KvmError, SnapshotError, VmmError
from _vmcore.eventloop import EventLoop
from _vmcore.kvm import Vm, new_eventfd
from _vmcore.layout import DEVICE_IRQS, MAX_DEVICES, MAX_MEMORY_MIB, MMIO_BASE
from _vmcore.memory import GuestMemory
from _vmcore.vcpu import Vcpu

if TYPE_CHECKING:
    from _vmcore.devices.virtio_device import VirtioDevice
    from _vmcore.devices.virtio_fs import VirtioFs
    from _vmcore.fs import FuseServer

TSS_ADDR = 0xFFFB_D000
IDENTITY_MAP_ADDR = 0xFFFB_C000
CONSOLE_LOG_MAX = 4 << 20
CONSOLE_LINES_MAX = 100_000
BASE_CMDLINE = "console=hvc0 reboot=k panic=-1 no_timer_check i8042.noaux i8042.nomux i8042.dumbkbd"
# kvm_pvm emulates guest kernel mode and lacks some instructions; keep the kernel off them (see vcpu.pyx).
PVM_CMDLINE = (
    "noxsave clearcpuid=cx16,popcnt,sse4_2,smap,smep,umip,pku,fsgsbase,rdrand,rdseed,avx,avx2,avx512f,bmi1,bmi2,erms,"
    "fsrm,movbe,adx,sha_ni,aes,pclmulqdq,gfni,vaes,vpclmulqdq,f16c,fma,rdpid,clwb,clflushopt "
    "initcall_blacklist=jent_mod_init,calibrate_xor_blocks,raid6_select_algo,ptp_kvm_init,init_btrfs_fs "
    "cryptomgr.notests"
)
POWER_DOWN_MESSAGE = "reboot: Power down"
MSR_IA32_MISC_ENABLE = 0x1A0
MSR_MTRR_DEF_TYPE = 0x2FF


@dataclass(frozen=True)
class Disk:
    path: str | None  # None: an empty slot that ``Machine.bind_disk`` fills later (a snapshot template's)
    read_only: bool = False
    serial: str = ""
    format: str = "raw"  # raw, qcow2 or vmdk: named, never guessed (a guest could write a header into a raw disk)


@dataclass
class MachineConfig:
    kernel: str
    memory_mib: int = 256
    vcpus: int = 1
    cmdline_extra: str = ""
    initramfs: bytes | None = None
    disks: list[Disk] = field(default_factory=list)
    console_ports: tuple[str, ...] = ()  # named virtio-console ports besides hvc0
    shares: list[VirtioFs] = field(default_factory=list)  # virtio-fs devices, after the disks; bound by tag
    extra_devices: list[VirtioDevice] = field(default_factory=list)  # any other backends, last
    console_log: str | None = None  # also append the console to this file
    kvm_kind: str | None = None  # override host detection (hardware | kvm_pvm)
    ioeventfd: bool = True  # queue notifies of devices that want it (disks) go to an eventfd thread, not a vCPU exit

    def validate(self) -> None:
        if not 16 <= self.memory_mib <= MAX_MEMORY_MIB:
            raise VmmError(f"memory_mib must be between 16 and {MAX_MEMORY_MIB}, not {self.memory_mib}")
        if not 1 <= self.vcpus <= mptable.MAX_VCPUS:
            raise VmmError(f"vcpus must be between 1 and {mptable.MAX_VCPUS}, not {self.vcpus}")
        if 1 + len(self.disks) + len(self.shares) + len(self.extra_devices) > MAX_DEVICES:
            raise VmmError(f"at most {MAX_DEVICES} virtio devices")
        tags = [share.tag for share in self.shares]
        if len(set(tags)) != len(tags):
            raise VmmError(f"virtio-fs tags must differ: {tags}")


class ConsoleLog:
    """What the guest printed on hvc0 (and the UART), with the time each line completed."""

    def __init__(self, path: str | None = None) -> None:
        self._buf = bytearray()
        self._cond = threading.Condition()
        self._file = open(path, "ab") if path else None
        self.lines: list[tuple[float, str]] = []
        self._partial = b""
        self.first_byte_at: float | None = None
        self.on_line: list = []  # callables(line) run for every complete line, outside the lock

    def write(self, data: bytes) -> None:
        now = time.monotonic()
        with self._cond:
            if self.first_byte_at is None:
                self.first_byte_at = now
            self._buf += data
            if len(self._buf) > CONSOLE_LOG_MAX:
                del self._buf[: len(self._buf) - CONSOLE_LOG_MAX // 2]
            *complete, self._partial = (self._partial + data).split(b"\n")
            new_lines = [line.decode(errors="replace").rstrip("\r") for line in complete]
            self.lines.extend((now, line) for line in new_lines)
            if len(self.lines) > CONSOLE_LINES_MAX:
                del self.lines[: len(self.lines) - CONSOLE_LINES_MAX // 2]
            if self._file:
                self._file.write(data)
                self._file.flush()
            self._cond.notify_all()
        for line in new_lines:
            for hook in self.on_line:
                hook(line)

    def text(self) -> str:
        with self._cond:
            return self._buf.decode(errors="replace")

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.text().splitlines()[-n:])

    def wait_for(self, pattern: str, timeout: float, stop: threading.Event | None = None) -> re.Match | None:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                m = rx.search(self._buf.decode(errors="replace"))
                if m or (stop is not None and stop.is_set()):
                    return m
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(min(left, 0.5))

    def close(self) -> None:
        if self._file:
            self._file.close()
            self._file = None

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()


class Machine:
    """One VM. ``start()`` boots it on background threads; ``stop()``/``close()`` end it (idempotent)."""

    def __init__(self, config: MachineConfig, restore_from: snapshot.Snapshot | None = None) -> None:
        config.validate()
        self._restore_from = restore_from
        self._pausing = False
        self.config = config
        self.console = ConsoleLog(config.console_log)
        self.exit_reason: str | None = None
        self.exit_detail = ""
        self.started_at: float | None = None
        self.stopped = threading.Event()
        self.timings: dict[str, float] = {}
        self._vm: Vm | None = None
        self._mem: GuestMemory | None = None
        self._vcpus: list[Vcpu] = []
        self._threads: list[threading.Thread] = []
        self._devices: list[VirtioDevice] = []
        self._fds: list[int] = []
        self.transports: list[MmioTransport] = []
        self.events: EventLoop | None = None
        self.console_device: VirtioConsole | None = None
        self.disks: list[VirtioBlk] = []
        self.shares: dict[str, VirtioFs] = {share.tag: share for share in config.shares}
        kind = config.kvm_kind or str(host.detect_kvm().kind)
        self.pvm = kind == "kvm_pvm"
        self.cmdline = ""
        self.console.on_line.append(self._watch_console)

    def _watch_console(self, line: str) -> None:
        # Without ACPI a guest poweroff ends in a halted CPU that never exits to us; its last words tell.
        if line.endswith(POWER_DOWN_MESSAGE):
            self._request_stop("poweroff")

    # ---- build ---------------------------------------------------------------------------------------------
    def _build(self) -> None:
        cfg = self.config
        t0 = time.monotonic()
        snap = self._restore_from
        if snap is not None and snap.identity.get("memory_mib") != cfg.memory_mib:  # before mapping past its end
            raise SnapshotError(f"snapshot {snap.path} was made for another machine (memory_mib: snapshot has "
                                f"{snap.identity.get('memory_mib')}, machine has {cfg.memory_mib})")
        if snap is None:
            kernel = loader.load_kernel(cfg.kernel)
            self.timings["kernel_loaded"] = time.monotonic() - t0
            mem = self._mem = GuestMemory(cfg.memory_mib << 20)
        else:  # copy-on-write over the snapshot's memory file: clones share every page they do not write
            try:
                mem = self._mem = GuestMemory.from_file(snap.memory_path, cfg.memory_mib << 20)
            except GuestMemoryError as e:
                if os.path.exists(snap.memory_path):  # out of memory or descriptors: the snapshot is fine
                    raise
                # removed since it was read (a template evicted meanwhile): that snapshot is gone, rebuild it
                raise SnapshotError(f"snapshot {snap.path}: {e}") from None
        vm = self._vm = Vm()
        vm.set_tss_addr(TSS_ADDR)
        vm.set_identity_map_addr(IDENTITY_MAP_ADDR)
        vm.add_memory(0, 0, mem)
        vm.create_irqchip()  # after the memory slot: the other order costs ~7 ms on kvm_pvm (bench/boot.py)
        vm.create_pit()  # without a PIT the guest has no timer to tick with or to calibrate its APIC timer against
        if snap is None:
            kernel.place(mem)
        self.pio, self.mmio = Bus("pio"), Bus("mmio")
        self.i8042 = I8042(on_reset=lambda: self._request_stop("reset"))
        self.pio.insert(0x60, 5, self.i8042)
        self.pio.insert(0x70, 2, Cmos())
        self.uart = Uart8250(self.console.write)
        self.pio.insert(0x3F8, 8, self.uart)

        backends = []
        self.console_device = VirtioConsole(cfg.console_ports, console_sink=self.console.write)
        backends.append(self.console_device)
        for disk in cfg.disks:
            blk = VirtioBlk(disk.path, read_only=disk.read_only, serial=disk.serial, format=disk.format)
            self.disks.append(blk)
            backends.append(blk)
        backends.extend(cfg.shares)
        backends.extend(cfg.extra_devices)
        self._devices = backends
        mmio_args = []
        for i, dev in enumerate(backends):
            irq = DEVICE_IRQS[i]
            efd = new_eventfd()
            self._fds.append(efd)
            vm.register_irqfd(efd, irq)
            transport = MmioTransport(dev, mem, efd)
            self.transports.append(transport)
            base = MMIO_BASE + i * MMIO_SIZE
            self.mmio.insert(base, MMIO_SIZE, transport)
            mmio_args.append(f"virtio_mmio.device=4K@{base:#x}:{irq}")
            if cfg.ioeventfd and dev.wants_ioeventfd():
                self._wire_ioeventfds(transport, base, len(dev.queues))

        parts = [BASE_CMDLINE]
        if self.pvm:
            parts.append(PVM_CMDLINE)
        parts.extend(mmio_args)
        if cfg.cmdline_extra:
            parts.append(cfg.cmdline_extra)
        self.cmdline = " ".join(parts)
        if snap is not None:
            snapshot.check_identity(snap, self.identity())
        else:
            layout = bootparams.write_boot_layout(mem, self.cmdline, cfg.initramfs, kernel.setup_header, kernel.end)
            if cfg.vcpus > 1:  # one vCPU keeps the legacy-PIC path of the measured recipe (booted faster here)
                mem.write(mptable.MPTABLE_ADDR, mptable.build_mptable(cfg.vcpus))

        cpuid = vm.supported_cpuid()
        for index in range(cfg.vcpus):
            vcpu = Vcpu(vm, index, mem, self.pio, self.mmio)
            vcpu.pvm_quirks = self.pvm
            vcpu.set_cpuid(self._cpuid_for(cpuid, index))
            self._vcpus.append(vcpu)
            if snap is not None:
                continue
            vcpu.set_msrs([(MSR_IA32_MISC_ENABLE, 1), (MSR_MTRR_DEF_TYPE, 0x806)])
            vcpu.setup_lapic()
            vcpu.setup_fpu()
            if index == 0:  # the others wait for INIT/SIPI from the guest, as on real hardware
                vcpu.setup_long_mode(kernel.entry, layout["boot_params"], layout["gdt"], layout["gdt_limit"],
                                     layout["idt"], layout["pml4"], layout["stack"])
        if snap is not None:
            self._apply_state(snap.state)
        self.timings["built"] = time.monotonic() - t0

    def _wire_ioeventfds(self, transport: MmioTransport, base: int, nqueues: int) -> None:
        if self.events is None:
            self.events = EventLoop()
        for q in range(nqueues):
            efd = new_eventfd(nonblocking=True)
            self._fds.append(efd)
            self._vm.register_ioeventfd(efd, base + QUEUE_NOTIFY_OFFSET, 4, datamatch=q)
            self.events.add(efd, lambda t=transport, q=q: t.notify(q))

    def _cpuid_for(self, entries: list, index: int) -> list:
        out = []
        for e in entries:
            e = list(e)
            fn = e[0]
            if fn == 1:
                e[5] |= 1 << 31  # hypervisor present
                e[4] = (e[4] & 0x00FFFFFF) | (index << 24)  # initial APIC id
                if self.pvm:
                    e[5] &= ~(1 << 13)  # CX16: cmpxchg16b is not emulated by kvm_pvm
            elif fn in (0xB, 0x1F):
                e[6] = index  # x2APIC id
            out.append(e)
        return out

    # ---- run -----------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._vcpus:
            raise VmmError("machine already started")
        self.started_at = time.monotonic()
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        if self.events is not None:
            self.events.start()
        self._start_vcpu_threads()

    def _start_vcpu_threads(self) -> None:
        for vcpu in self._vcpus:
            t = threading.Thread(target=self._vcpu_main, args=(vcpu,), name=f"vcpu{vcpu.index}", daemon=True)
            self._threads.append(t)
            t.start()

    def _vcpu_main(self, vcpu: Vcpu) -> None:
        try:
            reason = vcpu.run()
        except Exception as e:  # never let a vCPU thread die silently
            reason = f"error: {e}"
        if reason == "stopped" and self._pausing:
            return
        self._request_stop(reason, vcpu.detail)

    # ---- snapshot and restore -------------------------------------------------------------------------------
    @classmethod
    def restore(cls, path: str | os.PathLike, config: MachineConfig, verify_memory: bool = True) -> Machine:
        """A machine that ``start()`` resumes from the snapshot at ``path`` instead of booting. ``config`` must
        describe the machine that was snapshotted (same kernel, initramfs, memory, vCPUs, devices): a mismatch,
        here or at ``start()``, raises SnapshotError. Disk paths may differ (a copy of the same image)."""
        return cls(config, restore_from=snapshot.read_snapshot(path, verify_memory=verify_memory))

    def bind_disk(self, slot: int, path: str, read_only: bool = False, serial: str = "",
                  format: str = "raw") -> None:
        """Give disk slot ``slot`` (its index in ``config.disks``, a ``Disk(None)``) the image at ``path``; the
        guest driver learns the new capacity from a configuration-change interrupt."""
        if not 0 <= slot < len(self.disks):
            raise VmmError(f"no disk slot {slot}: this machine has {len(self.disks)} disks")
        blk = self.disks[slot]
        blk.bind(path, read_only=read_only, serial=serial, format=format)
        self.transports[self._devices.index(blk)].config_changed()

    def bind_share(self, tag: str, server: FuseServer) -> None:
        """Give the empty virtio-fs slot ``tag`` (one of ``config.shares``) its FUSE server (the guest mounts the
        tag afterwards)."""
        share = self.shares.get(tag)
        if share is None:
            raise VmmError(f"no virtio-fs slot with tag {tag}")
        if share.server is not None:
            raise VmmError(f"virtio-fs slot {tag} is already bound")
        share.bind(server)

    def identity(self) -> dict:
        """What a snapshot of this machine is valid for (see ``_vmcore.snapshot``); each device says its part."""
        cfg = self.config
        initramfs = None if cfg.initramfs is None else snapshot.bytes_sha256(cfg.initramfs)
        return {"kernel_sha256": snapshot.file_sha256(cfg.kernel), "initramfs_sha256": initramfs,
                "memory_mib": cfg.memory_mib, "vcpus": cfg.vcpus, "cmdline": self.cmdline,
                "devices": [dev.identity() for dev in self._devices], "pvm": self.pvm}

    def pause(self, timeout: float = 10.0) -> None:
        """Stop every vCPU between two instructions (pending I/O completed) and keep it stopped."""
        if not self._vcpus or self.stopped.is_set():
            raise VmmError("only a running machine can be paused")
        self._pausing = True
        for vcpu in self._vcpus:
            vcpu.request_stop()
        for t in self._threads:
            t.join(timeout)
            if t.is_alive():
                raise VmmError(f"vCPU thread {t.name} did not pause within {timeout} s")
        self._threads = []
        if self.stopped.is_set():
            raise VmmError(f"the guest stopped ({self.exit_reason}) while being paused")
        for vcpu in self._vcpus:
            vcpu.complete_pending_io()

    def resume(self) -> None:
        if not self._pausing or self._threads:
            raise VmmError("machine is not paused")
        self._pausing = False
        for vcpu in self._vcpus:
            vcpu.clear_stop()
        self._start_vcpu_threads()

    @property
    def paused(self) -> bool:
        return self._pausing and not self._threads

    def snapshot(self, path: str | os.PathLike) -> Path:
        """Pause (if running) and write the machine to ``path``; it stays paused: ``resume()`` or ``close()`` it."""
        if not self.paused:
            self.pause()
        # the ioeventfd thread serves queues under the transport's lock, a console's host-input threads under the
        # device's own: hold both kinds (in the order process_queue takes them) while memory is copied
        locks = [t.lock for t in self.transports]
        locks += [t.device.lock for t in self.transports if t.device.lock is not None]
        for lock in locks:
            lock.acquire()
        try:
            state = {"vcpus": [self._vcpu_state(v) for v in self._vcpus],
                     "irqchip": [self._vm.get_irqchip(chip) for chip in snapshot.IRQCHIPS],
                     "clock": self._vm.get_clock(), "pit": self._vm.get_pit(),
                     "transports": [t.state() for t in self.transports], "uart": self.uart.state()}
            return snapshot.write_snapshot(path, self.identity(), self._mem, state)
        finally:
            for lock in locks:
                lock.release()

    @staticmethod
    def _vcpu_state(vcpu: Vcpu) -> dict:
        st = vcpu.save_state()
        msrs = []
        for index in snapshot.SNAPSHOT_MSRS:  # one by one: KVM stops a batch at the first MSR it refuses
            msrs.extend(vcpu.get_msrs([index]))
        st["msrs"] = msrs
        st["xsave"] = vcpu.get_xsave()
        return st

    def _apply_state(self, state: dict) -> None:
        try:
            if len(state["vcpus"]) != len(self._vcpus) or len(state["transports"]) != len(self.transports):
                raise SnapshotError("snapshot state does not match the machine's vCPUs and devices")
            for transport, st in zip(self.transports, state["transports"], strict=True):
                transport.set_state(st)
            for vcpu, st in zip(self._vcpus, state["vcpus"], strict=True):
                vcpu.restore_state(st)
                if st.get("xsave"):  # after sregs (CR4.OSXSAVE) and the legacy FPU image it extends
                    vcpu.set_xsave(st["xsave"])
            self.uart.set_state(state["uart"])
            for raw in state["irqchip"]:
                self._vm.set_irqchip(raw)
            self._vm.set_pit(state["pit"])
            self._vm.set_clock(state["clock"])
        except (KeyError, TypeError, ValueError, KvmError) as e:
            raise SnapshotError(f"snapshot state cannot be restored on this machine: {e!r}") from None

    def _request_stop(self, reason: str, detail: str = "") -> None:
        if self.exit_reason is None:
            self.exit_reason = reason
            self.exit_detail = detail
        for vcpu in self._vcpus:
            vcpu.request_stop()
        self.stopped.set()
        self.console.wake()

    def wait(self, timeout: float | None = None) -> str | None:
        """Wait for the guest to stop; returns the exit reason, or None on timeout."""
        self.stopped.wait(timeout)
        return self.exit_reason

    def wait_for_console(self, pattern: str, timeout: float) -> re.Match:
        """Wait until the console matches ``pattern``; raise BootError (with the console tail) if the guest
        stops first or the time runs out."""
        m = self.console.wait_for(pattern, timeout, self.stopped)
        if m is None:
            m = self.console.wait_for(pattern, 0)
        if m is None:
            if self.stopped.is_set():
                why = f"guest stopped ({self.exit_reason}{': ' + self.exit_detail if self.exit_detail else ''})"
            else:
                why = f"not seen within {timeout:.0f} s"
            raise BootError(f"waiting for {pattern!r}: {why}", self.console.tail(), self.exit_reason or "")
        return m

    def agent_socket(self, name: str):
        if self.console_device is None:
            raise VmmError("machine not started")
        return self.console_device.host_socket(name)

    def attach_port(self, name: str, sock):
        """Hand the named console port to ``sock`` (see ``VirtioConsole.attach``); an Event set when its other side
        has closed."""
        if self.console_device is None:
            raise VmmError("machine not started")
        return self.console_device.attach(name, sock)

    @property
    def device_errors(self) -> list[str]:
        errs = [f"{type(t.device).__name__}: {t.device.error}" for t in self.transports if t.device.error]
        if self.events is not None:
            errs.extend(self.events.errors)
        for v in self._vcpus:
            errs.extend(v.device_errors)
        return errs

    @property
    def vcpus(self) -> list[Vcpu]:
        return list(self._vcpus)

    def stop(self, timeout: float = 5.0) -> None:
        self._request_stop(self.exit_reason or "stopped")
        for t in self._threads:
            t.join(timeout)

    def close(self) -> None:
        self.stop()
        if self.events is not None:
            self.events.close()
            self.events = None
        for dev in self._devices:
            dev.close()
        for v in self._vcpus:
            v.close()
        if self._vm is not None:
            self._vm.close()
        if self._mem is not None:  # unmap now, not at garbage collection: a restored clone's mapping pins its file
            self._mem.close()
        for fd in self._fds:
            os.close(fd)
        self._fds = []
        self.console.close()

    def __enter__(self) -> Machine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
