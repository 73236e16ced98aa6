"""The layers hold: import-linter's contracts (``.importlinter``) are kept, and no module of
the project imports itself back through others at run time (imports under
``TYPE_CHECKING`` only name types and are left out). Lazy imports inside functions count."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def test_the_import_contracts_are_kept() -> None:
    done = subprocess.run([str(LINT_IMPORTS), "--config", str(ROOT / ".importlinter")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_a_broken_contract_is_reported(tmp_path: Path) -> None:
    """The tool would catch a violation: a contract the code does not keep (the command
    line imports the client) is reported broken."""
    config = tmp_path / "broken.ini"
    config.write_text("[importlinter]\nroot_packages =\n    autopeft_service\n\n"
                      "[importlinter:contract:x]\nname = cli without client\ntype = forbidden\n"
                      "source_modules =\n    autopeft_service.cli\n"
                      "forbidden_modules =\n    autopeft_service.client\n")
    done = subprocess.run([str(LINT_IMPORTS), "--config", str(config)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "1 broken" in done.stdout, done.stdout[-2000:]


def import_loops(graph: grimp.ImportGraph) -> set[tuple[str, str]]:
    """Pairs of modules that import each other, directly or through others."""
    loops = set()
    for importer in graph.modules:
        for imported in graph.find_modules_directly_imported_by(importer):
            if graph.find_shortest_chain(importer=imported, imported=importer):
                loops.add(tuple(sorted((importer, imported))))
    return loops


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("autopeft_service", "workers", include_external_packages=False,
                             exclude_type_checking_imports=True)


def test_no_module_imports_itself_back(graph: grimp.ImportGraph) -> None:
    assert import_loops(graph) == set()


def test_a_loop_would_be_found() -> None:
    graph = grimp.build_graph("autopeft_service", include_external_packages=False,
                              exclude_type_checking_imports=True)
    graph.add_import(importer="autopeft_service.domain.errors",
                     imported="autopeft_service.domain.methods")
    assert ("autopeft_service.domain.errors", "autopeft_service.domain.methods") in \
        import_loops(graph)

