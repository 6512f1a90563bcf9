/* PVH entry trampoline for a raw x86-64 Linux image that must be entered at startup_64 (libkrunfw's kernel).
 *
 * QEMU enters a PVH ELF in 32-bit protected mode, paging off, flat segments, %ebx = hvm_start_info. We copy the
 * command line pointer, the first module (the initrd), the ACPI RSDP and the memory map from hvm_start_info into a
 * boot_params page prepared by the host (pvh.py), switch to long mode on identity-mapped page tables (also
 * prepared by the host, 4 GiB of 2 MiB pages) and jump to the kernel's 64-bit entry with %rsi = boot_params.
 *
 * Assembled once into bytes held by tests/support/pvh.py (tests/vmcore/test_pvh_wrapper.py checks they match this
 * source):
 *   as --64 -o t.o pvh_trampoline.S && objcopy -O binary -j .text t.o t.bin
 * Layout of the 64 KiB trampoline segment at BASE (must match pvh.py): code at +0, GDT at +0x100, 64-bit entry
 * address slot at +0x200, PML4 +0x1000, PDPT +0x2000, PDs +0x3000..+0x6fff, boot_params +0x7000, stack up to +0x10000.
 */
        .set BASE, 0x200000
        .set BOOT_PARAMS, BASE + 0x7000
        .set PML4, BASE + 0x1000
        .set STACK_TOP, BASE + 0x10000

        .text
        .code32
        .globl _start
_start:
        cld
        movl $BOOT_PARAMS, %edi
        movl 0x18(%ebx), %eax           /* start_info.cmdline_paddr */
        movl %eax, 0x228(%edi)          /* hdr.cmd_line_ptr */
        movl 0x20(%ebx), %eax           /* start_info.rsdp_paddr */
        movl %eax, 0x70(%edi)           /* acpi_rsdp_addr */
        movl 0x0c(%ebx), %ecx           /* start_info.nr_modules */
        testl %ecx, %ecx
        jz 1f
        movl 0x10(%ebx), %esi           /* start_info.modlist_paddr */
        movl 0x00(%esi), %eax           /* modlist[0].paddr */
        movl %eax, 0x218(%edi)          /* hdr.ramdisk_image */
        movl 0x08(%esi), %eax           /* modlist[0].size */
        movl %eax, 0x21c(%edi)          /* hdr.ramdisk_size */
1:      cmpl $1, 0x04(%ebx)             /* the memory map exists from start_info version 1 */
        jb 3f
        movl 0x30(%ebx), %ecx           /* start_info.memmap_entries */
        testl %ecx, %ecx
        jz 3f                           /* keep the host's fallback e820 */
        cmpl $128, %ecx
        jbe 4f
        movl $128, %ecx
4:      movb %cl, 0x1e8(%edi)           /* e820_entries */
        movl 0x28(%ebx), %esi           /* start_info.memmap_paddr */
        addl $0x2d0, %edi               /* e820_table */
2:      movsl                           /* addr, size, type: 20 bytes of each 24-byte entry */
        movsl
        movsl
        movsl
        movsl
        addl $4, %esi
        loop 2b
3:      lgdt BASE + gdtr - _start
        movl %cr4, %eax
        orl $0x20, %eax                 /* PAE */
        movl %eax, %cr4
        movl $PML4, %eax
        movl %eax, %cr3
        movl $0xc0000080, %ecx          /* EFER */
        rdmsr
        orl $0x100, %eax                /* LME */
        wrmsr
        movl %cr0, %eax
        orl $0x80000001, %eax           /* PG | PE */
        movl %eax, %cr0
        ljmp $0x08, $(BASE + start64 - _start)

        .code64
start64:
        movl $0x10, %eax
        movl %eax, %ds
        movl %eax, %es
        movl %eax, %ss
        movl %eax, %fs
        movl %eax, %gs
        movq $STACK_TOP, %rsp
        movq $BOOT_PARAMS, %rsi
        movq BASE + entry64 - _start, %rax
        jmp *%rax

        .org 0x100
gdt:    .quad 0
        .quad 0x00af9a000000ffff        /* 0x08: 64-bit code */
        .quad 0x00cf92000000ffff        /* 0x10: data */
gdtr:   .word 23
        .long BASE + gdt - _start

        .org 0x200
entry64:
        .quad 0                         /* patched by pvh.py: the kernel's 64-bit entry */
