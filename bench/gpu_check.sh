#!/usr/bin/env bash
# GPU checks of the eNTK engine, one prepared run (under 10 minutes on one H100/H200):
#
#   1. the CUDA tests (tests/test_gpu.py) and the engine's exactness tests;
#   2. bench/entk.py on the GPU (resnet18, 32 px, N=1024), TF32 off, then on;
#   3. one 4096 x 4096 resnet18 tile at 224 px (time, peak GPU memory);
#   4. eigh of a 20,000 x 20,000 float64 matrix on the GPU (time, peak memory);
#   5. config/paper.yaml's eNTK tiles projected from the rate measured in 3.
#
#   bench/gpu_check.sh            # on a machine with a CUDA GPU
#   bench/gpu_check.sh --smoke    # every step at tiny sizes (on the CPU if there is no GPU)
#
# Output: the steps' reports on stdout; JSON summaries under $OUT (or a temporary
# folder). Exit status: non-zero if a step fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-.venv/bin/python}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
out="${OUT:-$(mktemp -d)}"
mkdir -p "$out"
smoke=0
[ "${1:-}" = "--smoke" ] && smoke=1
if "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    device=cuda
elif [ "$smoke" = 1 ]; then
    device=cpu
    echo "# no CUDA device: smoke run on the CPU"
else
    echo "no CUDA device; run with --smoke to test this script on the CPU" >&2
    exit 2
fi
if [ "$smoke" = 1 ]; then  # tiny sizes: the same steps, seconds each
    n=32; tile=8; tile_n=8; tile_size=64; eig_n=300; tests=(tests/test_gpu.py tests/test_ntk_steps.py)
    config=config/test.yaml; threads=1
else
    n=1024; tile=4096; tile_n=64; tile_size=224; eig_n=20000; tests=(tests/test_gpu.py tests/test_ntk.py tests/test_ntk_steps.py)
    config=config/paper.yaml; threads="$(nproc)"
fi
step() { printf '\n=== %s (%s)\n' "$1" "$(date +%T)"; }

step "1. device"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
          "device", torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")'

step "2. tests: ${tests[*]}"
"$PY" -m pytest -q -rs "${tests[@]}"

for tf32 in off on; do
    step "3. bench/entk.py N=$n, 32 px, TF32 $tf32"
    flag=(); [ "$tf32" = on ] && flag=(--tf32)
    "$PY" bench/entk.py --device "$device" "${flag[@]}" --n "$n" --threads "$threads" --baselines none \
        --json "$out/entk_tf32_$tf32.json"
done

step "4. one $tile x $tile tile at $tile_size px (resnet18, float32, TF32 off)"
"$PY" bench/entk.py --device "$device" --n "$tile_n" --image-size "$tile_size" --threads "$threads" \
    --baselines none --tile "$tile" --tile-memory-gb "$([ "$device" = cuda ] && echo 60 || echo 2)" \
    --json "$out/tile.json"

step "5. eigh, n = $eig_n, float64"
"$PY" - "$device" "$eig_n" <<'EOF'
import sys, time, torch
device, n = sys.argv[1], int(sys.argv[2])
g = torch.Generator(device="cpu").manual_seed(0)
a = torch.randn(n, n, generator=g, dtype=torch.float64).to(device)
a = (a + a.T) / 2
cuda = device == "cuda"
if cuda:
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); start = torch.cuda.memory_allocated()
t = time.perf_counter()
w, v = torch.linalg.eigh(a)
if cuda:
    torch.cuda.synchronize()
seconds = time.perf_counter() - t
resid = float((a @ v[:, :8] - v[:, :8] * w[:8]).abs().max() / w.abs().max())
peak = (torch.cuda.max_memory_allocated() - start) / 2**30 if cuda else float("nan")
print(f"eigh n={n} float64 on {device}: {seconds:.1f} s, peak +{peak:.2f} GiB beyond the matrix "
      f"({a.numel() * 8 / 2**30:.2f} GiB); residual of 8 pairs {resid:.1e}")
EOF

step "6. projection of $config's eNTK tiles at the rate of step 4"
rate="$("$PY" - "$out/tile.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
best = min(d["tile"]["engines"].values(), key=lambda r: r["total"])
print(f"{best['flops']['total'] / best['total'] / 1e12:.4f}")
EOF
)"
echo "achieved rate of the tile: $rate TFLOP/s"
"$PY" bench/paper_cost.py --config "$config" --rate-tflops "$rate"
echo "# JSON summaries in $out"
