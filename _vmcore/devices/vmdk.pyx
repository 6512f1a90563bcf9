# cython: language_level=3
"""VMDK images, read-only: the hosted sparse extent of VMware's Virtual Disk Format, in the two single-file
variants ``monolithicSparse`` (plain grains) and ``streamOptimized`` (deflated grains behind markers).

Layout: a 512-byte SparseExtentHeader at offset 0, a text descriptor embedded after it, a grain directory (GD)
of u32 sector offsets of grain tables (GT), each GT ``numGTEsPerGT`` u32 sector offsets of grains. GTE 0 is an
unallocated grain (zeros: no parent is ever opened here); GTE 1 is an explicit zero grain when the header has
the zeroed-grain flag. A streamOptimized file may say "GD at end" in its header; the real header is then the
footer, a copy of it in the second-to-last sector (after a footer marker, before an end-of-stream marker).
Flag bits, marker types and the footer layout follow qemu's block/vmdk.c (VMDK4_FLAG_*, MARKER_*,
vmdk_open_vmdk4, vmdk_read_extent).
"""

import os
import re
import struct
import zlib

from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

from _vmcore.devices.block_image cimport BlockImage, pread_full

from _vmcore.devices.block_image import DiskError, UnsupportedImageError, open_locked

cdef enum:
    SECTOR = 512
    FLAG_NL_DETECT = 0x1        # VMDK4_FLAG_NL_DETECT: bytes 73..76 hold "\n \r\n"
    FLAG_ZERO_GRAIN = 0x4       # VMDK4_FLAG_ZERO_GRAIN: GTE 1 means "zeros"
    FLAG_MARKER = 0x20000       # VMDK4_FLAG_MARKER: grains are preceded by a (lba, size) marker
    MARKER_EOS = 0
    MARKER_FOOTER = 3
    MAX_GRAIN_SECTORS = 2048    # 1 MiB grains (VMware uses 128)
    MAX_GTES = 512              # qemu's limit; the spec fixes 512
    MAX_DESC_SECTORS = 2048

cdef uint64_t GD_AT_END = 0xffffffffffffffffULL
cdef uint64_t MAX_CAPACITY = 1ULL << 37          # sectors: 64 TiB
cdef uint64_t MAX_GD_ENTRIES = 1ULL << 23        # 32 MiB of GD; 64 TiB at the usual geometry needs 2M

# magic, version, flags, capacity, grainSize, descriptorOffset, descriptorSize, numGTEsPerGT, rgdOffset,
# gdOffset, overHead, uncleanShutdown, newline check chars, compressAlgorithm
HEADER = struct.Struct("<IIIQQQQIQQQB4sH")
EXTENT_LINE = re.compile(r"(RW|RDONLY|NOACCESS)\s+(\d{1,20})\s+(\S+)")  # bounded: int() of 5000 digits raises


cdef inline uint32_t le32(const uint8_t *p) noexcept nogil:
    return p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)


cdef class VmdkImage(BlockImage):
    """A monolithicSparse or streamOptimized VMDK, opened read-only; ``size`` is the guest disk size."""

    cdef readonly str create_type
    cdef uint64_t file_size, grain_bytes, grain_sectors, gtes, max_deflated
    cdef bint compressed, zero_grain
    cdef bytes gd                   # the whole grain directory, as stored (little-endian u32s)
    cdef bytearray gt               # the grain table last read (a 2 KiB cache: reads are mostly sequential) ...
    cdef int64_t gt_index           # ... and its GD index (-1: none)
    cdef bytes grain                # the grain last inflated (streamOptimized) ...
    cdef int64_t grain_index        # ... and its index (-1: none); a guest reads a grain in several requests

    def __init__(self, path, bint read_only=True):
        BlockImage.__init__(self, path, read_only)
        self.format = "vmdk"
        self.gt_index = self.grain_index = -1
        if not read_only:
            raise UnsupportedImageError(f"vmdk images are attached read-only here: {self.path}")
        self.fd = open_locked(path, True)
        try:
            self._open()
        except OSError as e:
            self.close()
            raise DiskError(f"vmdk image {self.path}: cannot read it: {e.strerror or e}") from None
        except BaseException:
            self.close()
            raise

    def _corrupt(self, what):
        return DiskError(f"vmdk image {self.path} is corrupt: {what}")

    def _unsupported(self, what):
        return UnsupportedImageError(f"vmdk image {self.path}: {what}; only monolithicSparse and "
                                     "streamOptimized images without a parent are read here")

    cdef bytearray _pread(self, uint64_t offset, uint64_t length):
        out = bytearray(length)
        if length:
            pread_full(self.fd, <uint8_t *><char *>out, length, offset)
        return out

    def _open(self):
        self.file_size = os.lseek(self.fd, 0, os.SEEK_END)     # st_size is 0 for a block device
        head = self._pread(0, min(self.file_size, <uint64_t>65536))
        if head[:4] != b"KDMV":
            if head[:4] == b"COWD":
                raise self._unsupported("a VMDK3 (COWD) sparse extent")
            # A text descriptor file (the data lives in other files); not a sparse extent with a damaged
            # magic, whose embedded descriptor also names a createType.
            m = re.search(rb'createType\s*=\s*"([^"\n]{0,64})"', head)
            if m and head.lstrip().startswith((b"#", b"version=")):
                raise self._unsupported(f"a descriptor file of createType {m[1].decode('latin-1')!r}")
            raise self._corrupt("no KDMV magic (not a VMDK sparse extent)")
        if self.file_size < SECTOR:
            raise self._corrupt("truncated header")
        h = HEADER.unpack_from(head)
        if h[9] == GD_AT_END:
            h = self._footer()
        _, version, flags, capacity, grain, desc_off, desc_size, gtes, _, gd_off, overhead, _, nl, algo = h
        file_sectors = self.file_size // SECTOR

        if version not in (1, 2, 3):
            raise self._unsupported(f"header version {version}")
        if algo not in (0, 1):
            raise self._unsupported(f"compression algorithm {algo}")
        self.compressed = algo == 1
        if self.compressed != bool(flags & FLAG_MARKER):
            raise self._unsupported("grain markers without deflate, or deflate without markers")
        self.zero_grain = flags & FLAG_ZERO_GRAIN
        if flags & FLAG_NL_DETECT and nl != b"\n \r\n":
            raise self._corrupt("newline check characters altered (copied as text?)")
        if not (1 <= grain <= MAX_GRAIN_SECTORS and grain & (grain - 1) == 0):
            raise self._corrupt(f"grain size {grain} sectors (want a power of two up to {MAX_GRAIN_SECTORS})")
        if not 1 <= gtes <= MAX_GTES:
            raise self._corrupt(f"{gtes} entries per grain table (want 1..{MAX_GTES})")
        if not 1 <= capacity <= MAX_CAPACITY:
            raise self._corrupt(f"capacity {capacity} sectors (want 1..{MAX_CAPACITY})")
        if overhead > file_sectors:
            raise self._corrupt(f"truncated: {self.file_size} bytes, its metadata alone takes {overhead} sectors")

        if desc_off == 0 or desc_size == 0:
            raise self._unsupported("no embedded descriptor (one extent of a split disk?)")
        if desc_size > MAX_DESC_SECTORS or desc_off > file_sectors or desc_size > file_sectors - desc_off:
            raise self._corrupt(f"descriptor at sector {desc_off} (+{desc_size}) is outside the file")
        text = bytes(self._pread(desc_off * SECTOR, desc_size * SECTOR)).split(b"\0", 1)[0].decode("latin-1")
        self._check_descriptor(text, capacity)

        # The GD: one u32 per GT, each GT covering gtes * grain sectors. Bounded before it is allocated.
        self.grain_sectors, self.grain_bytes, self.gtes = grain, grain * SECTOR, gtes
        self.max_deflated = self.grain_bytes + (self.grain_bytes >> 8) + 64     # above zlib's compressBound
        n = (capacity + gtes * grain - 1) // (gtes * grain)
        if n > MAX_GD_ENTRIES or gd_off == 0 or gd_off > file_sectors or n * 4 > (file_sectors - gd_off) * SECTOR:
            raise self._corrupt(f"grain directory ({n} entries at sector {gd_off}) is absurd or outside the file")
        self.gd = bytes(self._pread(gd_off * SECTOR, n * 4))
        cdef const uint8_t *p = self.gd
        cdef uint64_t i, gt_sector, count = n, gt_bytes = gtes * 4
        for i in range(count):
            gt_sector = le32(p + 4 * i)     # < 2**32: no overflow below
            if gt_sector and gt_sector * SECTOR + gt_bytes > self.file_size:
                raise self._corrupt(f"grain table {i} at sector {gt_sector} is outside the file")
        self.size = capacity * SECTOR

    def _footer(self):
        """The header of a streamOptimized image whose GD is at the end: footer marker, footer, EOS marker."""
        if self.file_size % SECTOR or self.file_size < 4 * SECTOR:
            raise self._corrupt("the header says the footer has the real header, and there is no footer")
        tail = self._pread(self.file_size - 3 * SECTOR, 3 * SECTOR)
        _, size, kind = struct.unpack_from("<QII", tail, 0)
        eos = struct.unpack_from("<QII", tail, 2 * SECTOR)
        if size != 0 or kind != MARKER_FOOTER or tail[SECTOR:SECTOR + 4] != b"KDMV" or eos != (0, 0, MARKER_EOS):
            raise self._corrupt("missing or damaged footer (truncated stream?)")
        h = HEADER.unpack_from(tail, SECTOR)
        if h[9] == GD_AT_END:
            raise self._corrupt("the footer does not say where the grain directory is")
        return h

    def _check_descriptor(self, str text, capacity):
        fields, extents = {}, []
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            m = EXTENT_LINE.match(line)
            if m:
                extents.append(m)
            else:
                key, sep, value = line.partition("=")
                if sep:
                    fields.setdefault(key.strip(), value.strip().strip('"'))
        ct = fields.get("createType")
        if ct is None:
            raise self._corrupt("the descriptor has no createType")
        if ct not in ("monolithicSparse", "streamOptimized"):
            raise self._unsupported(f"createType {ct!r}")
        if (ct == "streamOptimized") != self.compressed:
            raise self._corrupt(f"createType {ct!r} does not match the header's compression")
        if fields.get("parentCID", "ffffffff").lower() != "ffffffff" or "parentFileNameHint" in fields:
            raise self._unsupported("a parent image (parentCID/parentFileNameHint)")
        if len(extents) != 1:
            raise self._unsupported(f"{len(extents)} extents in the descriptor")
        access, sectors, kind = extents[0].groups()
        if access == "NOACCESS" or kind != "SPARSE":
            raise self._unsupported(f"a {access} {kind} extent")
        if int(sectors) != capacity:
            raise self._corrupt(f"descriptor extent of {sectors} sectors, header capacity {capacity}")
        self.create_type = ct

    cdef int64_t _grain_sector(self, uint64_t gi) except -1:
        """The GTE of grain ``gi`` (caller keeps ``gi`` within capacity, so the GD index is in range)."""
        cdef uint64_t t = gi // self.gtes
        cdef uint64_t gt_sector = le32(<const uint8_t *><const char *>self.gd + 4 * t)
        if gt_sector == 0:
            return 0        # no grain table (streamOptimized): the whole span is unallocated
        if <int64_t>t != self.gt_index:
            # A fresh buffer, not the cached one: pread drops the GIL, and a reader on another thread may be
            # looking at the cached table meanwhile.
            gt = self._pread(gt_sector * SECTOR, self.gtes * 4)
            self.gt, self.gt_index = gt, t
        return le32(<const uint8_t *><char *>self.gt + 4 * (gi % self.gtes))

    cdef int _inflate(self, uint64_t gi, uint64_t sector) except -1:
        """Make ``self.grain`` grain ``gi``, stored deflated behind a marker at ``sector``."""
        if <int64_t>gi == self.grain_index:
            return 0
        self.grain_index = -1
        lba, size = struct.unpack("<QI", self._pread(sector * SECTOR, 12))
        if lba != gi * self.grain_sectors or size == 0 or size > self.max_deflated:
            raise OSError(5, f"vmdk image {self.path}: bad grain marker at sector {sector} (lba {lba}, {size} bytes)")
        data = self._pread(sector * SECTOR + 12, size)
        d = zlib.decompressobj()
        try:
            out = d.decompress(data, self.grain_bytes + 1)
        except zlib.error as e:
            raise OSError(5, f"vmdk image {self.path}: grain {gi} does not inflate: {e}") from None
        # Every grain inflates to a whole grain, except that qemu writes the last one only up to capacity.
        cdef uint64_t got = len(out)
        if not d.eof or (got != self.grain_bytes and got != min(self.grain_bytes, self.size - gi * self.grain_bytes)):
            raise OSError(5, f"vmdk image {self.path}: grain {gi} inflates to the wrong size")
        self.grain = out
        self.grain_index = gi
        return 0

    cdef int read_at(self, uint64_t offset, uint8_t *buf, uint64_t length) except -1:
        cdef uint64_t gi, within, n, sector
        while length:
            gi = offset // self.grain_bytes
            within = offset - gi * self.grain_bytes
            n = min(length, self.grain_bytes - within)
            sector = self._grain_sector(gi)
            if sector == 0 or (sector == 1 and self.zero_grain):
                memset(buf, 0, n)
            elif self.compressed:
                self._inflate(gi, sector)
                if within + n > <uint64_t>len(self.grain):
                    raise OSError(5, f"vmdk image {self.path}: grain {gi} is short")
                memcpy(buf, <const char *>self.grain + within, n)
            else:
                pread_full(self.fd, buf, n, sector * SECTOR + within)
            buf += n
            offset += n
            length -= n
        return 0

    cdef int write_at(self, uint64_t offset, const uint8_t *buf, uint64_t length) except -1:
        raise OSError(30, "the disk is read-only")
