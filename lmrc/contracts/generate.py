"""Write (or check) the JSON Schema files under ``lmrc/contracts/json`` from the pydantic models.

python -m lmrc.contracts.generate          # rewrite the files
python -m lmrc.contracts.generate --check  # exit 1 if a checked-in file differs from its model
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lmrc.contracts.events import EVENT_MODELS, json_schema, schema_version_of

SCHEMA_DIR = Path(__file__).parent / "json"


def rendered_schemas() -> dict[Path, str]:
    return {
        SCHEMA_DIR / f"{name}.v{schema_version_of(model)}.json": json.dumps(
            json_schema(model), indent=2, sort_keys=True
        )
        + "\n"
        for name, model in EVENT_MODELS.items()
    }


def stale_files() -> list[Path]:
    return [
        path
        for path, text in rendered_schemas().items()
        if not path.exists() or path.read_text(encoding="utf-8") != text
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check, write nothing")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        for path in stale:
            print(f"stale: {path} (run python -m lmrc.contracts.generate)", file=sys.stderr)
        return 1 if stale else 0
    SCHEMA_DIR.mkdir(exist_ok=True)
    for path, text in rendered_schemas().items():
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
