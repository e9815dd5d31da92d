#!/usr/bin/env bash
# Federated fine-tuning on Flower's engine, all on this machine: one SuperLink and N SuperNodes on
# 127.0.0.1 (or one SuperLink running Flower's Ray simulation backend), the Flower App at the
# repository root (flower_app/), then every process this script started is stopped.
#
#   bash training_scripts/run_flower_local.sh [options] -- <main_sft.py flags>
#   bash training_scripts/run_flower_local.sh --dpo [options] -- <main_dpo.py flags>
#
#   --task NAME          the training task (default sft; its flags and defaults, e.g. dpo: main_dpo.py's)
#   --dpo                the same as --task dpo
#   --nodes N            SuperNodes to start (default: --num_clients from the flags)
#   --simulation         no SuperNodes: the SuperLink runs N virtual nodes with Ray
#   --client-cpus C      simulation: CPUs per virtual node (default 1)
#   --client-gpus G      simulation: GPUs per virtual node, e.g. 0.5 = two clients per GPU (default 0)
#   --node-data FILE     data-path of the next SuperNode (repeat per node): its own data
#                        instead of its shard of --dataset_name
#   --node-timeout S     seconds the server waits for the SuperNodes (default 300)
#   --round-timeout S    seconds the server waits for a round's replies (default 0: no limit)
#   --log-dir DIR        where the SuperLink / SuperNode / run logs go (default: a temp folder)
#
# Example (2 clients, 2 rounds, outputs in output/<run name>/ as with main_sft.py):
#   bash training_scripts/run_flower_local.sh -- --num_clients 2 --sample_clients 2 --num_rounds 2
#   bash training_scripts/run_flower_local.sh --dpo -- --num_clients 2 --sample_clients 2 --num_rounds 2
#
# Insecure (no TLS, no node authentication), so it listens on loopback only. For several
# machines see README.md, "Running across machines". Exits non-zero if the run failed.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif [ -x "$REPO/.venv/bin/python" ]; then PY="$REPO/.venv/bin/python"
else PY="$(command -v python3)"; fi
# The SuperLink and SuperNodes start flower-superexec / flwr-serverapp / flwr-clientapp by name.
export PATH="$(dirname "$PY"):$PATH"
# Offline and private by default: no usage telemetry, no update check (override by exporting them).
export FLWR_TELEMETRY_ENABLED="${FLWR_TELEMETRY_ENABLED:-0}"
export FLWR_DISABLE_UPDATE_CHECK="${FLWR_DISABLE_UPDATE_CHECK:-1}"

MODE=sft NODES="" SIMULATION=0 NODE_TIMEOUT=300 ROUND_TIMEOUT=0 LOG_DIR="" CLIENT_CPUS=1 CLIENT_GPUS=0
NODE_DATA=()
while [ $# -gt 0 ]; do
    case "$1" in
        --nodes) NODES="$2"; shift 2 ;;
        --task) MODE="$2"; shift 2 ;;
        --dpo) MODE=dpo; shift ;;
        --simulation) SIMULATION=1; shift ;;
        --client-cpus) CLIENT_CPUS="$2"; shift 2 ;;
        --client-gpus) CLIENT_GPUS="$2"; shift 2 ;;
        --node-data) NODE_DATA+=("$2"); shift 2 ;;
        --node-timeout) NODE_TIMEOUT="$2"; shift 2 ;;
        --round-timeout) ROUND_TIMEOUT="$2"; shift 2 ;;
        --log-dir) LOG_DIR="$2"; shift 2 ;;
        --) shift; break ;;
        -h|--help) sed -n '2,26p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "run_flower_local.sh: unknown option $1 (flags for the run go after --; see --help)" >&2; exit 2 ;;
    esac
done
FLAGS=("$@")

if [ -z "$NODES" ]; then  # one SuperNode per client: --num_clients, from the flags if given there
    for ((i = 0; i < ${#FLAGS[@]}; i++)); do
        case "${FLAGS[$i]}" in
            --num_clients|--num-clients) NODES="${FLAGS[$((i + 1))]:-}" ;;
            --num_clients=*|--num-clients=*) NODES="${FLAGS[$i]#*=}" ;;
        esac
    done
fi
if [ -z "$NODES" ]; then
    # ... else as the task's parser reads it (a --config YAML, or the task's default).
    NODES="$(PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$PY" -c 'import sys
from federated_learning.cli import parse_run
print(parse_run(sys.argv[1], sys.argv[2:]).fed.num_clients)' "$MODE" "${FLAGS[@]}" 2>/dev/null | tail -n 1)" \
        || { echo "run_flower_local.sh: the flags after -- do not parse for task $MODE (see: python main_sft.py --help)" >&2; exit 2; }
fi
case "$NODES" in ''|*[!0-9]*|0) echo "run_flower_local.sh: --nodes must be a positive integer, got '$NODES'" >&2; exit 2 ;; esac
if [ ${#NODE_DATA[@]} -gt 0 ] && [ ${#NODE_DATA[@]} -ne "$NODES" ]; then
    echo "run_flower_local.sh: give --node-data once per SuperNode ($NODES), got ${#NODE_DATA[@]}" >&2; exit 2
fi
if [ ${#NODE_DATA[@]} -gt 0 ] && [ "$SIMULATION" = 1 ]; then
    echo "run_flower_local.sh: --node-data needs real SuperNodes; drop --simulation" >&2; exit 2
fi

WORK="$(mktemp -d -t fedllm-flower.XXXXXX)"
LOG_DIR="${LOG_DIR:-$WORK/logs}"
mkdir -p "$LOG_DIR"
export FLWR_HOME="$WORK/flwr-home"  # this run's Flower config, state and unpacked app bundles
mkdir -p "$FLWR_HOME"

STARTED=()  # PIDs of the SuperLink and SuperNodes, in start order

descendants() {  # every live descendant of PID $1, deepest last
    local child
    for child in $(pgrep -P "$1" 2>/dev/null || true); do
        echo "$child"
        descendants "$child"
    done
}

cleanup() {
    local status=$? pids=() pid
    trap - EXIT INT TERM
    # Collect the whole trees first: the SuperLink's flower-superexec runs in its own session and
    # would be re-parented (and forgotten) once the SuperLink is gone.
    for pid in "${STARTED[@]}"; do
        pids+=("$pid")
        while read -r child; do [ -n "$child" ] && pids+=("$child"); done < <(descendants "$pid")
    done
    if [ ${#pids[@]} -gt 0 ]; then
        kill -TERM "${pids[@]}" 2>/dev/null || true
        for _ in $(seq 50); do
            local alive=0
            for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
            [ "$alive" = 0 ] && break
            sleep 0.2
        done
        for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    fi
    if [ "$status" -ne 0 ]; then
        echo "run_flower_local.sh: failed (exit $status); logs in $LOG_DIR" >&2
        for log in "$LOG_DIR"/superlink.log "$LOG_DIR"/supernode-*.log; do
            [ -f "$log" ] && { echo "----- last lines of $log" >&2; tail -n 25 "$log" >&2; }
        done
    fi
    # Keep the logs of a failed run when they live in the work folder; remove the rest.
    if [ "$LOG_DIR" = "$WORK/logs" ] && [ "$status" -ne 0 ]; then rm -rf "$FLWR_HOME"; else rm -rf "$WORK"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Free ports, all bound at once so that they differ: the SuperLink's, then one per SuperNode.
read -r -a PORTS <<< "$("$PY" -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()' "$((NODES + 1))")"
LINK="127.0.0.1:${PORTS[0]}"

link_args=(--insecure --host 127.0.0.1 --port "${PORTS[0]}" --disable-runtime-dependency-installation)
[ "$SIMULATION" = 1 ] && link_args+=(--simulation)
flower-superlink "${link_args[@]}" > "$LOG_DIR/superlink.log" 2>&1 &
STARTED+=($!)

for _ in $(seq 600); do  # up to 60 s
    kill -0 "${STARTED[0]}" 2>/dev/null || { echo "run_flower_local.sh: the SuperLink exited" >&2; exit 1; }
    (exec 3<>"/dev/tcp/127.0.0.1/${PORTS[0]}") 2>/dev/null && break
    sleep 0.1
done

FEDERATION=local-deploy
RUN_OPTIONS=()
if [ "$SIMULATION" = 1 ]; then
    FEDERATION=local-sim
    RUN_OPTIONS+=(--federation-config "num-supernodes=$NODES backend=\"ray\" client-resources-num-cpus=$CLIENT_CPUS client-resources-num-gpus=$CLIENT_GPUS")
else
    for ((i = 0; i < NODES; i++)); do
        node_config="partition-id=$i num-partitions=$NODES"
        [ ${#NODE_DATA[@]} -gt 0 ] && node_config+=" data-path=\"$(cd "$(dirname "${NODE_DATA[$i]}")" && pwd)/$(basename "${NODE_DATA[$i]}")\""
        flower-supernode --insecure --superlink "$LINK" --host 127.0.0.1 --port "${PORTS[$((i + 1))]}" \
            --node-config "$node_config" > "$LOG_DIR/supernode-$i.log" 2>&1 &
        STARTED+=($!)
    done
fi

cat > "$FLWR_HOME/config.toml" <<EOF
[superlink]
default = "$FEDERATION"

[superlink.$FEDERATION]
address = "$LINK"
insecure = true
EOF

# The run flags travel as one shell-quoted string (run config "args"), read by the task's own parser.
"$PY" -c '
import json, shlex, sys
print("mode = " + json.dumps(sys.argv[3]))
print("args = " + json.dumps(shlex.join(sys.argv[4:])))
print("node-timeout = " + sys.argv[1])
print("round-timeout = " + sys.argv[2])' "$NODE_TIMEOUT" "$ROUND_TIMEOUT" "$MODE" "${FLAGS[@]}" > "$WORK/run_config.toml"

if [ "$SIMULATION" = 1 ]; then nodes_text="$NODES virtual nodes (Ray)"; else nodes_text="$NODES SuperNodes on ports ${PORTS[*]:1}"; fi
echo "run_flower_local.sh: SuperLink $LINK, $nodes_text; logs in $LOG_DIR"
set +e
flwr run "$REPO" "$FEDERATION" --stream --run-config "$WORK/run_config.toml" "${RUN_OPTIONS[@]}" 2>&1 | tee "$LOG_DIR/run.log"
run_status=${PIPESTATUS[0]}
set -e
[ "$run_status" -eq 0 ] || { echo "run_flower_local.sh: flwr run exited $run_status" >&2; exit "$run_status"; }

# `flwr run --stream` returns 0 once the log stream ends, however the run ended: ask the SuperLink.
run_id="$(sed -n 's/.*Successfully started run \([0-9][0-9]*\).*/\1/p' "$LOG_DIR/run.log" | head -n 1)"
[ -n "$run_id" ] || { echo "run_flower_local.sh: the run did not start" >&2; exit 1; }
status_line="$(flwr ls "$FEDERATION" --run-id "$run_id" --format json 2>&1 | tee "$LOG_DIR/status.json")"
echo "$status_line" | "$PY" -c '
import json, sys
runs = json.load(sys.stdin).get("runs", [])
status = runs[0].get("status", "?") if runs else "?"
print(f"run_flower_local.sh: run {sys.argv[1]} status: {status}")
sys.exit(0 if status == "finished:completed" else 1)' "$run_id"
