"""How often one ``entk`` call hands control back and forth between the engine's modules.

Traces a real ``entk`` call on a tiny model with ``sys.setprofile`` and records the
*walk*: after every call and return event, the module of the innermost frame that
belongs to ``rmtlens.kernels.ntk`` (frames of torch, timm, the standard library and
``kernels.ntk.network``, which is the model itself, are transparent). Consecutive
entries of the same module are collapsed. A *bounce* is a stretch ``A → B → A`` of the
walk: module ``A`` hands control to ``B`` and gets it back, i.e. ``A`` is re-entered
after it was left. Bounces from ``engine`` (``engine → step → engine``) are the
intended shape (the engine calls the steps in order and takes their results), so they
are not counted; every other distinct pair ``(A, B)`` is, once however often the loops
repeat it.

    PYTHONPATH=src python bench/entk_walk.py            # the count and the bounces
    PYTHONPATH=/other/checkout/src python bench/entk_walk.py   # any other version of the engine
"""

from __future__ import annotations

import sys

PACKAGE = "rmtlens.kernels.ntk."
TRANSPARENT = ("rmtlens.kernels.ntk.network",)
ORCHESTRATOR = "engine"


def record_walk(fn, *args, **kwargs) -> tuple[list[str], object]:
    """``fn(*args, **kwargs)`` under ``sys.setprofile``; returns (collapsed walk, result).

    The walk lists short module names (``capture``, ``plan`` ...) of the innermost
    ``rmtlens.kernels.ntk`` frame after each call/return event.
    """
    stack: list[str | None] = []
    walk: list[str] = []

    def current() -> str | None:
        for mod in reversed(stack):
            if mod is not None:
                return mod
        return None

    def tracer(frame, event, arg):
        if event not in ("call", "return"):  # c_call etc.: C functions, no module of ours
            return
        if event == "call":
            name = frame.f_globals.get("__name__", "")
            ours = name.startswith(PACKAGE) and name not in TRANSPARENT
            stack.append(name[len(PACKAGE) :] if ours else None)
        elif stack:
            stack.pop()
        mod = current()
        if mod is not None and (not walk or walk[-1] != mod):
            walk.append(mod)

    old = sys.getprofile()
    sys.setprofile(tracer)
    try:
        result = fn(*args, **kwargs)
    finally:
        sys.setprofile(old)
    return walk, result


def bounces(walk: list[str], orchestrator: str = ORCHESTRATOR) -> list[tuple[str, str]]:
    """Distinct ``(A, B)`` with ``A → B → A`` somewhere in ``walk``, ``A`` not the orchestrator."""
    found = []
    for i in range(2, len(walk)):
        a, b = walk[i - 2], walk[i - 1]
        if walk[i] == a and a != orchestrator and (a, b) not in found:
            found.append((a, b))
    return found


def tiny_call():
    """The call measured: ``entk`` of timm's ``test_resnet`` (16 px) on 4 samples, float32
    (no model copy), after one warm-up call."""
    import torch

    from rmtlens.inputs import create_backbone, feature_dim
    from rmtlens.kernels.ntk import entk, scalar_network

    backbone = create_backbone("test_resnet", 16, 0)
    model = scalar_network(backbone, feature_dim(backbone, 16), 1)
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    entk(model, x[:2], dtype=torch.float32)  # warm-up: lazy imports stay out of the walk
    return record_walk(entk, model, x, dtype=torch.float32)


def main() -> int:
    import torch

    torch.set_num_threads(1)
    walk, _ = tiny_call()
    found = bounces(walk)
    print(f"walk: {len(walk)} module entries; bounces A -> B -> A (A not {ORCHESTRATOR}): {len(found)}")
    for a, b in found:
        print(f"  {a} -> {b} -> {a}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
