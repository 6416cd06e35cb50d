#!/usr/bin/env bash
# Every test of the project, in four steps; called by `make test` after the set-up (.venv,
# MathJax, chromium). Fails on the first step that fails.
#
#   1. unit tests     pytest tests/ (all but tests/browser), against the working tree
#   2. notebooks      nbval (--nbval-lax) on every notebooks/*.ipynb, executed the way Colab
#                     meets them: the library installed from a freshly built wheel (not the
#                     editable install), each notebook copied alone to a directory outside the
#                     repository, so a notebook that reads a repository-relative path or imports
#                     a module the wheel does not ship fails here
#   3. strict build   jupyter-book build . -W -n --keep-going on a clean _build/html (the
#                     execution cache in _build/.jupyter_cache is kept); any warning fails
#   4. browser check  pytest tests/browser: every built page in headless Chromium
#
# For work on one part, STEPS selects steps (default: all four), e.g.
#   STEPS="build browser" make test
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${VENV:-.venv}"
[[ "$VENV" == /* ]] || VENV="$ROOT/$VENV"
PY="$VENV/bin/python"
[[ -x "$PY" ]] || { echo "run_tests.sh: no $PY; run 'make test' (it creates the environment)" >&2; exit 1; }
unset PYTHONPATH

TMP="$(mktemp -d "${TMPDIR:-/tmp}/ddpm-to-ddim-test.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

declare -a TIMINGS=()
STEP_NAME="" STEP_START=0
shopt -s nullglob globstar
STEPS="${STEPS:-unit notebooks build browser}"
wanted() { [[ " $STEPS " == *" $1 "* ]]; }
begin() { STEP_NAME="$1"; STEP_START=$SECONDS; printf '\n=== %s ===\n' "$1"; }
end() { TIMINGS+=("$(printf '%-16s %5d s' "$STEP_NAME" $((SECONDS - STEP_START)))"); }
die() { echo "FAILED ($STEP_NAME): $*" >&2; exit 1; }

# Run pytest; exit code 5 ("no tests collected") is accepted only when $1 is "allow-empty".
run_pytest() {
  local allow_empty="$1"; shift
  local rc=0
  "$@" || rc=$?
  if [[ $rc -eq 5 && "$allow_empty" == allow-empty ]]; then
    echo "(no tests collected: accepted, there is nothing to test yet)"
    return 0
  fi
  [[ $rc -eq 0 ]] || die "pytest exited with code $rc"
}

# ---------------------------------------------------------------------------------------------
if wanted unit; then
begin "unit tests"
allow=allow-empty  # exit code 5 is accepted only while there is no unit-test file at all
for f in tests/**/test_*.py tests/**/*_test.py; do
  [[ "$f" == tests/browser/* ]] || allow=require
done
run_pytest "$allow" "$PY" -m pytest tests --ignore=tests/browser -p no:cacheprovider -q
end
fi

# ---------------------------------------------------------------------------------------------
if wanted notebooks; then
begin "notebooks"
notebooks=(notebooks/*.ipynb)
if [[ ${#notebooks[@]} -eq 0 ]]; then
  echo "(no notebooks yet: nbval has nothing to run)"
else
  echo "Building the ddpm_lib wheel"
  "$PY" -m pip wheel --quiet --no-deps --wheel-dir "$TMP/dist" "$ROOT"
  wheel=("$TMP"/dist/ddpm_lib-*.whl)
  [[ ${#wheel[@]} -eq 1 ]] || die "expected one ddpm_lib wheel, got: ${wheel[*]:-none}"

  # A throw-away environment: its own site-packages gets the wheel; the heavy dependencies
  # (torch, jupyter, nbval, ...) are borrowed from .venv through a plain path in a .pth file,
  # which does not run .venv's own .pth files, so the editable install of ddpm_lib stays invisible.
  "$PY" -m venv "$TMP/venv"
  TPY="$TMP/venv/bin/python"
  purelib() { "$1" -c 'import sysconfig; print(sysconfig.get_path("purelib"))'; }
  VENV_SITE="$(purelib "$PY")"
  TMP_SITE="$(purelib "$TPY")"
  echo "$VENV_SITE" > "$TMP_SITE/_ddpm_to_ddim_test_deps.pth"
  # --ignore-installed: .venv's editable ddpm_lib is visible to pip through the .pth path, and must
  # neither satisfy the requirement nor be uninstalled.
  "$TPY" -m pip install --quiet --no-index --no-deps --ignore-installed "${wheel[0]}"

  mkdir -p "$TMP/nb"
  cp "${notebooks[@]}" "$TMP/nb/"        # each notebook alone, as Colab opens it
  printf '[pytest]\n' > "$TMP/nb/pytest.ini"  # keep pytest from reading any configuration above
  (
    cd "$TMP/nb"
    export IPYTHONDIR="$TMP/ipython" JUPYTER_CONFIG_DIR="$TMP/jupyter-config"
    "$TPY" - "$TMP_SITE" <<'PY'
# The notebooks must see the wheel, and every dependency the wheel declares (with [all]).
import sys
from importlib.metadata import PathDistribution, version
from pathlib import Path
from packaging.requirements import Requirement
import ddpm_lib
site = sys.argv[1]
where = ddpm_lib.__file__
assert where.startswith(site), f"ddpm_lib imported from {where}, not from the wheel in {site}"
dist = PathDistribution(next(Path(site).glob("ddpm_lib-*.dist-info")))
for line in dist.requires or []:
    req = Requirement(line)
    if req.marker is None or req.marker.evaluate({"extra": "all"}):
        have = version(req.name)
        assert req.specifier.contains(have, prereleases=True), f"ddpm_lib needs {req}, found {have}"
print(f"ddpm_lib {dist.version} from the wheel ({where}); dependencies of ddpm_lib[all] satisfied")
PY
    # Two shards in parallel, one per CPU core (each notebook runs torch on one thread): notebooks
    # 1, 3, 5, ... in one pytest process and 2, 4, 6, ... in the other, each with its own kernels.
    shard_rc=()
    pids=()
    for shard in 0 1; do
      mine=()
      i=0
      for nb in ./*.ipynb; do
        (( i % 2 == shard )) && mine+=("$nb")
        i=$((i + 1))
      done
      [[ ${#mine[@]} -gt 0 ]] || continue
      "$TPY" -m pytest --nbval-lax --nbval-current-env --nbval-cell-timeout=600 \
        -p no:cacheprovider -q "${mine[@]}" > "$TMP/nbval-$shard.log" 2>&1 &
      pids+=("$shard:$!")
    done
    failed=0
    for entry in "${pids[@]}"; do
      shard="${entry%%:*}"
      rc=0
      wait "${entry#*:}" || rc=$?
      echo "--- nbval shard $shard (exit $rc) ---"
      cat "$TMP/nbval-$shard.log"
      [[ $rc -eq 0 ]] || failed=1
    done
    [[ $failed -eq 0 ]] || die "nbval failed (see the shard logs above)"
  )
fi
end
fi

# ---------------------------------------------------------------------------------------------
if wanted build; then
begin "strict build"
rm -rf _build/html _build/.doctrees _build/screenshots
log="$TMP/build.log"
rc=0
"$VENV/bin/jupyter-book" build . -W -n --keep-going 2>&1 | tee "$log" || rc=$?
# Belt and braces: jupyter-book exits 1 on warnings with -W --keep-going; the log is checked too,
# for Sphinx's "WARNING:"/"ERROR:" lines (not for the kernels' own "[IPKernelApp] WARNING |" logs).
sphinx_problems='(^|: )(WARNING|ERROR|SEVERE|CRITICAL): '
if sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -E -q "$sphinx_problems"; then
  sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -E "$sphinx_problems" | head -20 >&2
  die "the build printed warnings or errors"
fi
[[ $rc -eq 0 ]] || die "jupyter-book exited with code $rc"
[[ -f _build/html/index.html ]] || die "no _build/html/index.html"
end
fi

# ---------------------------------------------------------------------------------------------
if wanted browser; then
begin "browser check"
export BOOK_BROWSER_REQUIRED=1  # here a missing build or browser is a failure, not a skip
run_pytest require "$PY" -m pytest tests/browser -p no:cacheprovider -q
echo "Screenshots:"; ls -1 _build/screenshots
end
fi

printf '\n=== timings ===\n'
printf '%s\n' "${TIMINGS[@]}"
if [[ "$STEPS" == "unit notebooks build browser" ]]; then
  echo "All tests passed."
else
  echo "Steps run: $STEPS (not the whole suite)"
fi
