#!/usr/bin/env bash
# Create, or find, the virtual environment in which bench/entk.py runs the
# neural-tangents peer (JAX on CPU). Prints the environment's python on success.
#
#   bench/peers/nt_env.sh                        # default: <repo>/.venv-nt
#   RMTLENS_NT_VENV=/some/path bench/peers/nt_env.sh
#
# Pins (nt_constraints.txt): jax 0.4.30 and later stop with an illegal instruction
# on the build machines' CPU, so jax/jaxlib 0.4.25 with numpy 1.26 (jaxlib 0.4.25 is
# built against numpy 1.x). neural-tangents imports its TensorFlow bridge at import
# time, so tensorflow and tf2jax are needed although the benchmark does not use them.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${RMTLENS_NT_VENV:-$here/../../.venv-nt}"
py="$venv/bin/python"
check='import jax, neural_tangents; assert jax.__version__ == "0.4.25", jax.__version__'
if [ -x "$py" ] && "$py" -c "$check" >/dev/null 2>&1; then
    echo "$py"
    exit 0
fi
"${PYTHON:-python3.11}" -m venv "$venv" >&2
"$py" -m pip install -q --disable-pip-version-check -c "$here/nt_constraints.txt" \
    jax jaxlib numpy ml-dtypes scipy tensorflow tf2jax neural-tangents >&2
"$py" -c "$check" >&2
echo "$py"
