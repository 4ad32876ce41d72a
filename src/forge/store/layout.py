"""The on-disk layout of a store part file: a plain safetensors file, written in place by every rank.

A *part* is one safetensors file holding a fixed set of full (unsharded) tensors. Its header depends only on the
tensors' names, global shapes and dtypes, which every rank of a sharded trainer knows from its DTensors' metadata.
So every rank computes the same header, maps the same file, and copies *its own shard* straight into the byte range
the full tensor occupies: no gather, no staging buffer, one copy from trainer memory into shared memory. The result
is an ordinary safetensors file that vLLM's ``reload_weights(weights_path=...)`` and ``safetensors.safe_open`` read
as is.

Format (https://github.com/huggingface/safetensors): 8-byte little-endian header length N, N bytes of JSON
(``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``), then the tensors' bytes,
contiguous, with no gaps (the reader rejects holes). Tensors are laid out by decreasing element size so that each
one starts at an offset aligned to its element size (the data section starts 8-aligned).

Not covered: ``Partial`` DTensor placements (reduce them before putting), and sub-byte dtypes.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct
from dataclasses import dataclass

import torch

DTYPE_TO_ST = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2",
}
ST_TO_DTYPE = {v: k for k, v in DTYPE_TO_ST.items()}


@dataclass(frozen=True)
class TensorSpec:
    """Where one full tensor lives inside a part file."""

    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int  # byte offset of the first element, relative to the data section
    end: int  # byte offset one past the last element


@dataclass(frozen=True)
class PartHeader:
    """The parsed header of a part file."""

    tensors: dict[str, TensorSpec]
    data_start: int  # absolute byte offset of the data section
    file_size: int  # total bytes of the file

    def header_bytes(self) -> bytes:
        return _encode_header(self.tensors, self.data_start)


def _encode_header(tensors: dict[str, TensorSpec], data_start: int | None = None) -> bytes:
    meta: dict = {"__metadata__": {"format": "pt", "writer": "forge.store"}}
    for name, s in tensors.items():
        meta[name] = {"dtype": DTYPE_TO_ST[s.dtype], "shape": list(s.shape), "data_offsets": [s.begin, s.end]}
    body = json.dumps(meta, separators=(",", ":")).encode()
    pad = (-(8 + len(body))) % 8  # the data section starts 8-aligned
    body += b" " * pad
    if data_start is not None and 8 + len(body) != data_start:
        raise RuntimeError(f"header length changed: {8 + len(body)} != {data_start}")
    return struct.pack("<Q", len(body)) + body


def plan_part(metas: dict[str, tuple[torch.dtype, tuple[int, ...]]]) -> PartHeader:
    """Lay out full tensors ``{name: (dtype, global_shape)}``; deterministic, so every rank gets the same plan."""
    for name, (dtype, _) in metas.items():
        if dtype not in DTYPE_TO_ST:
            raise TypeError(f"forge.store cannot store {name!r} of dtype {dtype}; supported: {sorted(map(str, DTYPE_TO_ST))}")
    order = sorted(metas, key=lambda n: (-metas[n][0].itemsize, n))
    tensors: dict[str, TensorSpec] = {}
    off = 0
    for name in order:
        dtype, shape = metas[name]
        nbytes = dtype.itemsize * _numel(shape)
        tensors[name] = TensorSpec(dtype, tuple(shape), off, off + nbytes)
        off += nbytes
    head = _encode_header(tensors)
    return PartHeader(tensors, len(head), len(head) + off)


def part_file_name(names) -> str:
    """File name of the part holding ``names``: a hash of the sorted names, identical on every rank."""
    digest = hashlib.sha1("\n".join(sorted(names)).encode()).hexdigest()[:16]
    return f"part-{digest}.safetensors"


def read_header(path: str) -> PartHeader:
    """Parse a safetensors file's header without touching its data."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path} is not a safetensors file (shorter than 8 bytes)")
        (n,) = struct.unpack("<Q", raw)
        meta = json.loads(f.read(n))
        size = os.fstat(f.fileno()).st_size
    meta.pop("__metadata__", None)
    tensors = {
        name: TensorSpec(ST_TO_DTYPE[m["dtype"]], tuple(m["shape"]), m["data_offsets"][0], m["data_offsets"][1])
        for name, m in meta.items()
    }
    return PartHeader(tensors, 8 + n, size)


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


class MappedPart:
    """A part file mapped into memory; ``view(name)`` is a zero-copy tensor over the full tensor's bytes."""

    def __init__(self, path: str, header: PartHeader, writable: bool, populate: bool = False,
                 write_header: bool = True):
        """Map ``path``; ``populate``: pre-fault the page tables (fast when the file's pages already exist).

        ``writable`` maps read-write and sizes the file; ``write_header=False`` leaves an existing file's bytes
        untouched (a read-write map of a complete file, e.g. for registering it as an RDMA buffer).
        """
        self.path, self.header = path, header
        flags = os.O_RDWR | os.O_CREAT if writable else os.O_RDONLY
        fd = os.open(path, flags, 0o644)
        try:
            if writable and os.fstat(fd).st_size != header.file_size:
                os.ftruncate(fd, header.file_size)  # same size on every rank: idempotent
            prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
            mflags = mmap.MAP_SHARED | (getattr(mmap, "MAP_POPULATE", 0) if populate else 0)
            self._mm = mmap.mmap(fd, header.file_size, flags=mflags, prot=prot) if header.file_size else None
        finally:
            os.close(fd)
        if self._mm is not None and writable and write_header:
            self._mm[: header.data_start] = header.header_bytes()
        self._bytes = None
        self.populated = populate
        if self._mm is not None:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "buffer is not writable": read maps are never written
                self._bytes = torch.frombuffer(self._mm, dtype=torch.uint8)

    def data_ptr(self) -> int:
        """Address of the mapping's first byte (page-aligned), e.g. for ``cudaHostRegister``."""
        return self._bytes.data_ptr()

    def rewrite_header(self, header: PartHeader) -> None:
        """Write ``header`` (same file size) into a writable mapping reused for a new put."""
        if header.file_size != self.header.file_size:
            raise ValueError(f"{self.path}: header for {header.file_size} bytes, file has {self.header.file_size}")
        self.header = header
        self._mm[: header.data_start] = header.header_bytes()

    def view(self, name: str) -> torch.Tensor:
        """The full tensor ``name``: [*shape], backed by the file (no copy)."""
        s = self.header.tensors[name]
        start = self.header.data_start + s.begin
        raw = self._bytes[start : start + (s.end - s.begin)]
        if s.dtype == torch.bool:
            return raw.view(torch.bool).view(s.shape)
        return raw.view(s.dtype).view(s.shape)

    def close(self) -> None:
        self._bytes = None
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:  # a view still exported: the map is released when the last view dies
                pass
            self._mm = None
