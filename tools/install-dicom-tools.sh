#!/usr/bin/env bash
# Install the real DICOM tools the hospital-integration tests run: dcmtk (dcmdump, storescu, storescp, dcmcjpeg)
# and dicom3tools (dciodvfy, the IOD validator), from Debian's packages.
#
# Idempotent: does nothing when every tool is already on PATH. Needs root (or passwordless sudo) and apt-get;
# without them it says so and exits 1, and the tests that need the tools skip with that reason.
#
#   tools/install-dicom-tools.sh
set -euo pipefail

tools=(dcmdump storescu storescp dcmcjpeg dciodvfy)
missing() { for tool in "${tools[@]}"; do command -v "$tool" >/dev/null || return 0; done; return 1; }

if ! missing; then
  echo "DICOM tools already installed: $(dcmdump --version 2>/dev/null | head -1), $(command -v dciodvfy)"
  exit 0
fi
command -v apt-get >/dev/null || { echo "install-dicom-tools: apt-get is required (Debian/Ubuntu)" >&2; exit 1; }
sudo=""
if [[ "$(id -u)" != 0 ]]; then
  command -v sudo >/dev/null && sudo -n true 2>/dev/null || { echo "install-dicom-tools: needs root or sudo" >&2; exit 1; }
  sudo="sudo -n"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends dcmtk dicom3tools >/dev/null
if missing; then echo "install-dicom-tools: installed, but not every tool of ${tools[*]} is on PATH" >&2; exit 1; fi
echo "installed: $(dcmdump --version 2>/dev/null | head -1), $(command -v dciodvfy)"
