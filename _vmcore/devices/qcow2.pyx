# cython: language_level=3
"""qcow2 images, versions 2 and 3: read and write, backing files, compressed clusters read (and rewritten on
write), refcounts kept exact so ``qemu-img check`` finds nothing after our writes.

A guest offset maps to a host offset through two tables: the L1 table (in memory, written through) points at L2
tables (one cluster each, entries read and written one at a time) that point at data clusters. A cluster is
allocated at the end of the file, refcounted first, written, and only then pointed to, so a crash can leak a
cluster but never expose another's data. Refcount blocks are allocated as needed and the refcount table grown
when an image outgrows it.

Not read, refused at open with ``UnsupportedImageError``: encryption, external data files, extended L2 entries
(subclusters), zstd compression, images marked dirty or corrupt, unknown incompatible features; writing is also
refused for images with internal snapshots (shared clusters) and refcount widths other than 16 bits.
"""

import os
import struct
import sys
import zlib
from array import array

from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memset, memcpy

from _vmcore.devices.block_image cimport BlockImage, pread_full, pwrite_full

from _vmcore.devices.block_image import DiskError, UnsupportedImageError, open_locked

MAGIC = b"QFI\xfb"
COPIED = 1 << 63
COMPRESSED = 1 << 62
ZERO = 1
OFFSET_MASK = 0x00FFFFFFFFFFFE00
REFTABLE_MASK = 0xFFFFFFFFFFFFFE00
INCOMPAT_DIRTY, INCOMPAT_CORRUPT, INCOMPAT_DATA_FILE, INCOMPAT_COMPRESSION, INCOMPAT_EXTL2 = 1, 2, 4, 8, 16
EXT_END, EXT_BACKING_FORMAT, EXT_DATA_FILE, EXT_CRYPTO = 0, 0xE2792ACA, 0x44415441, 0x0537BE77
MAX_L1_BYTES = 32 << 20        # qemu's limits: larger tables are not images anyone made honestly
MAX_REFTABLE_BYTES = 8 << 20
MAX_SIZE = 1 << 56
MAX_BACKING_DEPTH = 16
MAX_CHAIN_TABLE_BYTES = 64 << 20
MAX_METADATA_CLUSTERS = 1 << 18    # a writable image's index of its metadata stays a few tens of MiB  # the tables held in memory for an image and its whole backing chain
BE64 = struct.Struct(">Q")
BE16 = struct.Struct(">H")


def _u64_table(raw: bytes):
    table = array("Q", raw)
    if sys.byteorder == "little":
        table.byteswap()
    return table


def _be_bytes(table) -> bytes:
    out = array("Q", table)
    if sys.byteorder == "little":
        out.byteswap()
    return out.tobytes()


cdef class Qcow2Image(BlockImage):
    cdef readonly int version
    cdef readonly int cluster_bits
    cdef readonly uint64_t cluster_size
    cdef int l2_bits
    cdef uint64_t l1_offset
    cdef object l1                 # array('Q'): the L1 table in host order
    cdef uint64_t rt_offset
    cdef object rt                 # array('Q'): the refcount table
    cdef set metadata              # cluster indices of the header and every table: never data
    cdef uint64_t rb_entries
    cdef uint64_t next_free
    cdef readonly object backing   # a BlockImage or None
    cdef object _zkey
    cdef bytes _zdata

    def __init__(self, path, bint read_only=False, int depth=0, frozenset chain=frozenset(),
                 uint64_t budget=MAX_CHAIN_TABLE_BYTES):
        """``depth``, ``chain`` (the files above, by device and inode) and ``budget`` (table bytes left to the
        chain) are for opening a backing file."""
        BlockImage.__init__(self, path, read_only)
        self.format = "qcow2"
        self.backing = None
        self._zkey = None
        self.fd = open_locked(path, read_only)
        try:
            st = os.fstat(self.fd)
            self._open(depth, chain | {(st.st_dev, st.st_ino)}, budget)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.backing is not None:
            self.backing.close()
            self.backing = None
        BlockImage.close(self)

    # -- opening ---------------------------------------------------------------------------------------------------

    def _fail(self, what):
        raise DiskError(f"qcow2 image {self.path} is corrupt: {what}")

    def _refuse(self, what):
        raise UnsupportedImageError(f"qcow2 image {self.path}: {what}")

    def _open(self, int depth, frozenset chain, uint64_t budget) -> None:
        file_size = os.fstat(self.fd).st_size
        head = os.pread(self.fd, 112, 0)
        if len(head) < 72 or head[:4] != MAGIC:
            self._fail("no qcow2 header")
        (version, backing_offset, backing_len, cluster_bits, size, crypt, l1_size, l1_offset, rt_offset, rt_clusters,
         nb_snapshots, _) = struct.unpack_from(">IQIIQIIQQIIQ", head, 4)
        if version not in (2, 3):
            self._refuse(f"version {version} (2 and 3 are read)")
        if not 9 <= cluster_bits <= 21:
            self._fail(f"cluster_bits {cluster_bits}")
        self.version, self.cluster_bits, self.cluster_size = version, cluster_bits, 1 << cluster_bits
        self.l2_bits = cluster_bits - 3
        cs = self.cluster_size
        if crypt:
            self._refuse("encrypted images are not supported")
        if size > MAX_SIZE:
            self._fail(f"virtual size {size}")
        self.size = size
        header_length, refcount_order, autoclear = 72, 4, 0
        if version == 3:
            if len(head) < 104:
                self._fail("short version 3 header")
            incompat, _, autoclear, refcount_order, header_length = struct.unpack_from(">QQQII", head, 72)
            if header_length < 104 or header_length % 8 or header_length > cs:
                self._fail(f"header length {header_length}")
            self._check_features(incompat, head if header_length > 104 else b"")
        if not 0 <= refcount_order <= 6:
            self._fail(f"refcount order {refcount_order}")
        if not self.read_only:
            if refcount_order != 4:
                self._refuse(f"{1 << refcount_order}-bit refcounts are read, not written: attach it read-only")
            if nb_snapshots:
                self._refuse("images with internal snapshots are attached read-only here")
        # tables: aligned, inside the file, of sane sizes
        per_l1 = cs << self.l2_bits
        if l1_size < (size + per_l1 - 1) // per_l1 or l1_size * 8 > MAX_L1_BYTES:
            self._fail(f"L1 table of {l1_size} entries for {size} bytes")
        self._check_table(l1_offset, l1_size * 8, file_size, "L1 table")
        if rt_clusters == 0 or rt_clusters * cs > MAX_REFTABLE_BYTES:
            self._fail(f"refcount table of {rt_clusters} clusters")
        self._check_table(rt_offset, rt_clusters * cs, file_size, "refcount table")
        self.l1_offset, self.rt_offset = l1_offset, rt_offset
        tables = l1_size * 8 + (0 if self.read_only else rt_clusters * cs)  # refcounts matter to writes only
        if tables > budget:
            self._refuse(f"its tables and its backing chain's take over {MAX_CHAIN_TABLE_BYTES >> 20} MiB")
        self.l1 = _u64_table(os.pread(self.fd, l1_size * 8, l1_offset))
        self.rt = array("Q") if self.read_only else _u64_table(os.pread(self.fd, rt_clusters * cs, rt_offset))
        self.rb_entries = (cs * 8) >> refcount_order
        self.next_free = (file_size + cs - 1) // cs * cs
        if not self.read_only:
            self._index_metadata(l1_offset, l1_size * 8, rt_offset, rt_clusters * cs)
        backing_format = self._extensions(header_length, file_size)
        if backing_offset:
            if backing_len == 0 or backing_len > 1023 or backing_offset + backing_len > min(cs, file_size):
                self._fail("backing file name out of bounds")
            name = os.pread(self.fd, backing_len, backing_offset)
            self._open_backing(os.fsdecode(name), backing_format, depth, chain, budget - tables)
        if version == 3 and autoclear and not self.read_only:  # bits we do not maintain: cleared by whoever writes
            os.pwrite(self.fd, bytes(8), 88)

    def _index_metadata(self, uint64_t l1_offset, uint64_t l1_bytes, uint64_t rt_offset, uint64_t rt_bytes) -> None:
        """Before any write: every cluster holding metadata (header, L1, refcount table and blocks, L2 tables),
        each in the file and none doubling as another, so no write is ever steered onto metadata or far past the
        end of the file (qemu's overlap check). At most one entry per cluster of the file."""
        cdef uint64_t cs = self.cluster_size
        meta = {0}
        meta.update(range(l1_offset >> self.cluster_bits, (l1_offset + l1_bytes + cs - 1) >> self.cluster_bits))
        meta.update(range(rt_offset >> self.cluster_bits, (rt_offset + rt_bytes + cs - 1) >> self.cluster_bits))
        for what, table, mask in (("refcount block", self.rt, 0xFFFFFFFFFFFFFFFF), ("L2 table", self.l1, OFFSET_MASK)):
            for entry in table:
                offset = entry & mask
                if not offset:
                    continue
                cluster = offset >> self.cluster_bits
                if offset % cs or offset + cs > self.next_free or offset > OFFSET_MASK or cluster in meta:
                    self._fail(f"{what} at {offset:#x} is outside the file, unaligned, or overlaps other metadata")
                meta.add(cluster)
                if len(meta) > MAX_METADATA_CLUSTERS:
                    self._refuse(f"more than {MAX_METADATA_CLUSTERS} metadata clusters are written here (small "
                                 "clusters over a large disk): attach it read-only, or convert it to 64 KiB clusters")
        self.metadata = meta

    def _check_features(self, uint64_t incompat, bytes head) -> None:
        if incompat & INCOMPAT_DIRTY:
            self._refuse("marked dirty (lazy refcounts not written back): run `qemu-img check -r all` on it first")
        if incompat & INCOMPAT_CORRUPT:
            self._refuse("marked corrupt by qemu: run `qemu-img check -r all` on it first")
        if incompat & INCOMPAT_DATA_FILE:
            self._refuse("images with an external data file are not supported")
        if incompat & INCOMPAT_EXTL2:
            self._refuse("extended L2 entries (subclusters) are not supported")
        if incompat & INCOMPAT_COMPRESSION and len(head) > 104 and head[104] != 0:
            self._refuse("only zlib-compressed clusters are read (this image uses zstd)")
        unknown = incompat & ~(INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION |
                               INCOMPAT_EXTL2)
        if unknown:
            self._refuse(f"unknown incompatible features {unknown:#x}")

    def _check_table(self, uint64_t offset, uint64_t length, uint64_t file_size, what) -> None:
        if offset == 0 or offset % self.cluster_size or offset + length > file_size:
            self._fail(f"{what} at {offset} (+{length}) is outside the file or unaligned")

    def _extensions(self, uint64_t start, uint64_t file_size):
        """Walk the header extensions in the first cluster; returns the backing file's format, if named."""
        backing_format = None
        end = min(self.cluster_size, file_size)
        area = os.pread(self.fd, end - start, start) if start < end else b""
        pos = 0
        while pos + 8 <= len(area):
            kind, length = struct.unpack_from(">II", area, pos)
            pos += 8
            if kind == EXT_END:
                break
            if pos + length > len(area):
                self._fail("header extension past the first cluster")
            data = area[pos:pos + length]
            if kind == EXT_BACKING_FORMAT:
                backing_format = data.decode("ascii", errors="replace")
            elif kind == EXT_DATA_FILE:
                self._refuse("images with an external data file are not supported")
            elif kind == EXT_CRYPTO:
                self._refuse("encrypted images are not supported")
            pos += (length + 7) & ~7
        return backing_format

    def _open_backing(self, name, backing_format, int depth, frozenset chain, uint64_t budget) -> None:
        """The backing file, read-only. It must lie in this image's directory or below: a name in a hostile image
        must not hand the guest a host file (``/etc/shadow``) to read. Its format must be recorded in the image
        (qemu-img create -F): guessing it from the file would let bytes a guest wrote into a raw disk make it a
        qcow2 with a backing file of its choosing."""
        from _vmcore.devices.disk_images import open_image

        if depth + 1 >= MAX_BACKING_DEPTH:
            self._refuse(f"backing chain deeper than {MAX_BACKING_DEPTH}")
        if "\0" in name:
            self._fail("NUL in the backing file name")
        here = os.path.dirname(os.path.realpath(self.path))
        target = os.path.realpath(os.path.join(here, name))
        if os.path.commonpath([here, target]) != here:
            self._refuse(f"backing file {name!r} is outside the image's directory ({here}); only backing files "
                         "beside the image or below it are opened")
        try:
            st = os.stat(target)
        except OSError as e:
            raise DiskError(f"qcow2 image {self.path}: cannot open its backing file {name!r}: {e.strerror}") from None
        if (st.st_dev, st.st_ino) in chain:
            self._refuse(f"backing chain loops back through {name!r}")
        if backing_format is None:
            self._refuse(f"the format of backing file {name!r} is not recorded in the image; record it with "
                         "`qemu-img rebase -u -b NAME -F raw|qcow2`")
        if backing_format not in ("raw", "qcow2"):
            self._refuse(f"backing file format {backing_format!r} (raw and qcow2 are read)")
        self.backing = open_image(target, backing_format, read_only=True, depth=depth + 1, chain=chain,
                                  budget=budget)

    # -- mapping ---------------------------------------------------------------------------------------------------

    cdef uint64_t _l2_table(self, uint64_t guest, bint allocate) except? 1:
        """The L2 table covering ``guest``: its host offset, 0 when there is none (and ``allocate`` is off)."""
        index = guest >> (self.cluster_bits + self.l2_bits)
        entry = self.l1[index]
        table = entry & OFFSET_MASK
        if table % self.cluster_size:
            raise OSError(5, f"corrupt L1 entry {index}")
        if table and not allocate:
            return table
        if table:
            if entry & COPIED or self._refcount(table >> self.cluster_bits) == 1:
                return table
            raise OSError(5, "shared L2 table (internal snapshot)")
        if not allocate:
            return 0
        table = self._allocate()
        self.metadata.add(table >> self.cluster_bits)
        os.pwrite(self.fd, bytes(self.cluster_size), table)
        self.l1[index] = table | COPIED
        os.pwrite(self.fd, BE64.pack(table | COPIED), self.l1_offset + 8 * index)
        return table

    cdef uint64_t _entry_at(self, uint64_t table, uint64_t guest) except? 1:
        if table == 0:
            return 0
        cdef uint64_t slot = table + 8 * ((guest >> self.cluster_bits) & ((<uint64_t>1 << self.l2_bits) - 1))
        raw = os.pread(self.fd, 8, slot)
        if len(raw) != 8:
            raise OSError(5, "L2 table past the end of the file")
        return BE64.unpack(raw)[0]

    cdef int _fill(self, uint64_t entry, uint64_t guest, uint8_t *buf, uint64_t n) except -1:
        """Read ``n`` bytes at ``guest`` (within one cluster) as ``entry`` maps them."""
        cdef uint64_t within = guest & (self.cluster_size - 1)
        cdef uint64_t host = entry & OFFSET_MASK
        cdef const uint8_t[::1] data
        if entry & COMPRESSED:
            data = self._inflate(entry)
            memcpy(buf, &data[within], n)
        elif self.version >= 3 and entry & ZERO:
            memset(buf, 0, n)
        elif host:
            if host % self.cluster_size:
                raise OSError(5, "corrupt L2 entry (unaligned cluster)")
            pread_full(self.fd, buf, n, host + within)
        elif self.backing is not None:
            self._from_backing(guest, buf, n)
        else:
            memset(buf, 0, n)
        return 0

    cdef int _from_backing(self, uint64_t guest, uint8_t *buf, uint64_t n) except -1:
        cdef BlockImage backing = <BlockImage>self.backing
        cdef uint64_t have = 0
        if guest < backing.size:
            have = min(n, backing.size - guest)
            backing.read_at(guest, buf, have)
        if have < n:
            memset(buf + have, 0, n - have)
        return 0

    cdef bytes _inflate(self, uint64_t entry):
        cdef int x = 62 - (self.cluster_bits - 8)
        cdef uint64_t offset = entry & ((<uint64_t>1 << x) - 1)   # 64-bit shifts: x is 49..61
        cdef uint64_t sectors = ((entry >> x) & ((<uint64_t>1 << (self.cluster_bits - 8)) - 1)) + 1
        if self._zkey == entry:
            return self._zdata
        length = ((offset >> 9) + sectors) * 512 - offset
        raw = os.pread(self.fd, length, offset)  # the last compressed cluster may end before its last sector
        inflater = zlib.decompressobj(-15)
        try:
            data = inflater.decompress(raw, self.cluster_size)
        except zlib.error:
            raise OSError(5, "corrupt compressed cluster") from None
        if len(data) != self.cluster_size:
            raise OSError(5, "compressed cluster does not inflate to a whole cluster")
        self._zkey, self._zdata = entry, data
        return data

    # -- refcounts and allocation ----------------------------------------------------------------------------------

    cdef uint64_t _refcount(self, uint64_t cluster) except? 0xFFFFFFFFFFFFFFFF:
        index = cluster // self.rb_entries
        if index >= len(self.rt) or not self.rt[index] & REFTABLE_MASK:
            return 0
        raw = os.pread(self.fd, 2, (self.rt[index] & REFTABLE_MASK) + 2 * (cluster % self.rb_entries))
        if len(raw) != 2:
            raise OSError(5, "refcount block past the end of the file")
        return BE16.unpack(raw)[0]

    cdef int _adjust(self, uint64_t cluster, int delta) except -1:
        value = self._refcount(cluster) + delta
        if not 0 <= value <= 0xFFFF:
            raise OSError(5, f"refcount of cluster {cluster} out of range ({value})")
        block = self._refcount_block(cluster // self.rb_entries)
        os.pwrite(self.fd, BE16.pack(value), block + 2 * (cluster % self.rb_entries))
        return 0

    cdef uint64_t _allocate(self) except 0:
        """A fresh cluster at the end of the file, its refcount 1 (not yet pointed to)."""
        offset = self.next_free
        self.next_free += self.cluster_size
        self._adjust(offset >> self.cluster_bits, 1)
        return offset

    cdef uint64_t _refcount_block(self, uint64_t index) except 0:
        """The refcount block for refcount-table slot ``index``, made (and the table grown) when missing."""
        if index >= len(self.rt):
            self._grow_refcount_table(index + 1)
        block = self.rt[index] & REFTABLE_MASK
        if block:
            return block
        block = self.next_free
        self.next_free += self.cluster_size
        self.metadata.add(block >> self.cluster_bits)
        contents = bytearray(self.cluster_size)
        own = block >> self.cluster_bits
        if own // self.rb_entries == index:  # the block counts itself
            BE16.pack_into(contents, 2 * (own % self.rb_entries), 1)
        os.pwrite(self.fd, contents, block)
        self.rt[index] = block
        os.pwrite(self.fd, BE64.pack(block), self.rt_offset + 8 * index)
        if own // self.rb_entries != index:
            self._adjust(own, 1)
        return block

    def _grow_refcount_table(self, uint64_t wanted) -> None:
        """A larger refcount table at the end of the file, followed by the refcount blocks that count it (when its
        clusters are past every existing block); the header points at it only once it is written."""
        cs, per_cluster = self.cluster_size, self.cluster_size // 8
        entries = max(wanted, 2 * len(self.rt))
        first = self.next_free >> self.cluster_bits
        blocks: list = []
        while True:
            entries = (entries + per_cluster - 1) // per_cluster * per_cluster
            if entries * 8 > MAX_REFTABLE_BYTES:
                raise OSError(27, "the image outgrew the largest refcount table")  # EFBIG
            clusters = entries // per_cluster
            end = first + clusters + len(blocks)
            needed = []
            for index in range(first // self.rb_entries, (end - 1) // self.rb_entries + 1):
                if index >= len(self.rt) or not self.rt[index]:
                    needed.append(index)
            if needed and needed[len(needed) - 1] >= entries:  # (no negative indexing: wraparound is off)
                entries = needed[len(needed) - 1] + 1
                continue
            if len(needed) == len(blocks):
                break
            blocks = needed
        table = self.rt + array("Q", bytes(8 * (entries - len(self.rt))))
        contents = {}
        for i, index in enumerate(blocks):
            table[index] = (first + clusters + i) << self.cluster_bits
            contents[index] = bytearray(cs)
        for c in range(first, end):  # every new cluster (table and blocks) counted once
            index = c // self.rb_entries
            if index in contents:
                BE16.pack_into(contents[index], 2 * (c % self.rb_entries), 1)
            else:
                os.pwrite(self.fd, BE16.pack(1), (self.rt[index] & REFTABLE_MASK) + 2 * (c % self.rb_entries))
        for index, data in contents.items():
            os.pwrite(self.fd, data, table[index])
        os.pwrite(self.fd, _be_bytes(table), first << self.cluster_bits)
        os.fdatasync(self.fd)
        old_first, old_clusters = self.rt_offset >> self.cluster_bits, len(self.rt) // per_cluster
        os.pwrite(self.fd, struct.pack(">QI", first << self.cluster_bits, clusters), 48)
        os.fdatasync(self.fd)
        self.rt, self.rt_offset, self.next_free = table, first << self.cluster_bits, end << self.cluster_bits
        self.metadata.update(range(first, end))
        self.metadata.difference_update(range(old_first, old_first + old_clusters))
        for c in range(old_first, old_first + old_clusters):
            self._adjust(c, -1)

    cdef int _release(self, uint64_t entry) except -1:
        """Drop the reference ``entry`` held (a data cluster, or the clusters a compressed one spans)."""
        cdef int x
        if entry & COMPRESSED:
            x = 62 - (self.cluster_bits - 8)
            offset = (entry & ((<uint64_t>1 << x) - 1)) & ~511
            length = (((entry >> x) & ((<uint64_t>1 << (self.cluster_bits - 8)) - 1)) + 1) * 512
            for c in range(offset >> self.cluster_bits, (offset + length - 1 >> self.cluster_bits) + 1):
                self._adjust(c, -1)
        elif entry & OFFSET_MASK:
            self._adjust((entry & OFFSET_MASK) >> self.cluster_bits, -1)
        return 0

    # -- data ------------------------------------------------------------------------------------------------------

    cdef int read_at(self, uint64_t offset, uint8_t *buf, uint64_t length) except -1:
        cdef uint64_t n
        while length:
            n = min(length, self.cluster_size - (offset & (self.cluster_size - 1)))
            self._fill(self._entry_at(self._l2_table(offset, False), offset), offset, buf, n)
            offset += n
            buf += n
            length -= n
        return 0

    cdef int write_at(self, uint64_t offset, const uint8_t *buf, uint64_t length) except -1:
        cdef uint64_t n
        if self.read_only:
            raise OSError(30, "the disk is read-only")
        while length:
            n = min(length, self.cluster_size - (offset & (self.cluster_size - 1)))
            self._write_cluster(offset, buf, n)
            offset += n
            buf += n
            length -= n
        return 0

    cdef int _write_cluster(self, uint64_t guest, const uint8_t *buf, uint64_t n) except -1:
        cdef uint64_t table = self._l2_table(guest, True)
        cdef uint64_t entry = self._entry_at(table, guest)
        cdef uint64_t host = entry & OFFSET_MASK
        cdef uint64_t start = guest & ~(self.cluster_size - 1)
        cdef uint64_t within = guest - start
        cdef bint compressed = entry & COMPRESSED != 0
        cdef bint zero = self.version >= 3 and not compressed and entry & ZERO  # bit 0 of a compressed entry: offset
        cdef bytearray whole
        cdef uint8_t[::1] view
        if host and not compressed and (host % self.cluster_size or host + self.cluster_size > self.next_free or
                                        host >> self.cluster_bits in self.metadata):
            raise OSError(5, f"corrupt L2 entry: data cluster at {host:#x} is outside the file or is metadata")
        if host and not compressed and not zero and (entry & COPIED or self._refcount(host >> self.cluster_bits) == 1):
            pwrite_full(self.fd, buf, n, host + within)  # ours alone: in place
            if not entry & COPIED:
                self._set_entry(table, guest, host | COPIED)
            return 0
        whole = bytearray(self.cluster_size)
        view = whole
        if n < self.cluster_size and not zero:
            self._fill(entry, start, &view[0], self.cluster_size)
        memcpy(&view[within], buf, n)
        reuse = host and zero and entry & COPIED  # a preallocated zero cluster, ours alone
        target = host if reuse else self._allocate()
        pwrite_full(self.fd, &view[0], self.cluster_size, target)
        self._set_entry(table, guest, target | COPIED)
        if not reuse:
            self._release(entry)
        return 0

    cdef int _set_entry(self, uint64_t table, uint64_t guest, uint64_t entry) except -1:
        slot = table + 8 * ((guest >> self.cluster_bits) & ((<uint64_t>1 << self.l2_bits) - 1))
        os.pwrite(self.fd, BE64.pack(entry), slot)
        return 0
