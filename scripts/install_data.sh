#!/usr/bin/env bash
# The data set of chapter 10: Fashion-MNIST from Debian's package dataset-fashion-mnist, whose four IDX files land in
# /usr/share/datasets/fashion-mnist/ (ddpm_lib.data.load_fashion_mnist reads them; nothing is downloaded at run time).
# Both `make book` and `make test` call this. Idempotent: does nothing when the package is installed.
set -euo pipefail
PACKAGE=dataset-fashion-mnist

if dpkg-query -W -f='${Status}' "$PACKAGE" 2>/dev/null | grep -q "install ok installed"; then
  exit 0
fi
if [[ "$(id -u)" -eq 0 ]]; then
  SUDO=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  SUDO=(sudo -n)
else
  echo "install_data.sh: need root (or passwordless sudo) to apt-get install $PACKAGE" >&2
  exit 1
fi
echo "Installing $PACKAGE with apt-get"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq "$PACKAGE" >/dev/null
ls /usr/share/datasets/fashion-mnist/
