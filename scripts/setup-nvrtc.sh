#!/usr/bin/env bash
# Install NVRTC and the CUDA headers from PyPI into the repo's .venv, for the GPU-less
# compile check of the kernels `ligerc --emit cuda` writes (tests/cuda_codegen.rs).
#
# Usage: eval "$(scripts/setup-nvrtc.sh)"
#   Needs .venv/ (scripts/setup-python.sh makes it). pip-installs the pinned wheels
#   nvidia-cuda-nvrtc, nvidia-cuda-runtime and nvidia-cuda-crt (CUDA 13.x: libnvrtc.so.13,
#   cuda_bf16.h; crt/mma.h, which the tensor-core kernels' mma.h includes)
#   and prints, on stdout and nothing else, two shell lines:
#     export LIGERC_NVRTC_LIB_DIR=<dir holding libnvrtc.so.13 and libnvrtc-builtins.so.13.*>
#     export LIGERC_CUDA_INCLUDE=<dir holding cuda_bf16.h>
#   Idempotent: a stamp (.venv/.nvrtc.stamp) holding the pins skips the install.
#   No LD_LIBRARY_PATH is needed: ligerc-codegen loads the libraries by absolute path
#   from LIGERC_NVRTC_LIB_DIR before cudarc looks them up by name (docs/CUDA.md).
# Env: NVRTC_VERSION, CUDA_RUNTIME_VERSION, CUDA_CRT_VERSION override the pins.
set -euo pipefail

if [[ $# -gt 0 ]]; then
    case "$1" in
        -h|--help) awk 'NR>1 && /^#/ {sub(/^# ?/, ""); print; next} NR>1 {exit}' "$0"; exit 0 ;;
        *) echo "setup-nvrtc.sh: takes no arguments (got '$1'); see --help" >&2; exit 2 ;;
    esac
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
py="$venv/bin/python"
nvrtc_version="${NVRTC_VERSION:-13.5.37}"
runtime_version="${CUDA_RUNTIME_VERSION:-13.5.37}"
crt_version="${CUDA_CRT_VERSION:-13.5.37}"
pins="nvidia-cuda-nvrtc==$nvrtc_version nvidia-cuda-runtime==$runtime_version nvidia-cuda-crt==$crt_version"
stamp="$venv/.nvrtc.stamp"

[[ -x "$py" ]] || { echo "setup-nvrtc.sh: $py missing: run scripts/setup-python.sh first" >&2; exit 1; }

if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$pins" ]]; then
    echo "setup-nvrtc.sh: installing $pins into $venv" >&2
    rm -f "$stamp"
    # shellcheck disable=SC2086
    "$py" -m pip install --quiet --disable-pip-version-check $pins >&2 || {
        echo "setup-nvrtc.sh: pip install failed (is PyPI reachable?)" >&2
        exit 1
    }
fi

# The wheels put everything under site-packages/nvidia/cu13/{lib,include}.
base="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/nvidia/cu13"
lib="$base/lib"
inc="$base/include"
[[ -f "$lib/libnvrtc.so.13" ]] || { echo "setup-nvrtc.sh: $lib/libnvrtc.so.13 not found after install" >&2; exit 1; }
compgen -G "$lib/libnvrtc-builtins.so.13*" >/dev/null || {
    echo "setup-nvrtc.sh: $lib/libnvrtc-builtins.so.13.* not found after install" >&2
    exit 1
}
for h in cuda_bf16.h mma.h crt/mma.h; do
    [[ -f "$inc/$h" ]] || { echo "setup-nvrtc.sh: $inc/$h not found after install" >&2; exit 1; }
done
echo "$pins" > "$stamp"
printf 'export LIGERC_NVRTC_LIB_DIR=%q\n' "$lib"
printf 'export LIGERC_CUDA_INCLUDE=%q\n' "$inc"
