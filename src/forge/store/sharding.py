"""DTensor ↔ full-tensor byte ranges: which slice of the full tensor a rank owns, writes and reads.

A put copies each rank's local shard into its slice of the full tensor in the store; a get copies the slice that the
*getter's* DTensor layout owns back out. Because the two sides compute their slices independently from their own
(mesh, placements), any layout can be read into any other one (resharding), and each side moves only its own bytes.
"""

from __future__ import annotations

import torch


def is_dtensor(t) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch built without distributed
        return False
    return isinstance(t, DTensor)


def global_meta(t: torch.Tensor) -> tuple[torch.dtype, tuple[int, ...]]:
    """(dtype, full shape) of a tensor or DTensor."""
    return t.dtype, tuple(t.shape)


def local_slices(t) -> tuple[slice, ...] | None:
    """The slice of the full tensor that ``t``'s local shard covers (``None`` = the whole tensor).

    ``t``: a DTensor with ``Shard``/``Replicate`` placements; raises on ``Partial`` (reduce it first).
    """
    if not is_dtensor(t):
        return None
    from torch.distributed.tensor import Partial
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    for p in t.placements:
        if isinstance(p, Partial):
            raise ValueError(  # noqa: TRY004 - a bad value (placement), not a bad type
                "forge.store cannot put a DTensor with a Partial placement (pending reduction); "
                "call .redistribute(placements=[Replicate() or Shard(d)]) first"
            )
    shape, offset = compute_local_shape_and_global_offset(t.shape, t.device_mesh, t.placements)
    return tuple(slice(o, o + s) for o, s in zip(offset, shape))


def is_primary_replica(t) -> bool:
    """True on the one rank, among those holding identical copies of a shard, that writes it.

    A DTensor replicated along some mesh dims has the same shard on every coordinate of those dims; only coordinate 0
    writes, so each byte is written once. A plain tensor in a multi-rank put is taken as replicated across the
    default process group: only global rank 0 writes it.
    """
    if is_dtensor(t):
        from torch.distributed.tensor import Replicate

        mesh = t.device_mesh
        return all(mesh.get_local_rank(d) == 0 for d, p in enumerate(t.placements) if isinstance(p, Replicate))
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def write_shard(full_view: torch.Tensor, t: torch.Tensor) -> int:
    """Copy ``t``'s local data into its place in ``full_view`` ([*global shape]); returns bytes written."""
    if not is_primary_replica(t):
        return 0
    sl = local_slices(t)
    local = t.to_local() if is_dtensor(t) else t
    dst = full_view if sl is None else full_view[sl]
    if tuple(dst.shape) != tuple(local.shape):
        raise ValueError(f"shard shape {tuple(local.shape)} does not fit its slice {tuple(dst.shape)}")
    dst.copy_(local.detach())
    return local.numel() * local.element_size()


def read_into(full_view: torch.Tensor, into: torch.Tensor, name: str) -> torch.Tensor:
    """Fill ``into`` (tensor or DTensor) from ``full_view`` [*global shape]; only the slice it owns is read."""
    if tuple(into.shape) != tuple(full_view.shape):
        raise ValueError(
            f"forge.store get({name!r}, into=...): stored shape {tuple(full_view.shape)} != into's shape "
            f"{tuple(into.shape)}"
        )
    if into.dtype != full_view.dtype:
        raise ValueError(
            f"forge.store get({name!r}, into=...): stored dtype {full_view.dtype} != into's dtype {into.dtype}; "
            "pass into=None to receive the stored dtype"
        )
    sl = local_slices(into)
    local = into.to_local() if is_dtensor(into) else into
    src = full_view if sl is None else full_view[sl]
    with torch.no_grad():
        local.copy_(src)
    return into
