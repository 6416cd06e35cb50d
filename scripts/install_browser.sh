#!/usr/bin/env bash
# The browser of the browser check: Debian's chromium (/usr/bin/chromium), plus a small CJK font so
# that the Chinese titles of the source articles render in the screenshots. Playwright (from
# requirements.txt) drives this binary; it never downloads a browser of its own.
# Idempotent: does nothing when chromium and the font are already installed.
set -euo pipefail
PACKAGES=(chromium fonts-wqy-microhei)

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [[ ${#missing[@]} -eq 0 && -x /usr/bin/chromium ]]; then
  exit 0
fi

if [[ "$(id -u)" -eq 0 ]]; then
  SUDO=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  SUDO=(sudo -n)
else
  echo "install_browser.sh: need root (or passwordless sudo) to apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "Installing ${missing[*]} with apt-get"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
/usr/bin/chromium --version 2>/dev/null || true
