#!/usr/bin/env bash
# Install Alto and the extras named in $1 (default: models) into ./.venv.
#
#   bash install.sh                # the example apps on the embedded models
#   bash install.sh all            # everything the tests need (models, LangGraph, Ray, dev tools,
#                                  # and llama.cpp's own server)
#   bash install.sh llama-server   # only llama.cpp's own server, into .venv/bin/llama-server
#
# The words combine with commas (models,llama-server).
#
# llama-cpp-python ships only a source distribution, and by default its build targets the
# build machine's own CPU (GGML_NATIVE). On a VM whose CPU advertises AMX or AVX-512 without
# enabling it for processes, such a build dies with "Illegal instruction" at the first decode.
# This script builds it for a portable x86-64 baseline instead (AVX2, FMA, F16C; no AMX, no
# AVX-512), skips the multimodal library Alto never loads, and never reuses a wheel from pip's
# cache, which may hold a native build. A portable build already in .venv is kept.
#
# llama.cpp's own HTTP server (llama-server: several sequences decoded in one batch, a prompt
# cache per slot) is built from the llama.cpp sources vendored in the same pinned sdist, with
# the same portable flags, statically linked, without its web UI and without downloading
# anything but the sdist. Its multimodal library (mtmd) is built too: the server links it
# unconditionally. A build whose stamp matches the version and flags is kept.
set -euo pipefail
cd "$(dirname "$0")"
extras=${1:-models}
llama="llama-cpp-python==0.3.36"   # keep in step with pyproject.toml

portable_args="-DGGML_NATIVE=OFF"
if [ "$(uname -m)" = x86_64 ]; then
  portable_args="$portable_args -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
fi

build_llama_server() {
  local server_args="$portable_args -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF \
-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_APP=OFF \
-DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DCMAKE_BUILD_TYPE=Release"
  local stamp_file=.venv/libexec/alto/llama-server.stamp
  local stamp="$llama $server_args"
  if [ -x .venv/bin/llama-server ] && [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp" ] \
      && .venv/bin/llama-server --version >/dev/null 2>&1; then
    echo "install.sh: the portable llama-server build in .venv is kept"
    return
  fi
  local work
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  echo "install.sh: building llama-server from the llama.cpp vendored in $llama (about 7 minutes on 2 cores)"
  local start=$SECONDS
  python -m pip download --quiet --no-deps --no-binary :all: "$llama" -d "$work"
  tar -xzf "$work"/llama_cpp_python-*.tar.gz -C "$work"
  local src=("$work"/llama_cpp_python-*/vendor/llama.cpp)
  # shellcheck disable=SC2086
  cmake -S "${src[0]}" -B "$work/build" $server_args >"$work/configure.log" 2>&1 \
    || { cat "$work/configure.log"; exit 1; }
  cmake --build "$work/build" --target llama-server -j2 >"$work/build.log" 2>&1 \
    || { tail -n 60 "$work/build.log"; exit 1; }
  mkdir -p .venv/libexec/alto
  install -m 755 "$work/build/bin/llama-server" .venv/bin/llama-server
  .venv/bin/llama-server --version
  echo "$stamp" >"$stamp_file"
  echo "install.sh: llama-server built in $((SECONDS - start)) s"
  rm -rf "$work"
  trap - EXIT
}

server=no
case ",$extras," in
  *,all,*|*,llama-server,*) server=yes ;;
esac
# The pip extras are the words other than llama-server.
pip_extras=$(echo ",$extras," | sed -e 's/,llama-server,/,/g' -e 's/^,//' -e 's/,$//')

python3 -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip

case ",$pip_extras," in
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
      cmake_args="$portable_args -DLLAVA_BUILD=OFF"
      echo "install.sh: building $llama from source for a portable CPU baseline (about 5 minutes on 2 cores)"
      start=$SECONDS
      CMAKE_ARGS="$cmake_args" python -m pip install --quiet --no-cache-dir --force-reinstall \
        --no-deps "$llama"
      echo "install.sh: $llama built in $((SECONDS - start)) s"
    fi
    ;;
esac

if [ "$server" = yes ]; then
  build_llama_server
fi

if [ -n "$pip_extras" ]; then
  python -m pip install --quiet -e ".[$pip_extras]"
fi
echo "install.sh: done; activate with: . .venv/bin/activate"
