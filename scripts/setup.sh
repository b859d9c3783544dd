#!/usr/bin/env bash
# Installs every build and test dependency of moe-lfb from Debian's packages.
# Idempotent: packages already present are skipped, so running it twice is cheap.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  libopenblas-dev
  openmpi-bin libopenmpi-dev
  libyaml-cpp-dev
  libspdlog-dev libfmt-dev
  libsentencepiece-dev sentencepiece
  nlohmann-json3-dev
  libcli11-dev              # command-line parsing of the programs
  libgtest-dev googletest
  zlib1g-dev
  patchelf                  # scripts/bundle.sh
  python3 python3-yaml python3-numpy python3-matplotlib   # scripts/report.py
  clang libclang-rt-dev libomp-dev           # scripts/fuzz.sh (libFuzzer)
  libboost-context-dev      # emu/: the emulated device's fibers
  slurmctld slurmd slurm-client munge iproute2   # tests/slurm/: a local one-node Slurm
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages already installed"
else
  echo "setup: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ -x /usr/local/cuda/bin/nvcc ] || command -v nvcc >/dev/null 2>&1; then
  echo "setup: CUDA toolkit found ($( (command -v nvcc || echo /usr/local/cuda/bin/nvcc) ))"
else
  echo "setup: no CUDA toolkit; building the CPU backend only"
fi
