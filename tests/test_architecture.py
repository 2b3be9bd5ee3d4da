"""The import rules of docs/architecture.md, read from its module table and held against the code."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TABLE_ROW = re.compile(r"^\| (\d+) \| `(\w+)` \|")
SERVING_MAY_IMPORT = {"vqa.predict", "vqa.serve_config", "vqa.errors", "vqa.runtime", "vqa.repository"}


def layers() -> dict[str, int]:
    """{module: layer} from the architecture page's table."""
    rows = (TABLE_ROW.match(line) for line in (ROOT / "docs/architecture.md").read_text().splitlines())
    return {m.group(2): int(m.group(1)) for m in rows if m}


def vqa_imports(path: Path) -> set[str]:
    """Every vqa module ``path`` imports, at the top or inside functions (``from vqa import x`` counts x)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "vqa":
            if node.module == "vqa":
                found |= {alias.name for alias in node.names}
            else:
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("vqa.")}
    return found - {"__version__"}


def test_every_module_has_a_layer_on_the_architecture_page():
    modules = {p.stem for p in (ROOT / "src/vqa").glob("*.py")} - {"__init__", "__main__"}
    assert modules == set(layers())


def test_each_module_imports_only_lower_layers():
    layer = layers()
    wrong = [f"{path.stem} (layer {layer[path.stem]}) imports {name} (layer {layer[name]})"
             for path in sorted((ROOT / "src/vqa").glob("*.py")) if path.stem in layer
             for name in sorted(vqa_imports(path)) if layer[name] >= layer[path.stem] and name != path.stem
             and not (layer[name] == layer[path.stem] == 0)]
    assert wrong == []


def test_serving_imports_the_predictor_and_nothing_deeper():
    imported = {f"vqa.{name}" for path in (ROOT / "serving").glob("*.py") for name in vqa_imports(path)}
    assert imported <= SERVING_MAY_IMPORT


FORMAT_OWNERS = {"feature_file.py", "prepared.py"}  # the HDF5 formats' owners (docs/architecture.md)
HDF5_WRITE = re.compile(r"h5py\.File\([^)]*[\"'][wax]\+?[\"']|\.create_dataset\(|\.create_group\(")


def test_only_a_formats_owner_writes_hdf5():
    sources = [*(ROOT / "src/vqa").glob("*.py"), *(ROOT / "bench").glob("*.py"), *(ROOT / "serving").glob("*.py")]
    writers = sorted(str(path.relative_to(ROOT)) for path in sources
                     if path.name not in FORMAT_OWNERS and HDF5_WRITE.search(path.read_text()))
    assert writers == []


def test_hdf5_dataset_names_are_private_to_their_owner():
    import vqa.artifacts

    public = [name for name in vars(vqa.artifacts) if name.endswith(("_DATASET", "_ATTR"))]
    assert public == []

