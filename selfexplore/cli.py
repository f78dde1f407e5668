"""`selfexplore`: the command line.

    selfexplore run CONFIG [key=value ...]            the whole pipeline, then the accuracy table
    selfexplore stage NAME CONFIG [key=value ...]     one stage (its inputs must be finished)
    selfexplore status RUN_DIR [key=value ...]        each stage done / stale / partial / not started
    selfexplore config CONFIG [key=value ...]         print the resolved config
    selfexplore eval --run RUN_DIR                    re-print a finished run's accuracy table
    selfexplore eval --endpoint URL --task T --data P evaluate any OpenAI-compatible server
    selfexplore serve MODEL_DIR_OR_RUN_DIR            serve a model over HTTP with Ray Serve
    selfexplore submit CONFIG [key=value ...]         run the pipeline as a Ray job on a cluster

Errors the user can fix (a bad config key, a malformed data row, a missing model) are one line on stderr and
exit code 2; nothing is marked done. `run`, `stage` and `submit` show our own lines and progress bars and send
what Ray, DeepSpeed, transformers and vLLM print to the run's `logs/`; `--verbose` shows everything.
"""

from __future__ import annotations

import argparse
import sys

from selfexplore.config import dump_yaml, load_config
from selfexplore.errors import USER_ERRORS, ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except USER_ERRORS as e:
        print(f"selfexplore: error: {e}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    from serving.cli import register as register_serve

    parser = argparse.ArgumentParser(prog="selfexplore", description="Self-Explore on Ray: train, explore, evaluate, serve.")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the whole pipeline (skips finished stages)")
    add_config_args(run)
    add_verbose_arg(run)
    run.set_defaults(func=cmd_run)

    stage = commands.add_parser("stage", help="run one stage")
    stage.add_argument("name", choices=list(stage_names()))
    add_config_args(stage)
    add_verbose_arg(stage)
    stage.set_defaults(func=cmd_stage)

    status = commands.add_parser("status", help="where a run stands: each stage done, stale, partial or not started")
    status.add_argument("run_dir", help="a run directory, e.g. runs/tiny")
    status.add_argument("overrides", nargs="*", help="dotted overrides of the run's config: which stages would they redo?")
    status.set_defaults(func=cmd_status)

    config = commands.add_parser("config", help="print the resolved config")
    add_config_args(config)
    config.set_defaults(func=lambda a: print(dump_yaml(load_config(a.config, a.overrides)), end=""))

    evaluate = commands.add_parser("eval", help="accuracy of a finished run, or of any OpenAI-compatible endpoint")
    evaluate.add_argument("--run", help="a run directory: print its accuracy table")
    evaluate.add_argument("--endpoint", help="base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:8000")
    evaluate.add_argument("--task", choices=["arith", "gsm8k", "math"], help="task of the test set (with --endpoint)")
    evaluate.add_argument("--data", help="test set: a JSON Lines file or a run config YAML (with --endpoint)")
    evaluate.add_argument("--model", help="model name to send (default: the server's first)")
    evaluate.add_argument("--out", default="eval-http", help="directory for per-problem results and summary.json")
    evaluate.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    evaluate.add_argument("--max-tokens", type=int, default=512, help="generation budget; match the run's eval.max_tokens (the tiny model: 80)")
    evaluate.add_argument("--api-key", help="bearer token (or SELFEXPLORE_API_KEY)")
    evaluate.add_argument("--limit", type=int, default=0, help="evaluate only the first N problems")
    evaluate.set_defaults(func=cmd_eval)

    register_serve(commands)

    submit = commands.add_parser("submit", help="run the pipeline as a Ray job and follow its logs")
    add_config_args(submit)
    submit.add_argument("--address", default="http://127.0.0.1:8265", help="Ray dashboard address of the cluster")
    submit.add_argument("--no-wait", action="store_true", help="submit and return the job id")
    add_verbose_arg(submit)
    submit.set_defaults(func=cmd_submit)
    return parser


def stage_names():
    from selfexplore.run_dir import STAGES

    return STAGES.keys()


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="run config YAML, e.g. configs/tiny.yaml")
    parser.add_argument("overrides", nargs="*", help="dotted overrides: sample.n=8 dpo.beta=0.05")


def add_verbose_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verbose", action="store_true", help="show what Ray, DeepSpeed, transformers and vLLM print (else in the run's logs/)")


def cmd_run(args) -> int:
    from selfexplore.pipeline import run_pipeline, session

    cfg = load_config(args.config, args.overrides)
    with session(cfg, args.verbose):
        run_pipeline(cfg)
    return 0


def cmd_stage(args) -> int:
    from selfexplore.pipeline import run_stage, session, start_run

    cfg = load_config(args.config, args.overrides)
    with session(cfg, args.verbose):
        start_run(cfg)
        run_stage(cfg, args.name)
    return 0


def cmd_status(args) -> int:
    from selfexplore.run_dir import RunDir
    from selfexplore.status import format_status

    print(format_status(*RunDir.open(args.run_dir, args.overrides)))
    return 0


def cmd_eval(args) -> int:
    if args.run:
        from selfexplore.report import write_report
        from selfexplore.run_dir import RunDir

        print(write_report(*RunDir.open(args.run)))
        return 0
    if not (args.endpoint and args.task and args.data):
        raise ConfigError("eval needs --run RUN_DIR, or --endpoint URL --task TASK --data PATH")
    from selfexplore.http_eval import evaluate_endpoint

    summary = evaluate_endpoint(
        args.endpoint,
        args.task,
        args.data,
        args.out,
        model=args.model,
        concurrency=args.concurrency,
        max_tokens=args.max_tokens,
        api_key=args.api_key,
        limit=args.limit,
    )
    print(summary)
    return 0


def cmd_submit(args) -> int:
    from selfexplore.submit import submit_pipeline

    cfg = load_config(args.config, args.overrides)  # fail here, not on the cluster, on a bad config
    return submit_pipeline(args.config, args.overrides, cfg, args.address, wait=not args.no_wait, verbose=args.verbose)


if __name__ == "__main__":
    sys.exit(main())
