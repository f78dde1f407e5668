"""Ray job entry point: one stage.

    ray job submit --working-dir . -- python -m jobs.stage explore --config configs/gsm8k-deepseek-math-7b.yaml
"""

import argparse
import sys

from selfexplore.cli import main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage")
    parser.add_argument("--config", required=True)
    parser.add_argument("--verbose", action="store_true", help="show what Ray, DeepSpeed and transformers print")
    args, overrides = parser.parse_known_args()
    sys.exit(main(["stage", args.stage, args.config, *overrides] + ["--verbose"] * args.verbose))
