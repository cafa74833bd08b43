"""Data-parallel helpers: a device mesh, a batch split over it, exact masks for ragged splits.

gradlab's operators (:mod:`gradlab.curvature`, :func:`gradlab.ntk.ntk_operator`,
:func:`gradlab.ntk.empirical_ntk`) read the placement of the batch: when its example axis is
split over a mesh axis (``NamedSharding(mesh, P("data"))``), each device evaluates the loss on
its own shard inside ``jax.shard_map`` and the per-shard products are summed with
``jax.lax.psum``, for meshes with ``Explicit`` or ``Auto`` axis types. These helpers only
build the mesh (:func:`make_data_mesh`), place the batch (:func:`shard_batch`, padding with a
:class:`MaskedBatch` when the examples do not divide) and replicate the params
(:func:`replicate`). See the "Scaling out" guide.
"""

from gradlab.distributed._batch import MaskedBatch, make_data_mesh, replicate, shard_batch

__all__ = ["MaskedBatch", "make_data_mesh", "replicate", "shard_batch"]
