#!/usr/bin/env bash
# The one prepared run for a lent GPU/TPU machine (README, "Benchmarks").
#
#   bash benchmarks/device_check.sh [OUT]      (-h, --help: this text)
#
# In order of priority, each part under its own time limit so that a slow part
# cannot starve the ones before it, everything written under OUT (default
# $OUT, else ./device_out):
#   1. versions.txt     python, jax, flax, optax, orbax, librosa; jax.devices()
#   2. projection.jsonl benchmarks.paper_projection, float32 and bfloat16, RE/SNP/BU
#                       (steps/s of the paper's FCN64-large step; projected minutes
#                       for the paper's 100,000 steps)
#   3. demo.log, demo_results.json
#                       the README's main job (--loss=all --preset=demo) end to end
#                       on the accelerator: AUCs, train seconds, table
#   4. paper_real.log, paper_real_results.json (only where ./.ra holds a pack of
#                       benchmarks.pack_realaudio): the paper's preset on the real set,
#                       losses $PAPER_LOSSES (default all; e.g. PAPER_LOSSES=bu)
# SKIP_PROJECTION=1 / SKIP_DEMO=1 leave parts 2 / 3 out.
# Time limits (s): PROJECTION_TIMEOUT (default 270), DEMO_TIMEOUT (180) and
# PAPER_TIMEOUT (470) per part, and TOTAL_TIMEOUT (540) for the whole script, as
# the device tool stops any one command at 600 s: a part gets at most what is left
# of TOTAL_TIMEOUT, and is skipped with a line saying so under 30 s. The limits
# are printed at the start. PAPER_LOSSES=bu SKIP_PROJECTION=1 SKIP_DEMO=1
# (TPU_NOTES.md) runs the paper preset alone, for up to 470 s.
# Where the machine has no librosa/soundfile, wheels in ./.whl are installed
# first (see the device tool's README); nothing else is fetched.
set -uo pipefail

usage() {  # the comment block above, without its '#'
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
}
fail() { echo "Error: benchmarks/device_check.sh: $*" >&2; exit 1; }
case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  -*) fail "unknown option $1 (the one argument is the output folder; see --help)" ;;
esac
[ $# -le 1 ] || fail "$# arguments; give at most one, the output folder (see --help)"
for name in TOTAL_TIMEOUT PROJECTION_TIMEOUT DEMO_TIMEOUT PAPER_TIMEOUT; do
  case "${!name:-0}" in
    *[!0-9]*) fail "$name=${!name}: not a whole number of seconds" ;;
  esac
done
total=${TOTAL_TIMEOUT:-540}

limit() {  # limit DEFAULT: the part's limit, at most what is left of TOTAL_TIMEOUT
  local left=$((total - SECONDS))
  echo $(($1 < left ? $1 : left))
}
enough() {  # enough NAME LIMIT: whether a part has time; says so if not
  [ "$2" -ge 30 ] && return 0
  echo "$1: skipped, $2 s left of TOTAL_TIMEOUT=$total"
  return 1
}
cd "$(dirname "$0")/.."
out="${1:-${OUT:-./device_out}}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
pack=$(compgen -G ".ra/dev_data/*/train/*.flac" | head -1)
echo "limits: projection ${PROJECTION_TIMEOUT:-270} s${SKIP_PROJECTION:+ (skipped)}," \
  "demo ${DEMO_TIMEOUT:-180} s${SKIP_DEMO:+ (skipped)}, paper preset ${PAPER_TIMEOUT:-470} s" \
  "$([ -n "$pack" ] && echo "(the pack in .ra)" || echo "(skipped: no pack in .ra)");" \
  "all within TOTAL_TIMEOUT=$total s, each part at most what is left of it"
if ! python3 -c "import librosa, soundfile" 2>/dev/null; then
  if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  else
    echo "librosa/soundfile missing and no wheels in .whl" >&2; exit 1
  fi
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

python3 - <<'EOF' 2>&1 | tee "$out/versions.txt"
import importlib.metadata as md, sys, jax
print("python", sys.version.split()[0])
for name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "librosa", "numpy"):
  try:
    print(name, md.version(name))
  except md.PackageNotFoundError:
    print(name, "missing")
print("devices", jax.devices())
import bu_jax.train, bu_jax.features  # the imports the runs below need
EOF
[ "${PIPESTATUS[0]}" = 0 ] || exit 1

t=$(limit "${PROJECTION_TIMEOUT:-270}")
if [ -z "${SKIP_PROJECTION:-}" ] && enough projection "$t"; then
  echo "== paper projection (float32, bfloat16; at most $t s)"
  t0=$SECONDS
  timeout "$t" python3 -m benchmarks.paper_projection \
    --compute_dtypes=float32,bfloat16 --steps="${PROJECTION_STEPS:-1000}" \
    2>&1 | tee "$out/projection.jsonl"
  echo "projection: rc ${PIPESTATUS[0]}, $((SECONDS - t0)) s"
fi

t=$(limit "${DEMO_TIMEOUT:-180}")
if [ -z "${SKIP_DEMO:-}" ] && enough demo "$t"; then
  echo "== demo (the README's main job; at most $t s)"
  rm -rf /tmp/device_demo
  t0=$SECONDS
  timeout "$t" python3 -m experiments.toycar --loss=all --preset=demo \
    --workdir=/tmp/device_demo 2>&1 | tee "$out/demo.log"
  echo "demo: rc ${PIPESTATUS[0]}, $((SECONDS - t0)) s"
  cp /tmp/device_demo/results.json "$out/demo_results.json" 2>/dev/null || true
fi

if [ -n "$pack" ] && enough "paper preset" "$(limit "${PAPER_TIMEOUT:-470}")"; then
  echo "== the paper's preset on the real set in .ra (losses: ${PAPER_LOSSES:-all})"
  rm -rf /tmp/ra /tmp/device_paper
  python3 -m benchmarks.pack_realaudio unpack --root=.ra --out=/tmp/ra || exit 1
  machine=$(basename "$(dirname "$(compgen -G '/tmp/ra/dev_data/*/train' | head -1)")")
  t=$(limit "${PAPER_TIMEOUT:-470}")
  echo "(at most $t s)"
  t0=$SECONDS
  timeout "$t" python3 -m experiments.toycar --loss="${PAPER_LOSSES:-all}" \
    --preset=paper --steps_per_call=50 --data_dir="/tmp/ra/dev_data/$machine" \
    --something_else_dir=/tmp/ra/something_else --rare_clips=/tmp/ra/metadata.csv \
    --workdir=/tmp/device_paper 2>&1 | tee "$out/paper_real.log"
  echo "paper preset: rc ${PIPESTATUS[0]}, $((SECONDS - t0)) s"
  cp /tmp/device_paper/results.json "$out/paper_real_results.json" 2>/dev/null || true
fi
