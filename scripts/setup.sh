#!/usr/bin/env bash
# Create .venv and install eoembed with everything a notebook user needs:
#   1. torch (see EOEMBED_TORCH_INDEX below for which build and from where),
#   2. eoembed, editable, with every runtime extra and the test tools: `.[all,test]`
#      (models, data, search, viz, scale, notebook + pytest, hypothesis, playwright, einops);
#      on a machine with an NVIDIA GPU also `.[gpu]` (faiss-gpu replaces faiss-cpu),
#   3. the parity tests' oracles timm and terratorch, --no-deps (their requirements —
#      torchvision, lightning… — would replace the chosen build of torch).
# The `test` extra holds no runtime library, so the suite runs against exactly what
# `pip install 'eoembed[all]'` gives.
#
# Settings (environment variables):
#   PYTHON               the interpreter that creates .venv (default: python3).
#   EOEMBED_TORCH_INDEX  where torch comes from:
#     auto (default)     Linux without a GPU: the CPU build torch==2.13.0 from the PyTorch CPU
#                        wheel index https://download.pytorch.org/whl/cpu (pip --index-url;
#                        PyPI's Linux wheel is the CUDA build, ~3 GB with its nvidia-* packages).
#                        If that index cannot be reached within 3 s, torch==2.13.0 comes from
#                        pip's configured index instead and the output says so — right where
#                        that index is a local mirror serving the CPU wheel (2.13.0+cpu), as on
#                        the project's CI machines; the installed build is printed at the end.
#                        Linux with a GPU (`nvidia-smi -L` succeeds): torch from pip's configured
#                        index (PyPI: the CUDA build). macOS, Windows: torch==2.13.0 from pip's
#                        configured index (PyPI's wheels there are CPU builds).
#     pip                pip's configured index (pip.conf, PIP_INDEX_URL, …) on every platform;
#                        no probe.
#     <URL>              this index for torch (pip --index-url), e.g. a mirror of the CPU index,
#                        or https://download.pytorch.org/whl/cu128 on a GPU machine; set-up stops
#                        if <URL>/torch/ cannot be reached within 3 s.
# Options:
#   --plan               print the decision and the commands it would run, install nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_PIN=torch==2.13.0
CPU_INDEX=https://download.pytorch.org/whl/cpu
PY=${PYTHON:-python3}
PLAN=0
for arg in "$@"; do
  case "$arg" in
    --plan) PLAN=1 ;;
    *) echo "setup.sh: unknown option '$arg' (expected: --plan)" >&2; exit 2 ;;
  esac
done

# Can pip fetch from index $1 within 3 s? (an http(s) index must answer for <index>/torch/).
reachable() {
  "$PY" - "$1" <<'EOF'
import os, sys, threading, urllib.parse, urllib.request
url = sys.argv[1].rstrip("/")
parts = urllib.parse.urlparse(url)
if parts.scheme == "file":
    sys.exit(0 if os.path.exists(urllib.request.url2pathname(parts.path)) else 1)
ok = []
def probe():
    try:
        with urllib.request.urlopen(url + "/torch/", timeout=3) as r:
            ok.append(r.status < 400)
    except Exception:
        ok.append(False)
t = threading.Thread(target=probe, daemon=True)  # the timeout does not cover name lookup
t.start()
t.join(3.5)
sys.exit(0 if ok and ok[0] else 1)
EOF
}

pip_index_words() {  # what pip is configured to use, for the summary line
  local cfg
  cfg=$("$PY" -m pip config list 2>/dev/null | grep -E 'index-url|find-links' | tr '\n' ' ' | sed 's/ *$//' || true)
  case "$cfg" in
    *.index-url=*) echo "$cfg" ;;
    "") echo "PyPI" ;;
    *) echo "PyPI, $cfg" ;;
  esac
}

case "$(uname -s)" in
  Linux*) OS=linux ;;
  Darwin*) OS=macos ;;
  MINGW*|MSYS*|CYGWIN*|Windows*) OS=windows ;;
  *) OS=$(uname -s) ;;
esac
GPU=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then GPU=1; fi

TORCH_INDEX=${EOEMBED_TORCH_INDEX:-auto}
TORCH_REQ=$TORCH_PIN
INDEX_ARGS=()
NOTE=""
case "$TORCH_INDEX" in
  auto)
    if [ "$GPU" = 1 ]; then
      TORCH_REQ=torch
      WHAT="CUDA build of torch (GPU found by nvidia-smi) from pip's configured index ($(pip_index_words))"
    elif [ "$OS" = linux ]; then
      if reachable "$CPU_INDEX"; then
        INDEX_ARGS=(--index-url "$CPU_INDEX")
        WHAT="CPU build of $TORCH_PIN (Linux, no GPU) from $CPU_INDEX"
      else
        WHAT="$TORCH_PIN (Linux, no GPU) from pip's configured index ($(pip_index_words))"
        NOTE="$CPU_INDEX was not reachable within 3 s, so torch comes from pip's configured index: the CPU build where that index serves it (a local mirror with 2.13.0+cpu), the CUDA build from PyPI. Set EOEMBED_TORCH_INDEX to choose."
      fi
    else
      WHAT="$TORCH_PIN ($OS: a CPU build) from pip's configured index ($(pip_index_words))"
    fi ;;
  pip)
    [ "$GPU" = 1 ] && TORCH_REQ=torch
    WHAT="$TORCH_REQ from pip's configured index ($(pip_index_words)), as EOEMBED_TORCH_INDEX=pip asks" ;;
  *://*)
    [ "$GPU" = 1 ] && TORCH_REQ=torch
    if ! reachable "$TORCH_INDEX"; then
      echo "setup.sh: EOEMBED_TORCH_INDEX=$TORCH_INDEX: $TORCH_INDEX/torch/ cannot be reached within 3 s." >&2
      echo "  Set EOEMBED_TORCH_INDEX to a reachable wheel index, or to 'pip' for pip's configured index, or unset it." >&2
      exit 1
    fi
    INDEX_ARGS=(--index-url "$TORCH_INDEX")
    WHAT="$TORCH_REQ from $TORCH_INDEX, as EOEMBED_TORCH_INDEX asks" ;;
  *)
    echo "setup.sh: EOEMBED_TORCH_INDEX='$TORCH_INDEX' is not 'auto', 'pip' or an index URL (https://…, file://…)." >&2
    echo "  Unset it for the default (the PyTorch CPU wheel index on Linux without a GPU)." >&2
    exit 2 ;;
esac
EXTRAS="eoembed[all,test] (editable)"
[ "$GPU" = 1 ] && EXTRAS="$EXTRAS and eoembed[gpu] (faiss-gpu instead of faiss-cpu)"
echo "eoembed setup: torch: $WHAT; then $EXTRAS and the test oracles timm==1.0.31, terratorch==1.2.13 (--no-deps), into $(pwd)/.venv"
[ -z "$NOTE" ] || echo "note: $NOTE"

run() {  # run a command, or print it under --plan
  if [ "$PLAN" = 1 ]; then echo "+ $*"; else "$@"; fi
}

if [ "$OS" = windows ]; then ACTIVATE=.venv/Scripts/activate; else ACTIVATE=.venv/bin/activate; fi
if [ "$PLAN" = 1 ]; then
  [ -f "$ACTIVATE" ] || echo "+ $PY -m venv .venv"
  echo "+ . $ACTIVATE"
else
  [ -f "$ACTIVATE" ] || "$PY" -m venv .venv
  # shellcheck disable=SC1090
  . "$ACTIVATE"
fi
run python -m pip install -q --upgrade pip
run python -m pip install -q "$TORCH_REQ" ${INDEX_ARGS[@]+"${INDEX_ARGS[@]}"}  # bash 3.2 (macOS): empty array
run python -m pip install -q -e '.[all,test]'
if [ "$GPU" = 1 ]; then
  if run python -m pip install -q -e '.[gpu]'; then
    run python -m pip uninstall -q -y faiss-cpu || true
  else
    echo "setup.sh: faiss-gpu could not be installed; FAISS stays on the CPU (faiss-cpu)." >&2
  fi
fi
# Test oracles (parity tests import their model code only). --no-deps: their requirements
# (torchvision, lightning…) would replace the chosen build of torch.
run python -m pip install -q --no-deps timm==1.0.31 terratorch==1.2.13
[ "$PLAN" = 1 ] && exit 0

python - "$GPU" <<'EOF'
import sys
import torch
cuda = torch.version.cuda
print(f"installed torch {torch.__version__} ({'CUDA ' + cuda if cuda else 'CPU'} build)")
if cuda and sys.argv[1] == "0":
    print("setup.sh: warning: this is the CUDA build on a machine without an NVIDIA GPU (a few GB of "
          "unused nvidia-* packages); for the CPU build rerun with "
          "EOEMBED_TORCH_INDEX=https://download.pytorch.org/whl/cpu or a mirror of it.", file=sys.stderr)
EOF
echo "eoembed installed in $(pwd)/.venv"
