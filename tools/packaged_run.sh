#!/usr/bin/env bash
# The series run from the package alone, as on Colab or a classroom machine (make test-packaged):
#   1. build sdlearn's wheel (offline: --no-build-isolation, with the setuptools of .venv);
#   2. install it, not editable, into a fresh virtualenv with the `colab` extra and ipywidgets 7.7
#      (Colab's version), torch first and pinned, everything else constrained by constraints.txt;
#   3. copy only notebooks/*.ipynb into an empty folder outside the checkout and run every one under
#      nbval there, with the sanitizers and the offline guard of `make test`.
# Prints the wheel's size, the install time and the run time (build/packaged/measurements.txt);
# with --record it appends them to benchmarks/RESULTS.md. Fails loudly.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PY:-python3}                        # makes the fresh virtualenv
BUILD_PY=${BUILD_PY:-$ROOT/.venv/bin/python}   # builds the wheel (needs setuptools)
WORK=$ROOT/build/packaged
RECORD=0
[[ "${1:-}" == "--record" ]] && RECORD=1

now() { date +%s.%N; }
pip_q() { "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }; }  # pip, minus index noise
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }'; }

rm -rf "$WORK"
mkdir -p "$WORK/dist"

echo "== 1. wheel"
pip_q "$BUILD_PY" -m pip wheel -q --no-deps --no-build-isolation -w "$WORK/dist" "$ROOT"
WHEEL=$(ls "$WORK"/dist/sdlearn-*.whl)
WHEEL_BYTES=$(stat -c %s "$WHEEL")
"$BUILD_PY" - "$WHEEL" <<'EOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
need = ["sdlearn/assets/figures/03_photo_f.json", "sdlearn/assets/figures/03_photo_f.png",
        "sdlearn/assets/figures/07_training_loss.png", "sdlearn/assets/tiny/model_index.json",
        "sdlearn/assets/bpe_simple_vocab_16e6.txt.gz"]
missing = [n for n in need if n not in names]
assert not missing, f"the wheel lacks package data: {missing}"
assert not any(n.startswith(("tests/", "notebooks/", "images/")) for n in names), "the wheel holds repository files"
print(f"{sys.argv[1].rsplit('/', 1)[-1]}: {len(names)} files")
EOF

echo "== 2. fresh virtualenv: torch==2.13.0, then the wheel [colab] + ipywidgets 7.7 + nbval"
T_INSTALL=$(now)
"$PY" -m venv "$WORK/venv"
V=$WORK/venv/bin
# constraints.txt pins ipywidgets 8 and its two companions; this run asks for Colab's 7.7 instead
grep -v -i -E '^(ipywidgets|widgetsnbextension|jupyterlab[-_]widgets)==' constraints.txt > "$WORK/constraints.txt"
pip_q "$V/pip" install -q torch==2.13.0
pip_q "$V/pip" install -q -c "$WORK/constraints.txt" "$WHEEL[colab]" "ipywidgets==7.7.*" pytest nbval ipykernel
INSTALL_S=$(since "$T_INSTALL")
echo "installed in ${INSTALL_S} s"
"$V/pip" check
WIDGETS=$("$V/python" -c "import ipywidgets; print(ipywidgets.__version__)")
[[ "$WIDGETS" == 7.7.* ]] || { echo "expected ipywidgets 7.7, got $WIDGETS" >&2; exit 1; }

echo "== 3. the notebooks alone, in an empty folder, under nbval (offline)"
RUN=$(mktemp -d "${TMPDIR:-/tmp}/sdlearn-packaged.XXXXXX")
trap 'rm -rf "$RUN"' EXIT
cp "$ROOT"/notebooks/[0-9]*.ipynb "$RUN"/
cd "$RUN"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONPATH=$ROOT/tests/offline
unset SDLEARN_FIGURES_DIR
"$V/python" - <<'EOF'
import sdlearn
assert "site-packages" in sdlearn.__file__, f"sdlearn imported from {sdlearn.__file__}, not from the wheel"
print("sdlearn", sdlearn.__version__, "from", sdlearn.__file__)
EOF
BEFORE=$(ls -A | sort)
T_RUN=$(now)
# (the =-form keeps pytest from taking the .cfg's folder for a test path and the checkout for its rootdir)
"$V/python" -m pytest -q -p no:cacheprovider --rootdir="$RUN" --nbval --nbval-current-env \
    --nbval-sanitize-with="$ROOT/tests/nbval_sanitize.cfg" --durations=5 .
RUN_S=$(since "$T_RUN")
LEFT=$(comm -13 <(echo "$BEFORE") <(ls -A | sort))
[[ -z "$LEFT" ]] || echo "note: the notebooks left files in their folder: $LEFT"
cd "$ROOT"

N=$(ls notebooks/[0-9]*.ipynb | wc -l)
SUMMARY="wheel $(basename "$WHEEL") $(awk -v b="$WHEEL_BYTES" 'BEGIN { printf "%.1f MB", b / 1e6 }'); fresh-venv install ${INSTALL_S} s (torch + wheel[colab] + ipywidgets $WIDGETS + nbval); packaged run of $N notebooks ${RUN_S} s"
echo "$SUMMARY" | tee "$WORK/measurements.txt"
if [[ $RECORD == 1 ]]; then
    cat >> benchmarks/RESULTS.md <<EOF

## Packaged run (tools/packaged_run.sh, make test-packaged), $(date +%F)

Machine: $(uname -m), $(nproc) cores, CPU only; $("$V/python" -c 'import sys, torch; print(f"Python {sys.version.split()[0]}, torch {torch.__version__}")').
The wheel built with \`pip wheel --no-deps --no-build-isolation\`, installed (not editable) into a fresh
virtualenv with the \`colab\` extra and ipywidgets $WIDGETS; only \`notebooks/*.ipynb\` copied into an empty
folder and run there under nbval, offline, with the sanitizers of \`make test\`.

| wheel size | fresh-venv install (torch, wheel[colab], ipywidgets 7.7, nbval) | packaged run ($N notebooks, nbval) |
|---|---|---|
| $(awk -v b="$WHEEL_BYTES" 'BEGIN { printf "%.1f MB", b / 1e6 }') | ${INSTALL_S} s | ${RUN_S} s |
EOF
    echo "appended to benchmarks/RESULTS.md"
fi
