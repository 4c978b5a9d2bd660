"""The GPU check's Markdown: one section per part, its tables, its skip/error lines, and the apps' FID table."""
from __future__ import annotations


def md_table(columns: list[str], rows: list[list]) -> str:
    def cell(v) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")
    out = ["| " + " | ".join(map(cell, columns)) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(out)


def markdown(result: dict) -> str:
    mode = "quick CPU version" if result["quick"] else f"device {result['device']}"
    lines = [f"# GPU check ({mode})", "",
             f"{result['created']}, {result.get('wall_seconds', 0):.0f} s in all." +
             "".join(f" {n}." for n in result["notes"]), ""]
    for name, part in result["parts"].items():
        lines += [f"## {part['title']}", "",
                  f"status: {part['status']}, {part.get('seconds', 0):.0f} s of a {part['budget']:.0f} s budget", ""]
        for t in part["tables"]:
            lines += [f"**{t['title']}**", ""]
            lines += [md_table(t["columns"], t["rows"]) if t["rows"] else "(no rows)", ""]
            lines += [f"- {ln}" for ln in t.get("lines", [])]
            lines += [""] if t.get("lines") else []
        lines += [f"- {ln}" for ln in part["lines"]]
        lines += [""] if part["lines"] else []
        if part.get("markdown"):
            lines += ["**report/table1.md**", "", part["markdown"].strip(), ""]
    return "\n".join(lines)
