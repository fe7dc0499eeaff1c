#!/usr/bin/env bash
# Installs the Debian packages moeroute builds, tests and demos with, when any is missing.
# Runs apt-get update only when something must be installed. Needs root (or sudo).
set -euo pipefail

packages=(
  cmake make g++ pkg-config
  libeigen3-dev nlohmann-json3-dev libcli11-dev
  libvulkan-dev mesa-vulkan-drivers vulkan-validationlayers glslc
  libgtest-dev libgmock-dev libbenchmark-dev
  clang libclang-rt-14-dev
  chromium
)
# Extra packages a caller asks for (e.g. the browser for the report test).
packages+=("$@")

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "deps: installing ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "deps: need root to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
