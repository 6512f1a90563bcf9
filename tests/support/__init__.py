"""Helpers the tests and the benchmarks (``bench/``) share and the shipped packages do not need: a tiny guest
(``tinyguest``), a wrapper that lets QEMU boot libkrunfw's kernel (``pvh``) and a reader of a process's mappings
(``smaps``)."""
