"""The scalar network of an eNTK job and its preprocessed inputs, from the job's files.

``entk_tile`` and ``entk_accuracy`` must build exactly the same network (backbone,
weights, head seed) and the same preprocessing, or the accuracy record would describe
another kernel than the tiles; both take them from here.
"""

from __future__ import annotations

from collections.abc import Callable


def entk_job_network(params, wildcards, inputs, device) -> tuple[object, Callable]:
    """Return ``(model, images)`` for one eNTK job.

    params : the rule's params (model, image_size, seed, model_kwargs, hub_cache, head_seed).
    wildcards : the job's wildcards (weights).
    inputs : the job's inputs (dataset; pretrained_file or trained where the weights need them).
    device : the torch device the network and images go to.

    ``model`` maps a ``(B, 3, H, W)`` batch to ``(B,)`` scalars (backbone then the
    seeded linear head); ``images(start, stop)`` returns pool images ``start:stop``
    resized and normalised for that backbone, as a ``(stop - start, 3, H, W)`` tensor on
    ``device``.
    """
    from rmtlens.inputs import PreparedDataset, backbone_with_weights, feature_dim, normalisation, preprocess
    from rmtlens.io import load_npz
    from rmtlens.kernels import scalar_network

    data = PreparedDataset.from_arrays(load_npz(inputs.dataset))
    backbone = backbone_with_weights(
        wildcards.weights, params.model, params.image_size, params.seed, params.model_kwargs,
        cache_dir=params.hub_cache, pretrained_file=inputs.get("pretrained_file"), trained_file=inputs.get("trained"),
    ).to(device)
    model = scalar_network(backbone, feature_dim(backbone, params.image_size), params.head_seed)
    mean, std = normalisation(backbone)

    def images(start: int, stop: int):
        return preprocess(data.images[start:stop], params.image_size, mean, std).to(device)

    return model, images
