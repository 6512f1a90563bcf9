# cython: language_level=3
"""``openat2(2)`` for confined path resolution: volumes (host side) and the virtio-fs server share it.

``available()`` tells whether the running kernel has openat2; callers fall back to a per-component
``O_NOFOLLOW`` walk where it does not.
"""

import os

from libc.errno cimport errno, ENOSYS
from libc.string cimport memset
from posix.types cimport mode_t
from cpython.exc cimport PyErr_SetFromErrnoWithFilenameObject

cdef extern from "<sys/syscall.h>" nogil:
    long syscall(long number, ...)
    long SYS_openat2

cdef extern from "<linux/openat2.h>" nogil:
    struct open_how:
        unsigned long long flags
        unsigned long long mode
        unsigned long long resolve
    unsigned long long _RESOLVE_NO_XDEV "RESOLVE_NO_XDEV"
    unsigned long long _RESOLVE_NO_MAGICLINKS "RESOLVE_NO_MAGICLINKS"
    unsigned long long _RESOLVE_NO_SYMLINKS "RESOLVE_NO_SYMLINKS"
    unsigned long long _RESOLVE_BENEATH "RESOLVE_BENEATH"
    unsigned long long _RESOLVE_IN_ROOT "RESOLVE_IN_ROOT"

RESOLVE_NO_XDEV = _RESOLVE_NO_XDEV
RESOLVE_NO_MAGICLINKS = _RESOLVE_NO_MAGICLINKS
RESOLVE_NO_SYMLINKS = _RESOLVE_NO_SYMLINKS
RESOLVE_BENEATH = _RESOLVE_BENEATH
RESOLVE_IN_ROOT = _RESOLVE_IN_ROOT

cdef int _state = -1  # -1 unknown, 0 missing, 1 present


def openat2(int dirfd, path, unsigned long long flags, unsigned long long mode=0,
            unsigned long long resolve=_RESOLVE_BENEATH | _RESOLVE_NO_MAGICLINKS):
    """Open ``path`` relative to ``dirfd`` under ``resolve`` rules; returns a file descriptor or raises OSError."""
    global _state
    cdef bytes raw = os.fsencode(path)  # surrogate escapes: the bytes of a name that is not UTF-8
    cdef const char *cpath = raw
    cdef open_how how
    cdef long fd
    memset(&how, 0, sizeof(how))
    how.flags = flags
    how.mode = mode
    how.resolve = resolve
    with nogil:
        fd = syscall(SYS_openat2, dirfd, cpath, &how, sizeof(how))
    if fd < 0:
        if errno == ENOSYS:
            _state = 0
        PyErr_SetFromErrnoWithFilenameObject(OSError, path)
    _state = 1
    return fd


def available():
    """True when the running kernel implements openat2 (probed once)."""
    global _state
    import os
    if _state < 0:
        try:
            os.close(openat2(-100, "/", os.O_PATH | os.O_DIRECTORY, 0, 0))  # AT_FDCWD
        except OSError as err:
            if err.errno != ENOSYS:
                raise
    return _state == 1
