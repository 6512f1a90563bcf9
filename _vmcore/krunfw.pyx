# cython: language_level=3
"""libkrunfw: a shared library that carries a raw x86-64 Linux image and hands it out through
``krunfw_get_kernel(&load_addr, &entry, &size)``. We dlopen it once per path and copy the image."""

from libc.stdint cimport uint64_t
from libc.stddef cimport size_t
from posix.dlfcn cimport dlopen, dlsym, dlerror, RTLD_NOW, RTLD_LOCAL
from cpython.bytes cimport PyBytes_FromStringAndSize

from _vmcore.errors import KernelLoadError

ctypedef char *(*get_kernel_fn)(uint64_t *load_addr, uint64_t *entry, size_t *size) noexcept nogil

cdef dict _cache = {}


def get_kernel(path) -> tuple:
    """Return ``(load_addr, entry, image_bytes)`` from the libkrunfw at ``path`` (cached per path)."""
    key = str(path)
    if key in _cache:
        return _cache[key]
    cdef bytes raw = key.encode()
    cdef void *handle = dlopen(raw, RTLD_NOW | RTLD_LOCAL)
    if handle == NULL:
        raise KernelLoadError(f"cannot load {key}: {(<bytes>dlerror()).decode(errors='replace')}")
    cdef get_kernel_fn fn = <get_kernel_fn>dlsym(handle, b"krunfw_get_kernel")
    if fn == NULL:
        raise KernelLoadError(f"{key} has no krunfw_get_kernel: not a libkrunfw")
    cdef uint64_t load_addr = 0, entry = 0
    cdef size_t size = 0
    cdef char *image = fn(&load_addr, &entry, &size)
    if image == NULL or size == 0:
        raise KernelLoadError(f"{key}: krunfw_get_kernel returned no image")
    result = (load_addr, entry, PyBytes_FromStringAndSize(image, size))
    _cache[key] = result  # the library stays loaded: its image is static data
    return result
