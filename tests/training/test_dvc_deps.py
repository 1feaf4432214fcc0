"""Every dvc.yaml (the root pipeline, and cv/dvc.yaml outside the default `dvc repro`) lists, for each
stage, exactly the project modules the stage imports (directly or through another project module): a
missing one leaves `dvc repro` serving stale results when it is edited; an extra one reruns stages for
nothing. The closure is computed from the source's AST, local imports too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("training", "export", "service", "benchmarks")


def module_file(name: str, root: Path = REPO) -> Path | None:
    """The file that defines module `name` (a.b -> a/b.py or a/b/__init__.py), None if none does."""
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_files(path: Path, root: Path = REPO) -> set[Path]:
    """The project files one module imports, anywhere in its body (function-local imports included)."""
    found: set[Path] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from a import b` imports the module a.b when b is one, else a name defined in a.
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            if name.split(".")[0] not in PACKAGES:
                continue
            target = module_file(name, root)
            if target is not None and (target.name != "__init__.py" or target.read_text().strip()):
                found.add(target)
    return found


def closure(start: Path, root: Path = REPO) -> set[Path]:
    seen, todo = set(), [start]
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo.extend(imported_files(path, root) - seen)
    return seen


def stage_entry(cmd: str, root: Path = REPO) -> Path:
    """`python -m pkg.mod` -> pkg/mod.py (a package runs its __main__.py)."""
    words = cmd.split()
    assert words[:2] == ["python", "-m"], f"stage command {cmd!r} is not `python -m <module>`"
    target = module_file(words[2], root)
    assert target is not None, f"no module {words[2]}"
    return target.with_name("__main__.py") if target.name == "__init__.py" else target


def dvc_files(root: Path = REPO) -> list[Path]:
    """The root dvc.yaml and those one folder down (cv/dvc.yaml)."""
    return [root / "dvc.yaml", *sorted(root.glob("*/dvc.yaml"))]


def code_deps(stage: dict, folder: Path, root: Path = REPO) -> set[str]:
    """The stage's .py deps as repo-relative paths (a stage's paths are relative to its wdir)."""
    wdir = (folder / stage.get("wdir", ".")).resolve()
    paths = [(wdir / d).resolve().relative_to(root).as_posix() for d in stage.get("deps", []) if d.endswith(".py")]
    return {d for d in paths if d.split("/")[0] in PACKAGES}


def deps_problems(dvc: dict, root: Path = REPO, folder: Path | None = None) -> list[str]:
    """`folder`: where this dvc.yaml lies (the root by default)."""
    problems = []
    for name, stage in dvc["stages"].items():
        needed = {p.relative_to(root).as_posix() for p in closure(stage_entry(stage["cmd"], root), root)}
        listed = code_deps(stage, folder or root, root)
        problems += [f"{name}: imports {m} but does not list it in deps" for m in sorted(needed - listed)]
        problems += [f"{name}: lists {m} in deps but never imports it" for m in sorted(listed - needed)]
    return problems


@pytest.mark.parametrize("path", dvc_files(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_stage_lists_exactly_the_modules_it_imports(path: Path) -> None:
    dvc = yaml.safe_load(path.read_text())
    assert deps_problems(dvc, REPO, path.parent) == []


def test_cross_validation_is_its_own_pipeline_run_from_the_repo_root() -> None:
    # `dvc repro` reproduces the root dvc.yaml (and what it depends on) only, so cv stays out of it.
    assert "cv" not in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    cv = yaml.safe_load((REPO / "cv" / "dvc.yaml").read_text())["stages"]["cv"]
    assert cv["wdir"] == ".." and cv["cmd"] == "python -m training.cv"


def test_a_stage_in_a_subfolder_is_checked_from_its_wdir() -> None:
    dvc = yaml.safe_load((REPO / "cv" / "dvc.yaml").read_text())
    dvc["stages"]["cv"]["deps"].remove("training/folds.py")
    assert deps_problems(dvc, REPO, REPO / "cv") == ["cv: imports training/folds.py but does not list it in deps"]


@pytest.mark.parametrize("mutation", ["drop", "add"])
def test_the_check_finds_a_missing_and_an_extra_dep(mutation: str) -> None:
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    deps = dvc["stages"]["train"]["deps"]
    if mutation == "drop":
        deps.remove("training/fit.py")
        expected = "train: imports training/fit.py but does not list it in deps"
    else:
        deps.append("training/sources.py")
        expected = "train: lists training/sources.py in deps but never imports it"
    assert expected in deps_problems(dvc)


def test_function_local_imports_count(tmp_path: Path) -> None:
    (tmp_path / "training").mkdir()
    (tmp_path / "training" / "__init__.py").write_text("")
    (tmp_path / "training" / "a.py").write_text("def f():\n    from training.b import g\n    return g\n")
    (tmp_path / "training" / "b.py").write_text("from training import c\ng = c\n")
    (tmp_path / "training" / "c.py").write_text("")
    found = {p.name for p in closure(tmp_path / "training" / "a.py", tmp_path)}
    assert found == {"a.py", "b.py", "c.py"}
