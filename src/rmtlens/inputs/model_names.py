"""timm model names, checked before any job runs.

Snakemake checks every backbone's model name each time it reads the Snakefile.
Importing timm imports torch and torchvision (about 5 s here), so a name is first
looked up among the architectures that timm's model files register with
``@register_model``, read from its source without importing it (about 30 ms). Only a
name not found there imports timm, which decides and names the closest matches: the
source lookup can only accept a name that timm registers, never refuse one.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path

_REGISTERED = re.compile(r"^@register_model\b[^\n]*\n(?:@[^\n]*\n)*def (\w+)\(", re.MULTILINE)


@functools.lru_cache(maxsize=1)
def architectures_in_timm_source() -> frozenset[str]:
    """Architecture names defined under ``@register_model`` in timm's ``models/*.py``
    (empty when timm is not installed)."""
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    models = Path(next(iter(spec.submodule_search_locations))) / "models"
    names: set[str] = set()
    for source in sorted(models.glob("*.py")):
        names.update(_REGISTERED.findall(source.read_text(encoding="utf-8")))
    return frozenset(names)


def architecture(model_name: str) -> str:
    """``model_name`` without its pretrained tag (``'resnet50.a1_in1k'`` -> ``'resnet50'``)."""
    return model_name.split(".", 1)[0]


def closest_model_names(model_name: str, n: int = 8) -> list[str]:
    """The timm architecture names closest to ``model_name`` (its tag and case ignored;
    difflib ratio ≥ 0.6, best first), then names that contain its first word, up to
    ``n`` in all. Imports timm."""
    import difflib

    import timm

    names = timm.list_models()  # lower case, as timm spells them
    arch = architecture(model_name).lower()
    close = difflib.get_close_matches(arch, names, n=n, cutoff=0.6)
    word = arch.split("_")[0]
    if word:
        close += [m for m in names if word in m and m not in close][: max(0, n - len(close))]
    return close[:n]


def check_model_name(model_name: str) -> None:
    """Raise ``ValueError`` naming ``model_name`` and the closest names timm knows, if
    timm does not know it. Imports timm only for a name its source does not register."""
    if architecture(model_name) in architectures_in_timm_source():
        return
    import timm

    if not timm.is_model(model_name):
        close = closest_model_names(model_name)
        hint = f" Closest timm names: {', '.join(close)}." if close else ""
        raise ValueError(
            f"unknown timm model {model_name!r}.{hint} All names: python -c \"import timm; print(timm.list_models())\"."
        )
