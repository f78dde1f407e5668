#!/usr/bin/env bash
# Start a multi-node Ray cluster on this one machine: a head plus N worker nodes, each its own raylet.
# For trying cluster behaviour (actors spread over nodes, job submission) without a cluster.
#
#   cluster/local_multinode.sh start [N_WORKERS=2] [CPUS_PER_NODE=1]   prints the dashboard address
#   cluster/local_multinode.sh stop
#
# Then: selfexplore submit configs/tiny.yaml output_dir=$PWD/runs --address http://127.0.0.1:$DASHBOARD_PORT
set -euo pipefail
RAY=${RAY:-ray}
GCS_PORT=${GCS_PORT:-6390}
DASHBOARD_PORT=${DASHBOARD_PORT:-8266}

case "${1:-}" in
  start)
    workers=${2:-2}; cpus=${3:-1}
    export OMP_NUM_THREADS=1
    $RAY start --head --port="$GCS_PORT" --dashboard-port="$DASHBOARD_PORT" --num-cpus="$cpus" \
      --dashboard-host=127.0.0.1 --disable-usage-stats
    for i in $(seq 1 "$workers"); do
      $RAY start --address="127.0.0.1:$GCS_PORT" --num-cpus="$cpus" --disable-usage-stats
    done
    echo "Ray cluster: head + $workers workers; dashboard http://127.0.0.1:$DASHBOARD_PORT"
    ;;
  stop)
    $RAY stop --force
    ;;
  *)
    echo "usage: $0 start [N_WORKERS] [CPUS_PER_NODE] | stop" >&2; exit 2
    ;;
esac
