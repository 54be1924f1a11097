"""`python -m lipsync_jax.evaluate`: the command-line entry point of
`lipsync_jax.evaluation.evaluate` (see there for the options)."""

import sys

from lipsync_jax.evaluation.evaluate import build_parser, main  # noqa: F401  (build_parser: tests/test_docs.py)

if __name__ == "__main__":
  sys.exit(main())
