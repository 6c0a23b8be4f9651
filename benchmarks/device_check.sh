#!/usr/bin/env bash
# The one prepared run for a lent GPU/TPU machine (README, "Benchmarks").
#
#   bash benchmarks/device_check.sh [OUT]
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
# SKIP_PROJECTION=1 / SKIP_DEMO=1 leave parts 2 / 3 out; *_TIMEOUT set each limit (s).
# Where the machine has no librosa/soundfile, wheels in ./.whl are installed
# first (see the device tool's README); nothing else is fetched.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-./device_out}}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
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

if [ -z "${SKIP_PROJECTION:-}" ]; then
  echo "== paper projection (float32, bfloat16)"
  t0=$SECONDS
  timeout "${PROJECTION_TIMEOUT:-270}" python3 -m benchmarks.paper_projection \
    --compute_dtypes=float32,bfloat16 --steps="${PROJECTION_STEPS:-1000}" \
    2>&1 | tee "$out/projection.jsonl"
  echo "projection: rc ${PIPESTATUS[0]}, $((SECONDS - t0)) s"
fi

if [ -z "${SKIP_DEMO:-}" ]; then
  echo "== demo (the README's main job)"
  rm -rf /tmp/device_demo
  t0=$SECONDS
  timeout "${DEMO_TIMEOUT:-180}" python3 -m experiments.toycar --loss=all --preset=demo \
    --workdir=/tmp/device_demo 2>&1 | tee "$out/demo.log"
  echo "demo: rc ${PIPESTATUS[0]}, $((SECONDS - t0)) s"
  cp /tmp/device_demo/results.json "$out/demo_results.json" 2>/dev/null || true
fi

if compgen -G ".ra/dev_data/*/train/*.flac" >/dev/null; then
  echo "== the paper's preset on the real set in .ra (losses: ${PAPER_LOSSES:-all})"
  rm -rf /tmp/ra /tmp/device_paper
  python3 -m benchmarks.pack_realaudio unpack --root=.ra --out=/tmp/ra || exit 1
  machine=$(basename "$(dirname "$(compgen -G '/tmp/ra/dev_data/*/train' | head -1)")")
  t0=$SECONDS
  timeout "${PAPER_TIMEOUT:-470}" python3 -m experiments.toycar --loss="${PAPER_LOSSES:-all}" \
    --preset=paper --steps_per_call=50 --data_dir="/tmp/ra/dev_data/$machine" \
    --something_else_dir=/tmp/ra/something_else --rare_clips=/tmp/ra/metadata.csv \
    --workdir=/tmp/device_paper 2>&1 | tee "$out/paper_real.log"
  echo "paper preset: rc ${PIPESTATUS[0]}, $((SECONDS - t0)) s"
  cp /tmp/device_paper/results.json "$out/paper_real_results.json" 2>/dev/null || true
fi
