#!/usr/bin/env bash
# Copy the JavaScript the built book needs (MathJax 3, RequireJS, the ipywidgets
# HTML manager) from pinned npm packages into DEST, so that no page loads
# anything from a CDN. DEST is listed in html_static_path (see _config.yml).
#
#   usage: bash scripts/vendor_js.sh book/_vendor
#
# npm installs into a cache folder (VENDOR_JS_CACHE, default .make/npm-vendor),
# reused on later runs; DEST is rebuilt from scratch each time.
set -euo pipefail

DEST=${1:?usage: vendor_js.sh DEST}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
CACHE=${VENDOR_JS_CACHE:-$ROOT/.make/npm-vendor}

# html-manager 1.0.15 is the release that matches ipywidgets 8.1.x; myst-nb's
# default (1.0.6, from a CDN) cannot render its widget state.
PACKAGES=(
  "@jupyter-widgets/html-manager@1.0.15"
  "requirejs@2.3.8"
  "mathjax@3.2.2"
)

command -v npm >/dev/null || { echo "vendor_js.sh: npm not found (install Node.js)" >&2; exit 1; }

# Reinstall only when the pinned list changed.
want=$(printf '%s\n' "${PACKAGES[@]}")
if [ ! -f "$CACHE/.packages" ] || [ "$(cat "$CACHE/.packages")" != "$want" ]; then
  rm -rf "$CACHE"
  mkdir -p "$CACHE"
  echo "vendor_js.sh: npm install ${PACKAGES[*]}"
  npm install --no-save --no-audit --no-fund --ignore-scripts --prefix "$CACHE" "${PACKAGES[@]}" \
    || { echo "vendor_js.sh: npm install failed (network? registry?)" >&2; exit 1; }
  printf '%s\n' "$want" > "$CACHE/.packages"
fi
NM=$CACHE/node_modules

need() { [ -e "$1" ] || { echo "vendor_js.sh: missing $1 (npm install incomplete?)" >&2; exit 1; }; }

rm -rf "$DEST"
mkdir -p "$DEST/mathjax/output/chtml/fonts" "$DEST/mathjax/input/tex" "$DEST/requirejs" "$DEST/ipywidgets"

# MathJax: the combined TeX -> CommonHTML component, its fonts, and the TeX
# extensions it loads on demand (\boldsymbol, \color, ...).
MJ=$NM/mathjax/es5
need "$MJ/tex-chtml.js"
cp "$MJ/tex-chtml.js" "$DEST/mathjax/"
cp -r "$MJ/output/chtml/fonts/woff-v2" "$DEST/mathjax/output/chtml/fonts/"
cp -r "$MJ/input/tex/extensions" "$DEST/mathjax/input/tex/"

need "$NM/requirejs/require.js"
cp "$NM/requirejs/require.js" "$DEST/requirejs/"

# embed-amd.js plus the Font Awesome font it references (the .woff2 files).
HM=$NM/@jupyter-widgets/html-manager/dist
need "$HM/embed-amd.js"
cp "$HM/embed-amd.js" "$DEST/ipywidgets/"
cp "$HM"/*.woff2 "$DEST/ipywidgets/"

# The committed glue that makes the widgets work offline under sphinx-book-theme.
need "$ROOT/book/widgets-setup.js"
cp "$ROOT/book/widgets-setup.js" "$DEST/ipywidgets/"

echo "vendor_js.sh: wrote $(du -sh "$DEST" | cut -f1) into $DEST"
