"""``python -m lmrc.llm serve``: the local TGI-compatible server."""

import sys

from lmrc.cli import main

sys.exit(main(["llm", *sys.argv[1:]]))
