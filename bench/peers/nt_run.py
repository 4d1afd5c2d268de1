"""neural-tangents peer: empirical NTK of a JAX port of the benchmark network.

Run by bench/entk.py with the neural-tangents environment's python:

    python bench/peers/nt_run.py IN.npz OUT.npz

IN holds the model name, the weights (``p:<name>``), BatchNorm statistics
(``s:<name>``), the inputs ``x``, the PyTorch outputs ``f_torch`` (checked first:
the port must reproduce them), and the implementations to run with their N and batch
size. OUT holds, per implementation, the kernel, its jit-compile time, its run time
and the peak-RSS growth of the run.
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402


def _status_kib(field):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def main(src, dst):
    data = np.load(src)
    spec = json.loads(str(data["spec"]))
    if spec["model"] != "resnet18":
        # XLA's oneDNN matmul rewrite stops with an illegal instruction on the build
        # machines' CPU for the transformer's matmuls; the Eigen path is used instead
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"
    import jax
    import jax.numpy as jnp
    import neural_tangents as nt

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from jax_models import MODELS

    params = {k[2:]: jnp.asarray(data[k]) for k in data.files if k.startswith("p:")}
    stats = {k[2:]: jnp.asarray(data[k]) for k in data.files if k.startswith("s:")}
    x_all = jnp.asarray(data["x"])
    model = MODELS[spec["model"]]

    def f(p, x):
        return model(p, x, stats)

    print(f"# nt: checking the JAX port of {spec['model']}", file=sys.stderr, flush=True)
    out = jax.jit(f)(params, x_all[:64])
    f_torch = data["f_torch"][:64]
    port_err = float(np.abs(np.asarray(out)[:, 0] - f_torch).max() / np.abs(f_torch).max())
    result = {"port_max_rel_diff": port_err, "jax": jax.__version__, "nt": nt.__version__, "runs": {}}
    arrays = {}
    impls = {
        "JACOBIAN_CONTRACTION": nt.NtkImplementation.JACOBIAN_CONTRACTION,
        "NTK_VECTOR_PRODUCTS": nt.NtkImplementation.NTK_VECTOR_PRODUCTS,
        "STRUCTURED_DERIVATIVES": nt.NtkImplementation.STRUCTURED_DERIVATIVES,
    }
    for name, n, batch in spec["runs"]:
        x = x_all[:n]
        print(f"# nt: {name} N={n}", file=sys.stderr, flush=True)
        kfn = jax.jit(nt.empirical_ntk_fn(f, trace_axes=(-1,), vmap_axes=0, implementation=impls[name]))
        if batch and batch < n:  # blocks of batch x batch samples, one compiled function
            xb = x[:batch]
            t0 = time.perf_counter()
            jax.block_until_ready(kfn(xb, xb, params))
            t_first = time.perf_counter() - t0
            t0 = time.perf_counter()
            jax.block_until_ready(kfn(xb, xb, params))
            t_compile = t_first - (time.perf_counter() - t0)
            batched = nt.batch(kfn, batch_size=batch)
            run = lambda: batched(x, x, params)  # noqa: E731
        else:
            t0 = time.perf_counter()
            compiled = kfn.lower(x, None, params).compile()
            t_compile = time.perf_counter() - t0
            run = lambda: compiled(x, None, params)  # noqa: E731
        resettable = _reset_peak()
        base = _status_kib("VmRSS") if resettable else _status_kib("VmHWM")
        t0 = time.perf_counter()
        K = np.asarray(jax.block_until_ready(run()))
        t_run = time.perf_counter() - t0
        peak = max(0, _status_kib("VmHWM") - base) / 2**20
        result["runs"][name] = dict(n=n, batch=batch, compile_s=t_compile, run_s=t_run, peak_gib=peak)
        arrays["K:" + name] = K.astype(np.float64)
        print(f"# nt {name} N={n}: compile {t_compile:.1f} s, run {t_run:.1f} s, peak +{peak:.2f} GiB",
              file=sys.stderr, flush=True)
    np.savez(dst, result=json.dumps(result), **arrays)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
