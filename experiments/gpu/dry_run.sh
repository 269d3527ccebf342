#!/usr/bin/env bash
# Dry run of the device command on this CPU machine, as the bare offline device would run it.
#
#   bash experiments/gpu/dry_run.sh            # after: .venv/bin/python experiments/gpu/fetch_wheels.py
#   bash experiments/gpu/dry_run.sh --campaign # device_command_campaign.txt: a detached job, two calls
#
# 1. "The image": a fresh Python 3.12 venv holding only what the device has preinstalled that the
#    check touches (jax/jaxlib 0.11.2 and numpy 2.5.2 as on the device, CPU build; flax, optax,
#    chex, h5py, msgpack, tqdm, matplotlib, tensorboard, pytest; and the packages
#    .whl/MANIFEST.json lists as already on the device), installed from the index.
# 2. The device command (experiments/gpu/device_command.txt), word for word, run with that venv's
#    python3 first on PATH, inside a network namespace with no network at all (unshare -n): the
#    offline wheel install, the import check, then `gpu_check.py --small`, stopped by a budget.
# 3. The same command again: it must continue where the first stopped and finish.
# Prints each step's wall-clock; exits non-zero if a step fails.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY312=${PY312:-$(ls -d "$HOME"/.pyenv/versions/3.12.*/bin/python3 | sort -V | tail -1)}
VENV=${DRY_VENV:-/tmp/mopo-dry-venv312}
WORK=${DRY_WORK:-/tmp/mopo-dry-work}
OUT_DIR=${DRY_OUT:-/tmp/mopo-dry-out}
FIRST_BUDGET=${FIRST_BUDGET:-170}
[ -f .whl/MANIFEST.json ] || { echo "no .whl/MANIFEST.json: run experiments/gpu/fetch_wheels.py first"; exit 1; }
t() { date +%s.%N; }
took() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f} s')" "$1" "$(t)"; }

s=$(t)
if [ ! -x "$VENV/bin/python3" ]; then "$PY312" -m venv "$VENV"; fi
preinstalled=$(python3 -c "import json; print(' '.join(json.load(open('.whl/MANIFEST.json'))['device_has']))")
"$VENV/bin/python3" -m pip install -q jax==0.11.2 jaxlib==0.11.2 numpy==2.5.2 flax optax chex h5py \
    msgpack tqdm matplotlib tensorboard pytest $preinstalled 2>&1 | { grep -v "^WARNING: Location" || true; }
echo "== image venv ($("$VENV/bin/python3" -V), $VENV) ready in $(took "$s"):"
"$VENV/bin/python3" -c "import sys; from importlib.metadata import version as v
print(' '.join(f'{n}=={v(n)}' for n in sys.argv[1:]))" jax jaxlib numpy flax optax chex h5py msgpack \
    tqdm matplotlib tensorboard pytest $preinstalled
for mod in gymnasium mujoco minari tyro; do  # the image must not have them: they come from .whl
    if "$VENV/bin/python3" -c "import $mod" 2>/dev/null; then echo "the image venv has $mod"; exit 1; fi
done

rm -rf /tmp/mopo-site "$WORK" "$OUT_DIR" "$WORK.job"
mkdir -p "$OUT_DIR"
if [ "${1:-}" = "--campaign" ]; then  # the detached campaign command: the first call returns while
    command=$(cat experiments/gpu/device_command_campaign.txt)  # the job runs, the second waits
    run() {
        env PATH="$VENV/bin:$PATH" OUT="$OUT_DIR" JOB="$WORK.job" WORK="$WORK" WAIT="$1" \
            EVAL_WORKERS=2 GPU_CHECK_ARGS="--small" unshare -n bash -c "$command"
    }
    FIRST_BUDGET=${FIRST_WAIT:-10}  # seconds the first call follows the job
else
    command=$(cat experiments/gpu/device_command.txt)
    run() {  # the device command, offline, with the image venv's python3
        env PATH="$VENV/bin:$PATH" OUT="$OUT_DIR" BUDGET="$1" GPU_CHECK_ARGS="--small --work $WORK" \
            unshare -n bash -c "$command"
    }
fi
for budget in "$FIRST_BUDGET" 600; do
    s=$(t)
    set +e
    run "$budget"
    rc=$?
    set -e
    echo "== device command, --small, budget (--campaign: wait) $budget s: exit $rc in $(took "$s")"
    [ "$rc" -eq 0 ] || [ "$rc" -eq 3 ] || exit "$rc"
done
[ "$rc" -eq 0 ] || { echo "the second command did not finish the check"; exit 1; }
echo "== files in \$OUT: $(ls "$OUT_DIR" | tr '\n' ' ')"
python3 -c "
import json, sys
s = json.load(open(sys.argv[1]))
print('parts:', {k: (v['status'], v.get('seconds_per_command')) for k, v in s['parts'].items()})
print('runs:', s.get('runs'))" "$(ls "$OUT_DIR"/gpu-check-cpu*.json | grep -v bench)"
