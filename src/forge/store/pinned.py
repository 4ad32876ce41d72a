"""Part files mapped once and page-locked for CUDA (``cudaHostRegister``), reused across policy versions.

Why (issue 5, H100 figures in docs/PERFORMANCE.md): a copy between GPU memory and an ordinary mapping of a
``/dev/shm`` file goes through the driver's staging buffer; the trainer's GPU → store put ran at 7.7 GB/s and
vLLM's reload from the folder at 3.6 GB/s, where a DMA to or from page-locked memory runs at ~54 GB/s. Registering
the mapping makes the copy a direct DMA with no extra buffer. Registration is costly (every page is faulted in and
locked), so it is done once per *file*: the store recycles the files of dropped versions (same inode, new name,
``shm.py``), and this cache keeps each file's registered mapping, keyed by inode, for as long as the file exists.

Used by both ends of a weight push on CUDA machines: the trainer's ``put_state_dict`` (writer) and the generator's
in-place load (``forge.engines.generation.vllm_worker``, reader). Lifetime: an entry is dropped (unregistered and
unmapped) at the next call after its file is deleted, so a deleted version's pages are held until then at most.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import os
import threading
from dataclasses import dataclass

import torch

from forge.store.layout import MappedPart, PartHeader

_PORTABLE = 1  # cudaHostRegisterPortable: page-locked for every CUDA context of the process, not just the current


@dataclass
class _Entry:
    part: MappedPart
    fd: int  # held open to see when the file is deleted (st_nlink == 0)
    ptr: int
    size: int


_CACHE: dict[tuple[int, int], _Entry] = {}
_LOCK = threading.Lock()


def available() -> bool:
    """True where mappings can be registered: a CUDA device and the CUDA runtime library."""
    return torch.cuda.is_available() and _cudart() is not None


@functools.cache
def _cudart():
    """The CUDA runtime through ctypes, which releases the GIL during the call.

    torch's ``torch.cuda.cudart().cudaHostRegister`` holds the GIL, and registering a few GB takes seconds
    (every page is faulted in and locked): long enough to starve the process's other threads — in a Monarch
    controller, its supervision, which then declares the process's meshes dead (seen on the H100).
    """
    names = ["libcudart.so.13", "libcudart.so.12", "libcudart.so"]
    names += sorted(glob.glob(os.path.join(os.path.dirname(torch.__file__), "..", "nvidia", "*", "lib",
                                           "libcudart.so*")))
    for name in names:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        lib.cudaHostRegister.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint]
        lib.cudaHostRegister.restype = ctypes.c_int
        lib.cudaHostUnregister.argtypes = [ctypes.c_void_p]
        lib.cudaHostUnregister.restype = ctypes.c_int
        lib.cudaGetErrorString.argtypes = [ctypes.c_int]
        lib.cudaGetErrorString.restype = ctypes.c_char_p
        return lib
    return None


def mapped_part(path: str, header: PartHeader, write_header: bool) -> MappedPart:
    """A read-write, CUDA-registered mapping of the part file ``path``, cached by inode.

    ``write_header``: (re)write ``header`` into the file (the writer; a recycled file may have held another
    layout). The mapping is shared: callers must not ``close()`` it; it lives until the file is deleted.
    Raises ``RuntimeError`` if CUDA refuses the registration.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT if write_header else os.O_RDONLY, 0o644)  # the writer may create it
    st = os.fstat(fd)
    key = (st.st_dev, st.st_ino)
    with _LOCK:
        _evict_deleted()
        entry = _CACHE.get(key)
        if entry is not None and entry.size != header.file_size:
            _drop(key)
            entry = None
        if entry is None:
            try:
                entry = _register(path, fd, header, write_header)
            except BaseException:
                os.close(fd)
                raise
            # No size cap: an entry pins pages that exist anyway (the store bounds its live files), and evicting
            # one could pull a mapping from under a caller still reading it.
            _CACHE[key] = entry
        else:
            os.close(fd)  # the entry holds its own
            if write_header:
                entry.part.rewrite_header(header)
            else:
                entry.part.header = header
        return entry.part


def _register(path: str, fd: int, header: PartHeader, write_header: bool) -> _Entry:
    # Read-write even for a reader: registering a read-only mapping needs cudaHostRegisterReadOnly, which not every
    # driver supports. Nothing is written through a reader's mapping.
    part = MappedPart(path, header, writable=True, write_header=write_header)  # never empty: it has a header
    ptr = part.data_ptr()
    torch.cuda.init()
    err = _cudart().cudaHostRegister(ptr, header.file_size, _PORTABLE)
    if err != 0:
        part.close()
        raise RuntimeError(f"cudaHostRegister of {path} ({header.file_size} bytes) failed: "
                           f"{_cudart().cudaGetErrorString(err).decode()}")
    return _Entry(part, fd, ptr, header.file_size)


def _drop(key: tuple[int, int]) -> None:
    entry = _CACHE.pop(key)
    _cudart().cudaHostUnregister(entry.ptr)
    entry.part.close()
    os.close(entry.fd)


def _evict_deleted() -> None:
    for key in [k for k, e in _CACHE.items() if os.fstat(e.fd).st_nlink == 0]:
        _drop(key)


def release_all() -> None:
    """Unregister and unmap every cached file (end of a run, or before the process gives its GPU up)."""
    with _LOCK:
        for key in list(_CACHE):
            _drop(key)


def cached_files() -> int:
    """How many registered files this process holds (for tests and metrics)."""
    return len(_CACHE)
