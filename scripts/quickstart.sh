#!/usr/bin/env bash
# Install TeckoChecker into .venv and run the bundled jobs in jobs.d against
# the local simulator of OpenAI and Keboola (127.0.0.1:18080), with the state
# database in .tc/. Running it again triggers nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=18080
PYTHON=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# Editable, like the test script, so both can share .venv.
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e .

# The quick-start job files name these variables; the simulator accepts
# exactly these values.
export TC_QUICKSTART_OPENAI_KEY=sk-sim-quickstart
export TC_QUICKSTART_KEBOOLA_TOKEN=sim-quickstart-token

# Tokens go to a loopback host only when the operator allows it. Allowing it
# in the state directory's settings file, rather than for this script alone,
# lets `tc status`, `tc diff` and `tc validate` work on jobs.d afterwards.
mkdir -p .tc
if [ ! -e .tc/settings.yaml ]; then
    printf '# Written by scripts/quickstart.sh for the simulator.\nallowed_hosts: [127.0.0.1]\n' \
        > .tc/settings.yaml
fi

work=$(mktemp -d)
port_file=$work/port
.venv/bin/python -m reconciler.simulator \
    --scenario examples/simulator/quickstart.yaml \
    --port "$PORT" --port-file "$port_file" >"$work/simulator.log" 2>&1 &
simulator=$!
trap 'kill "$simulator" 2>/dev/null || true; wait "$simulator" 2>/dev/null; rm -rf "$work"' EXIT

for _ in $(seq 50); do
    [ -s "$port_file" ] && break
    if ! kill -0 "$simulator" 2>/dev/null; then
        echo "The simulator did not start; is port $PORT in use?" >&2
        cat "$work/simulator.log" >&2
        exit 1
    fi
    sleep 0.2
done

# One cycle every two seconds until every job is done and its Keboola job
# has finished (the daemon, `tc watch`, does this on its own).
for round in $(seq 30); do
    echo "--- tc apply (round $round)"
    .venv/bin/tc apply jobs.d || true
    if .venv/bin/tc status -o json | .venv/bin/python -c '
import json, sys
jobs = json.load(sys.stdin)
done = all(
    j["status"] in ("completed", "completed_with_failures")
    and j["trigger"]["keboola_status"] in ("success", "warning", "error", "cancelled", "terminated")
    for j in jobs
)
sys.exit(0 if jobs and done else 1)
'; then
        break
    fi
    sleep 2
done

echo "--- tc status"
.venv/bin/tc status
echo "--- jobs.d/catalogue-embeddings.status.yaml"
cat jobs.d/catalogue-embeddings.status.yaml
