"""Memory schedule: block sizes and super-blocks from ``memory_gb``, and flop estimates.

The interface: :func:`make_schedule` turns a verified plan and the kernel's size and
layout into a :class:`Schedule` (the layout it can afford, chunking, flop estimate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from rmtlens.kernels.ntk.capture import GIB
from rmtlens.kernels.ntk.plan import Plan


@dataclass
class Schedule:
    """Chunking of a plan: transient budget (bytes), pass batch, super-block (samples
    whose pieces are resident together), the contraction's block target, the layout
    run (``symmetric``, ``prefix`` or ``rectangular``) and the flops it takes
    (:func:`estimate_flops`)."""

    plan: Plan
    budget_transient: float
    pass_batch: int
    super_block: int
    block_target: int
    layout: str = "symmetric"
    flops: dict = field(default_factory=dict)


def _union_size(n_rows: int, n_cols: int, layout: str) -> int:
    """Samples whose pieces are needed: rows, plus columns unless they are rows too."""
    return n_rows + n_cols if layout == "rectangular" else n_rows


def make_schedule(plan: Plan, n_rows, n_cols, layout, device, memory_gb, copy_bytes) -> Schedule:
    """Chunking of a verified plan for an ``n_rows x n_cols`` kernel under ``memory_gb``
    (GiB, of which ``copy_bytes`` are taken by a model copy).

    ``layout``: ``symmetric``, ``rectangular`` or ``prefix`` (columns = leading rows);
    a prefix layout whose row pieces do not all fit runs as ``rectangular`` (the
    returned ``Schedule.layout``).
    """
    sched = _chunking(plan, n_rows, n_cols, layout, device, memory_gb, copy_bytes)
    if layout == "prefix" and sched.super_block < n_rows:
        layout = "rectangular"  # pieces of all rows do not fit: the general path
        sched = _chunking(plan, n_rows, n_cols, layout, device, memory_gb, copy_bytes)
    sched.layout = layout
    sched.flops = estimate_flops(sched, n_rows, n_cols, layout)
    return sched


def _chunking(plan: Plan, n_rows, n_cols, layout, device, memory_gb, copy_bytes) -> Schedule:
    """Chunking under the memory budget (the plan does not depend on the layout)."""
    n_union = _union_size(n_rows, n_cols, layout)
    total = memory_gb * GIB
    fixed = n_rows * n_cols * 8 + copy_bytes
    working = total - fixed
    if working < 0.25 * total:
        raise ValueError(
            f"memory_gb={memory_gb} is too small: the kernel itself takes "
            f"{n_rows * n_cols * 8 / GIB:.3f} GiB (+ {copy_bytes / GIB:.3f} GiB model copy)"
        )
    # resident pieces take what they need (at most 60%); transients get the rest
    budget_store = 0.6 * working
    per_sample = max(1, plan.store_bytes_per_sample)
    if n_union * per_sample <= budget_store:
        super_block = n_union
        store = n_union * per_sample
    else:
        super_block = int(budget_store // (2 * per_sample))
        if super_block < 1:
            raise ValueError(
                f"memory_gb={memory_gb} is too small: one sample's pieces take {per_sample / GIB:.3f} GiB"
            )
        store = 2 * super_block * per_sample
    budget_transient = 0.85 * working - store
    act = max(1.0, 2.0 * plan.act_bytes_per_sample)
    cap = 64 if plan.generic_roots else 128
    pass_batch = int(max(1, min(cap, budget_transient // act, super_block)))
    if device.type == "cuda":
        target = 2048
    else:  # 256 reaches the GEMM peak; smaller kernels gain more from symmetric blocks
        target = 256 if n_cols >= 1024 or layout == "rectangular" else 128
    return Schedule(plan, budget_transient, pass_batch, super_block, target)


def estimate_flops(sched: Schedule, n_rows: int, n_cols: int, layout: str) -> dict:
    """Flops of the schedule: gradient pass, formation and contraction."""
    plan = sched.plan
    n_union = _union_size(n_rows, n_cols, layout)
    m = sched.super_block
    if m >= n_union:
        recompute = 0
    elif layout == "symmetric":
        k = math.ceil(n_rows / m)
        recompute = n_rows * (k - 1) / 2 + 0.0
    else:
        recompute = math.ceil(n_rows / m) * n_cols - n_cols
    passes = (n_union + recompute) * plan.pass_flops_per_sample
    explicit = structured = form = 0.0
    itemsize = plan.itemsize
    if layout == "rectangular":
        entries = float(n_rows * n_cols)
    else:  # blocks on and above the diagonal of the leading n_cols x n_cols part
        b = min(sched.block_target, n_cols)
        nb = math.ceil(n_cols / b)
        entries = n_cols * n_cols * (nb * (nb + 1) / 2) / (nb * nb) + (n_rows - n_cols) * n_cols
    # whole-pool terms of the contraction when they fit:
    # symmetric rank-k products, each sample's gradient formed once
    budget = sched.budget_transient
    sym_entries = n_cols * (n_cols + 1) / 2 + (n_rows - n_cols) * n_cols
    whole_entries = float(n_rows * n_cols) if layout == "rectangular" else sym_entries
    out_fits = 3 * n_rows * n_cols * itemsize + 64 * 2**20 <= budget
    explicit += 2.0 * (whole_entries if out_fits else entries) * plan.n_formed
    for s in plan.sites:
        if s.method == "explicit":
            explicit += (whole_entries if out_fits else entries) * s.explicit_pair_flops
            formed_once = s.store == "formed" or out_fits
            form += s.form_flops * (n_union if formed_once else n_rows + n_cols)
        else:
            held = (n_rows + (n_cols if layout == "rectangular" else 0)) * s.positions * (s.d_a + s.d_g)
            fits = s.groups == 1 and (3 * n_rows * n_cols + held) * itemsize <= budget
            structured += (whole_entries if fits else entries) * s.gram_flops
    return dict(
        n_params=plan.n_params,
        explicit_jjt=2.0 * n_rows * n_cols * plan.n_params,
        gradient_pass=passes,
        formation=form,
        contraction_explicit=explicit,
        contraction_structured=structured,
        contraction=explicit + structured + form,
        total=passes + explicit + structured + form,
        coverage=dict(plan.coverage),
    )
