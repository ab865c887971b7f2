# bench/gpu/cuda_libraries.sh, sourced by bench/gpu/run.sh and scripts/gpu-check.sh: puts on
# LD_LIBRARY_PATH the CUDA libraries (cudart, cuBLAS, NCCL) that binaries built on another machine need,
# each from one consistent place.
#
#   source bench/gpu/cuda_libraries.sh
#   use_cuda_libraries PYTHON BINARY... || exit 1
#
# Each library the binaries name (libcublas.so.13, libnccl.so.2, ...) comes from the toolkit
# (/usr/local/cuda/lib64, /usr/local/cuda/targets/x86_64-linux/lib) when it holds that file, else from
# PYTHON's pip nvidia-* wheels (CUDA 13 wheels keep cudart and cuBLAS in nvidia/cu13/lib, NCCL in
# nvidia/nccl/lib; CUDA 12 ones cuBLAS in nvidia/cublas/lib). The toolkit's folders go first on the path,
# so a wheel folder added for one library never shadows another one the toolkit holds: versions are not
# mixed. Returns non-zero, naming them, when libraries are still not found. The path from before the
# first call stays in PNN_LD_LIBRARY_PATH_BEFORE, for PyTorch, which must find its own wheels' libraries.
# shellcheck shell=bash

use_cuda_libraries() {
  local python=$1
  shift
  # The path as it was before the first call, for programs that bring their own CUDA libraries (PyTorch).
  [ -n "${PNN_LD_LIBRARY_PATH_BEFORE+set}" ] || export PNN_LD_LIBRARY_PATH_BEFORE="${LD_LIBRARY_PATH:-}"
  local toolkit=(/usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib) wheels=()
  [ -n "$python" ] && mapfile -t wheels < <("$python" -c '
import os, nvidia
for package in nvidia.__path__:
    for folder in ("cu13/lib", "cublas/lib", "nccl/lib"):
        print(os.path.join(package, folder))' 2>/dev/null)
  local needed=() chosen=() library folder path=""
  mapfile -t needed < <(ldd "$@" 2>/dev/null | awk '$1 ~ /^lib(cudart|cublas|cublasLt|nccl)\.so/ {print $1}' | sort -u)
  for library in "${needed[@]}"; do
    for folder in "${toolkit[@]}" "${wheels[@]}"; do
      if [ -e "$folder/$library" ]; then chosen+=("$folder"); break; fi
    done
  done
  for folder in "${toolkit[@]}" "${wheels[@]}"; do  # in order of preference, each folder once
    if [[ " ${chosen[*]} " == *" $folder "* && ":$path:" != *":$folder:"* ]]; then path+=${path:+:}$folder; fi
  done
  [ -n "$path" ] && export LD_LIBRARY_PATH="$path${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  local missing
  missing=$(ldd "$@" 2>/dev/null | awk '/not found/ {print $1}' | sort -u | tr '\n' ' ')
  if [ -n "$missing" ]; then
    echo "cuda_libraries.sh: not found: ${missing}(looked in ${toolkit[*]}${wheels[*]:+ ${wheels[*]}}" \
         "and the loader's paths)" >&2
    return 1
  fi
}
