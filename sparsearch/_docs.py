"""Generated parts of README.md: the CLI reference (from ``--help``) and the study-file reference (from the typed
sections' field descriptions). ``python -m sparsearch._docs`` rewrites them; a test fails when they drift."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

MARKERS = {
    "cli": ("<!-- cli-reference:start -->", "<!-- cli-reference:end -->"),
    "study": ("<!-- study-reference:start -->", "<!-- study-reference:end -->"),
}


def cli_reference() -> str:
    from sparsearch.cli import build_parser

    parser = build_parser()
    parts = ["```text", "$ sparsearch --help", parser.format_help().rstrip(), "```"]
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, p in sub.choices.items():  # type: ignore[union-attr]  # a subparsers action maps names to parsers
        parts += ["", f"#### `sparsearch {name}`", "", "```text", p.format_help().rstrip(), "```"]
    return "\n".join(parts)


def _default(field: Any) -> str:
    value = field.default
    if value is None:
        return "-"
    if isinstance(value, tuple):
        value = list(value) if value[0] != value[1] else value[0]
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(f'"{v}"' if isinstance(v, str) else str(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{}"
    return str(value)


def study_reference() -> str:
    from sparsearch.search.spec import DataSpec, ExecutionSpec, StorageSpec, StudySection, TrackingSpec
    from sparsearch.spaces import SpaceSpec, TrainSpec

    sections = [("study", StudySection), ("data", DataSpec), ("space", SpaceSpec), ("train", TrainSpec),
                ("execution", ExecutionSpec), ("tracking", TrackingSpec), ("storage", StorageSpec)]
    out: list[str] = []
    for name, model in sections:
        doc = (model.__doc__ or "").strip().splitlines()[0]
        out += [f"#### `[{name}]`", "", doc.split(":", 1)[-1].strip(), "", "| key | default | meaning |",
                "|---|---|---|"]
        for key, field in model.model_fields.items():  # type: ignore[attr-defined]  # a model class, not instance
            desc = (field.description or "").replace("|", "\\|").replace("\n", " ")
            out.append(f"| `{key}` | `{_default(field)}` | {desc} |")
        out.append("")
    return "\n".join(out).rstrip()


def render(readme: str) -> str:
    """Return the README text with its generated sections brought up to date."""
    for key, make in (("cli", cli_reference), ("study", study_reference)):
        start, end = MARKERS[key]
        pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
        if not pattern.search(readme):
            raise ValueError(f"README.md lacks the markers {start} ... {end}")
        readme = pattern.sub(lambda _m, s=start, e=end, body=make(): f"{s}\n{body}\n{e}", readme)  # type: ignore[misc]  # bound defaults
    return readme


def main() -> int:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    text = path.read_text(encoding="utf-8")
    new = render(text)
    if new != text:
        path.write_text(new, encoding="utf-8")
        print(f"updated {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
