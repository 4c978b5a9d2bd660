"""The package's shape: small functions, thin console scripts, and no private attribute of another object (a
wandb, Lightning, diffusers or omegaconf upgrade must not break the harness)."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "ddim_bench"
MAX_FUNCTION_LINES = 50
MAX_APP_LINES = 30
ALLOWED_PRIVATE = {("os", "_exit")}  # os._exit is the documented way to end a process at once


def modules():
    return [(p, ast.parse(p.read_text(), str(p))) for p in sorted(PACKAGE.rglob("*.py"))]


def test_no_function_over_fifty_lines():
    long = [f"{p.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for p, tree in modules() for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, long


def test_console_scripts_are_thin():
    apps = sorted((PACKAGE / "apps").glob("*.py"))
    assert {p.stem for p in apps} >= {"train", "sweep", "report", "reconstruct", "interpolate"}
    fat = {p.name: n for p in apps if (n := len(p.read_text().splitlines())) > MAX_APP_LINES}
    assert not fat, fat


def test_no_private_attribute_of_another_object():
    """``x._name`` only on ``self``/``cls``; ``_target_``-style keys (Hydra's) are public."""
    found = []
    for p, tree in modules():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute) or not node.attr.startswith("_") or node.attr.endswith("_"):
                continue
            owner = node.value.id if isinstance(node.value, ast.Name) else None
            if owner in ("self", "cls") or (owner, node.attr) in ALLOWED_PRIVATE:
                continue
            found.append(f"{p.relative_to(PACKAGE.parent)}:{node.lineno} {ast.unparse(node)}")
    assert not found, found


# The pipeline's packages, each importing only from those before it (support modules such as errors, io, config
# and cli are outside this order). The data flows train → sample → score → store → report/track; the store sits
# below the scorer because the scorer keeps its reference features in the results' cache.
LAYERS = [{"data", "models", "sampling"}, {"results"}, {"scoring"}, {"tracking"}, {"reporting"},
          {"training", "sweep", "tasks"}, {"apps"}]


def imported_packages(tree: ast.AST) -> set[str]:
    """ddim_bench's sub-packages a module imports, at any depth of the module (lazy imports count too)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ddim_bench"):
            parts = node.module.split(".")
            out |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("ddim_bench.")}
    return out


def test_no_pipeline_package_imports_one_above_it():
    level = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}
    upward = []
    for p, tree in modules():
        rel = p.relative_to(PACKAGE).parts
        if len(rel) < 2 or rel[0] not in level:
            continue
        upward += [f"{p.relative_to(PACKAGE.parent)} imports {q}" for q in sorted(imported_packages(tree))
                   if level.get(q, -1) >= level[rel[0]] and q != rel[0]]
    assert not upward, upward
    assert (PACKAGE / "scoring" / "extractors").is_dir() and not (PACKAGE / "evaluation").exists()
