#!/usr/bin/env bash
# A Ray cluster of N nodes on this one machine: a head and N-1 worker nodes, each its own raylet with its own
# CPUs. For trying multi-node behaviour (engine actors and training workers spread over nodes, job submission)
# without a cluster; the run directory is a local path every node sees.
#
#   cluster/local.sh up [NODES=2] [CPUS_PER_NODE=1]   start it; prints the address to submit to
#   cluster/local.sh address                          print that address again
#   cluster/local.sh down                             stop every process `up` started, and nothing else
#
#   selfexplore submit configs/tiny.yaml engine.num_engines=2 --address "$(cluster/local.sh address)"
#
# State (pids, logs, Ray's temp dir) lives in $SELFEXPLORE_CLUSTER_DIR (default /tmp/selfexplore-cluster), so two
# clusters can run side by side with two state directories.
set -euo pipefail
RAY=${RAY:-ray}
PYTHON=${PYTHON:-python3}
STATE=${SELFEXPLORE_CLUSTER_DIR:-/tmp/selfexplore-cluster}

# N distinct free ports, chosen at once: chosen one call at a time they can repeat (a port is free again when the
# call that found it exits, and the node meant to take it may not have started yet), and a node given one port for
# two of its components does not start.
free_ports() {
  "$PYTHON" -c '
import socket, sys
sockets = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in sockets:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in sockets))' "$1"
}

# `ray start --block` runs in the foreground and stops its node's processes on SIGTERM: start each in its own
# session, so `down` can stop exactly those process groups.
# Every node's agents get their own ports: with Ray's defaults the nodes of one machine would contend for the same
# ones, and a node whose agent lost leaves the cluster without a job agent ("No available agent to submit job").
start_node() {  # LOG AGENT_PORT AGENT_GRPC_PORT RUNTIME_ENV_AGENT_PORT METRICS_PORT [ray start options]
  local log=$1; shift
  setsid "$RAY" start --block --disable-usage-stats --dashboard-agent-listen-port="$1" \
    --dashboard-agent-grpc-port="$2" --runtime-env-agent-port="$3" --metrics-export-port="$4" "${@:5}" >"$log" 2>&1 &
  echo $! >>"$STATE/pids"
}

alive_nodes() {
  "$PYTHON" - "$1" <<'EOF' 2>/dev/null || echo 0
import sys, ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
print(sum(node["Alive"] for node in ray.nodes()))
EOF
}

up() {
  local nodes=${1:-2} cpus=${2:-1}
  if [[ -s "$STATE/pids" ]]; then
    echo "local.sh: a cluster is already up (state in $STATE); stop it with: $0 down" >&2
    exit 2
  fi
  mkdir -p "$STATE"
  : >"$STATE/pids"
  local free ports gcs_port dashboard_port
  free=$(free_ports $((2 + 4 * nodes)))  # the head's two, then four per node
  read -r -a ports <<<"$free"
  gcs_port=${ports[0]}
  dashboard_port=${ports[1]}
  # One thread per worker process (2-core machines), and no token auth on a loopback-only cluster.
  export OMP_NUM_THREADS=1 RAY_AUTH_MODE=disabled
  start_node "$STATE/node-1.log" "${ports[@]:2:4}" --head --port="$gcs_port" --num-cpus="$cpus" --dashboard-host=127.0.0.1 \
    --dashboard-port="$dashboard_port" --include-dashboard=true --temp-dir="$STATE/ray"
  for i in $(seq 2 "$nodes"); do
    start_node "$STATE/node-$i.log" "${ports[@]:$((4 * i - 2)):4}" --address="127.0.0.1:$gcs_port" --num-cpus="$cpus"
  done
  local deadline=$((SECONDS + 120))
  until [[ $(alive_nodes "127.0.0.1:$gcs_port") -ge $nodes ]]; do
    if ! kill -0 "$(head -n 1 "$STATE/pids")" 2>/dev/null; then  # else each check waits on a GCS that is not there
      echo "local.sh: the head node exited; the end of its log:" >&2
      tail -n 5 "$STATE/node-1.log" >&2
      down
      exit 1
    fi
    if ((SECONDS > deadline)); then
      echo "local.sh: the cluster did not come up in 120 s; the end of the nodes' logs:" >&2
      tail -n 5 "$STATE"/node-*.log >&2
      down
      exit 1
    fi
    sleep 1
  done
  echo "http://127.0.0.1:$dashboard_port" >"$STATE/address"
  echo "Ray cluster up: $nodes nodes x $cpus CPUs; submit to $(cat "$STATE/address") (logs: $STATE)" >&2
  cat "$STATE/address"
}

down() {
  [[ -s "$STATE/pids" ]] || { echo "local.sh: no cluster is up (no $STATE/pids)" >&2; return 0; }
  local pids
  pids=$(tac "$STATE/pids")  # worker nodes first, the head last
  # SIGTERM to each `ray start --block` alone: it stops its node's processes (signalling them all at once makes
  # Ray's own shutdown hang); whatever is left after 30 s is killed.
  for pid in $pids; do kill -TERM "$pid" 2>/dev/null || true; done
  local deadline=$((SECONDS + 30))
  for pid in $pids; do
    while kill -0 -- "-$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.5; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
  rm -rf "$STATE"
  echo "Ray cluster down" >&2
}

case "${1:-}" in
  up) shift; up "$@" ;;
  down) down ;;
  address) cat "$STATE/address" ;;
  *) echo "usage: $0 up [NODES] [CPUS_PER_NODE] | address | down" >&2; exit 2 ;;
esac
