"""The one cache of the emitted Verilog (:mod:`gateware.cache`): its key follows exactly what
the text depends on. (That ``build.py`` reuses an entry: ``tests/test_build.py``.)"""

import dataclasses

import pytest

from contract.config import get_config
from gateware import cache

TINY = get_config("tiny")


@pytest.fixture
def tree(tmp_path):
    """A repository in miniature: gateware/ imports model.golden (which imports
    model.quant); model/train.py is imported by nothing the gateware imports."""
    files = {
        "gateware/__init__.py": "",
        "gateware/top.py": "from model import golden\nfrom .sequencer import core\n",
        "gateware/sequencer/__init__.py": "",
        "gateware/sequencer/core.py": "from ..config import X\n",
        "contract/config.py": "X = 1\n",
        "model/__init__.py": "",
        "model/golden.py": "import numpy as np\nfrom .quant import Q\n",
        "model/quant.py": "Q = 3\n",
        "model/train.py": "from model import golden\n",
        "sim/bench.py": "import gateware.top\n",
        "README.md": "text\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return tmp_path


def key(repo, config=TINY, kind="verilog", name="cim_top"):
    return cache.source_key(config, kind, name, repo=repo)


def test_source_files_follow_the_imports(tree):
    got = {str(p.relative_to(tree)) for p in cache.source_files(repo=tree)}
    assert got == {"gateware/__init__.py", "gateware/top.py", "contract/config.py",
                   "gateware/sequencer/__init__.py", "gateware/sequencer/core.py",
                   "model/__init__.py", "model/golden.py", "model/quant.py"}


@pytest.mark.parametrize("rel, changes", [
    ("gateware/top.py", True), ("gateware/sequencer/core.py", True),
    ("model/quant.py", True),                       # imported by what the gateware imports
    ("contract/layout.py", True),                   # a root, even when it was missing
    ("gateware/new.py", True),
    ("model/train.py", False), ("model/other.py", False), ("sim/bench.py", False),
    ("README.md", False), ("gateware/README.md", False),
])
def test_key_follows_the_sources(tree, rel, changes):
    before = key(tree)
    path = tree / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text((path.read_text() if path.exists() else "") + "# edited\n")
    assert (key(tree) != before) is changes


def test_key_follows_the_parameters(tree):
    keys = {key(tree), key(tree, config=get_config("default")),
            key(tree, config=dataclasses.replace(TINY, bank_words=2 * TINY.bank_words)),
            key(tree, kind="rtlil"), key(tree, name="other_top")}
    assert len(keys) == 5
    assert key(tree) == key(tree)
    with pytest.raises(ValueError, match="Kind must be one of verilog, rtlil, not 'vhdl'"):
        key(tree, kind="vhdl")


def test_key_follows_the_tool_versions(tree, monkeypatch):
    before = key(tree)
    monkeypatch.setattr(cache, "version", lambda pkg: "0.0-other")
    assert key(tree) != before


def test_repository_sources():
    """In this repository: the emitter's modules and the contract are in the key; the network
    side, the compiler, the benches and the tests are not."""
    got = {str(p.relative_to(cache.REPO)) for p in cache.source_files()}
    assert {"gateware/top.py", "gateware/emit.py", "contract/config.py"} <= got
    assert not any(p.startswith(("model/", "compiler/", "sim/", "hw/", "tests/")) for p in got)
