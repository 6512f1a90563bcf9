# cython: language_level=3
cdef class Vm:
    cdef readonly int kvm_fd
    cdef readonly int fd
    cdef readonly int run_size
    cdef list _memories
