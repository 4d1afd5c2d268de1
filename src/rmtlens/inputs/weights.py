"""Backbone weights: ``init``, ``pretrained`` (timm's published) and ``trained`` (SPEC §1).

``pretrained``
    timm's published weights, loaded by timm itself. They come from a local file
    when the configuration names one (timm's ``pretrained_cfg_overlay=dict(file=...)``
    path), else from the Hugging Face hub cache under a given directory (e.g.
    ``resources/hub``): found there, the cached file goes through the same file path,
    with no network access; not found, timm downloads it into that directory
    (``cache_dir``, so no environment variable or global setting is changed).
    Every backbone parameter and buffer must come from the file: timm itself only
    logs missing keys when it drops the classifier, and a wrong file would silently
    leave random weights.
``trained``
    A backbone state dict written by :func:`save_backbone_state` from the
    workflow's own pretraining (:mod:`rmtlens.inputs.pretrain`), loaded strictly: its keys
    are exactly the backbone's (the pretraining classifier is not part of it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

from rmtlens.inputs.backbones import create_backbone
from rmtlens.inputs.model_names import check_model_name
from rmtlens.io import atomic_path

WEIGHTS = ("init", "pretrained", "trained")
PRETRAINED_FILE_FIELD = "pretrained_file"
"""Name of the backbone's configuration field holding a local weights file."""


class WeightsError(RuntimeError):
    """Backbone weights are missing, unreachable or do not fit the model."""


def hub_source(model_name: str) -> tuple[str | None, str | None, tuple[str, ...], str | None]:
    """Where timm publishes the weights of ``model_name``.

    Returns ``(repo_id, revision, filenames, url)``: the Hugging Face hub repository
    (``None`` if not on the hub), its revision (``None`` = main), the file names timm
    tries there in order, and the legacy download URL (``None`` if none).
    """
    from timm.models import get_pretrained_cfg

    check_model_name(model_name)
    cfg = get_pretrained_cfg(model_name)
    if cfg is None:
        return None, None, (), None
    repo_id, revision = cfg.hf_hub_id or None, None
    if repo_id and "@" in repo_id:
        repo_id, revision = repo_id.split("@", 1)
    # timm's order: a configured file name, else safetensors before the pickle.
    filenames = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else ("model.safetensors", "pytorch_model.bin")
    return repo_id, revision, filenames, cfg.url or None


def pretrained_download(model_name: str, cache_dir: str | os.PathLike) -> dict[str, str] | None:
    """The file timm downloads for the published weights of ``model_name``, and where a
    copy put there by hand is found without network.

    Returns ``None`` when timm publishes no weights for the model, else a dict:
    ``url`` (what timm fetches first: the hub's ``resolve`` URL of the first file name
    timm tries, or the legacy download URL for models published only by URL),
    ``filename`` (that file's name), ``source`` (``hub id`` or ``url``) and
    ``cache_file`` (the path under ``cache_dir`` where :func:`cached_pretrained_file`
    finds it: the Hugging Face cache layout
    ``models--<org>--<name>/snapshots/<revision>/<filename>``, revision ``main``
    unless the hub id pins one, or ``<cache_dir>/<url file name>`` for URL models).
    """
    repo_id, revision, filenames, url = hub_source(model_name)
    if repo_id:
        rev = revision or "main"
        filename = filenames[0]
        folder = "models--" + repo_id.replace("/", "--")
        return {
            "url": f"https://huggingface.co/{repo_id}/resolve/{rev}/{filename}",
            "filename": filename,
            "source": f"Hugging Face hub id {repo_id}" + (f" at revision {revision}" if revision else ""),
            "cache_file": str(Path(cache_dir) / folder / "snapshots" / rev / filename),
        }
    if url:
        filename = os.path.basename(url.split("?")[0])
        return {"url": url, "filename": filename, "source": f"url {url}", "cache_file": str(Path(cache_dir) / filename)}
    return None


def pretrained_instructions(model_name: str, cache_dir: str | os.PathLike) -> str:
    """Where the published weights of ``model_name`` come from and both ways to provide
    them offline, as one sentence for error messages."""
    where = pretrained_download(model_name, cache_dir)
    if where is None:
        return (
            f"timm publishes no weights for model {model_name!r}; name a local weights file in the "
            f"backbone's `{PRETRAINED_FILE_FIELD}` config field, or use weights `init` or `trained`."
        )
    return (
        f"timm downloads {where['url']} ({where['source']}) into the cache {cache_dir} (needs network once). "
        f"Without network, download that file elsewhere and either put it at {where['cache_file']} "
        f"(where it is found without network), or name it (or any .safetensors / .pth of the same "
        f"weights) in the backbone's `{PRETRAINED_FILE_FIELD}` config field."
    )


def cached_pretrained_file(model_name: str, cache_dir: str | os.PathLike) -> Path | None:
    """The published weights of ``model_name`` if already in ``cache_dir``, else ``None``.

    Looks in the Hugging Face hub cache layout (``models--<org>--<name>/snapshots/``)
    and, for models published only by URL, for the URL's file name (torch.hub layout).
    """
    from huggingface_hub import try_to_load_from_cache

    repo_id, revision, filenames, url = hub_source(model_name)
    if repo_id:
        for filename in filenames:
            found = try_to_load_from_cache(repo_id, filename, cache_dir=str(cache_dir), revision=revision)
            if isinstance(found, str):
                return Path(found)
    if url:
        candidate = Path(cache_dir) / os.path.basename(url.split("?")[0])
        if candidate.is_file():
            return candidate
    return None


@contextlib.contextmanager
def _timm_missing_keys() -> Iterator[list[str]]:
    """Collect the "Missing keys" reports of timm's pretrained loading."""
    logger = logging.getLogger("timm.models._builder")
    reports: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            match = re.match(r"Missing keys \((.*)\) discovered", record.getMessage())
            if match:
                # BatchNorm fills in a counter absent from old checkpoints itself
                keys = [k for k in match.group(1).split(", ") if not k.endswith("num_batches_tracked")]
                reports.extend(keys)

    handler = Collect(level=logging.INFO)
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield reports
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def _from_file(model_name, image_size, seed, model_kwargs, path: Path) -> torch.nn.Module:
    with _timm_missing_keys() as missing:
        model = create_backbone(
            model_name, image_size, seed, model_kwargs, pretrained=True, pretrained_file=str(path)
        )
    _require_complete(missing, f"weights file {path}", model_name)
    return model


def _require_complete(missing: list[str], what: str, model_name: str) -> None:
    if missing:
        shown = ", ".join(missing[:8]) + (", ..." if len(missing) > 8 else "")
        raise WeightsError(
            f"{what} does not fit timm model {model_name!r}: {len(missing)} backbone keys missing ({shown})"
        )


def load_pretrained_backbone(
    model_name: str,
    image_size: int,
    seed: int,
    cache_dir: str | os.PathLike,
    pretrained_file: str | os.PathLike | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    allow_download: bool = True,
) -> torch.nn.Module:
    """A backbone (``num_classes=0``, eval mode) with timm's published weights.

    Parameters
    ----------
    model_name : timm model name, optionally with a pretrained tag (``resnet18.a1_in1k``).
    image_size, seed, model_kwargs : as for :func:`rmtlens.inputs.backbones.create_backbone`.
    cache_dir : Hugging Face hub cache (and torch.hub directory) for the download.
    pretrained_file : local ``.safetensors`` / ``.pth`` file to load instead of the hub.
    allow_download : if False, weights absent from ``cache_dir`` raise at once
        instead of trying the network.

    Raises
    ------
    WeightsError
        naming the model and both ways to provide the weights when they are missing,
        or naming the file and its missing keys when it does not fit the model.
    """
    repo_id, _, filenames, url = hub_source(model_name)
    options = pretrained_instructions(model_name, cache_dir)
    if pretrained_file is not None:
        path = Path(pretrained_file)
        if not path.is_file():
            raise WeightsError(
                f"weights file {path} for timm model {model_name!r} (config field `{PRETRAINED_FILE_FIELD}`) "
                f"does not exist. {options}"
            )
        return _from_file(model_name, image_size, seed, model_kwargs, path)
    if not repo_id and not url:
        raise WeightsError(options)
    cached = cached_pretrained_file(model_name, cache_dir)
    if cached is not None:
        return _from_file(model_name, image_size, seed, model_kwargs, cached)
    if not allow_download:
        raise WeightsError(
            f"published weights of timm model {model_name!r} are not in the cache {cache_dir} "
            f"and downloading is disabled. {options}"
        )
    from huggingface_hub.errors import HfHubHTTPError

    kwargs = dict(model_kwargs or {}, cache_dir=str(cache_dir))
    try:
        with _timm_missing_keys() as missing:
            model = create_backbone(model_name, image_size, seed, kwargs, pretrained=True)
    except (OSError, HfHubHTTPError) as err:
        raise WeightsError(
            f"could not get the published weights of timm model {model_name!r}: {err}. {options}"
        ) from err
    _require_complete(missing, "the downloaded published weights", model_name)
    return model


def save_backbone_state(path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor], model_name: str) -> None:
    """Write a backbone state dict as ``.safetensors`` atomically, tagged with ``model_name``."""
    from safetensors.torch import save_file

    # clone: safetensors refuses tensors that share storage (tied weights, views)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", "model_name": model_name})


def load_backbone_state(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], str | None]:
    """Read a file written by :func:`save_backbone_state`: (state dict, model name)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"trained weights {path} do not exist; run the workflow's pretraining rule to produce them"
        )
    with safe_open(str(path), framework="pt", device="cpu") as handle:
        model_name = (handle.metadata() or {}).get("model_name")
        state = {k: handle.get_tensor(k) for k in handle.keys()}
    return state, model_name


def load_trained_backbone(
    model_name: str,
    image_size: int,
    seed: int,
    state_file: str | os.PathLike,
    model_kwargs: Mapping[str, Any] | None = None,
) -> torch.nn.Module:
    """A backbone (``num_classes=0``, eval mode) with weights from the workflow's pretraining.

    The state dict must hold exactly the backbone's keys (strict loading).
    """
    state, saved_name = load_backbone_state(state_file)
    if saved_name is not None and saved_name != model_name:
        raise WeightsError(f"trained weights {state_file} are for model {saved_name!r}, not {model_name!r}")
    model = create_backbone(model_name, image_size, seed, model_kwargs)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise WeightsError(f"trained weights {state_file} do not fit timm model {model_name!r}: {err}") from err
    return model.eval()


def backbone_with_weights(
    weights: str,
    model_name: str,
    image_size: int,
    seed: int,
    model_kwargs: Mapping[str, Any] | None = None,
    cache_dir: str | os.PathLike | None = None,
    pretrained_file: str | os.PathLike | None = None,
    trained_file: str | os.PathLike | None = None,
    allow_download: bool = True,
) -> torch.nn.Module:
    """The backbone for one value of the configuration's ``weights`` (see :data:`WEIGHTS`)."""
    if weights == "init":
        return create_backbone(model_name, image_size, seed, model_kwargs)
    if weights == "pretrained":
        if cache_dir is None:
            raise ValueError("weights 'pretrained' needs cache_dir (the hub cache under resources/)")
        return load_pretrained_backbone(
            model_name, image_size, seed, cache_dir, pretrained_file=pretrained_file,
            model_kwargs=model_kwargs, allow_download=allow_download,
        )
    if weights == "trained":
        if trained_file is None:
            raise ValueError("weights 'trained' needs trained_file")
        return load_trained_backbone(model_name, image_size, seed, trained_file, model_kwargs)
    raise ValueError(f"weights must be one of {list(WEIGHTS)}, got {weights!r}")
