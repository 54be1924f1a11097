"""`python -m lipsync_jax.evaluate`: the command-line entry point of
`lipsync_jax.evaluation.evaluate` (see there for the options)."""

import sys

from lipsync_jax.evaluation.evaluate import main

if __name__ == "__main__":
  sys.exit(main())
