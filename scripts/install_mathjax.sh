#!/usr/bin/env bash
# Ship MathJax 3 with the book, so that its math renders offline.
#
# Installs mathjax@VERSION from the npm registry into .venv/npm and copies its es5/ bundle to
# book/_static/mathjax/ (git-ignored); _config.yml points Sphinx's `mathjax_path` there.
# Idempotent: does nothing when that version is already in place.
set -euo pipefail
VERSION="${1:?usage: install_mathjax.sh VERSION}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/book/_static/mathjax"
MARK="$DEST/.mathjax-version"

if [[ -f "$MARK" && "$(cat "$MARK")" == "$VERSION" && -f "$DEST/tex-mml-chtml.js" ]]; then
  exit 0
fi
command -v npm >/dev/null || { echo "install_mathjax.sh: npm is needed (Debian: apt-get install npm)" >&2; exit 1; }

PREFIX="$ROOT/.venv/npm"
mkdir -p "$PREFIX"
echo "Installing mathjax@$VERSION from the npm registry into $PREFIX"
npm install --prefix "$PREFIX" --no-audit --no-fund --no-save --loglevel=error "mathjax@$VERSION"
SRC="$PREFIX/node_modules/mathjax/es5"
[[ -f "$SRC/tex-mml-chtml.js" ]] || { echo "install_mathjax.sh: $SRC/tex-mml-chtml.js missing" >&2; exit 1; }
INSTALLED="$(node -p "require('$PREFIX/node_modules/mathjax/package.json').version")"
[[ "$INSTALLED" == "$VERSION" ]] || { echo "install_mathjax.sh: got mathjax $INSTALLED, wanted $VERSION" >&2; exit 1; }

TMP="$(mktemp -d "$ROOT/book/_static/.mathjax.XXXXXX")"
cp -R "$SRC/." "$TMP/"
echo "$VERSION" > "$TMP/.mathjax-version"
rm -rf "$DEST"
mv "$TMP" "$DEST"
chmod -R a+rX "$DEST"
echo "MathJax $VERSION copied to book/_static/mathjax"
