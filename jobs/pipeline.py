"""Ray job entry point: the whole pipeline.

    ray job submit --working-dir . -- python -m jobs.pipeline --config configs/tiny.yaml output_dir=/shared/runs

Inside a Ray job, `ray.init()` joins the job's cluster; the run directory should be on storage all nodes share.
"""

import argparse
import sys

from selfexplore.cli import main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--verbose", action="store_true", help="show what Ray, DeepSpeed and transformers print")
    args, overrides = parser.parse_known_args()
    sys.exit(main(["run", args.config, *overrides] + ["--verbose"] * args.verbose))
