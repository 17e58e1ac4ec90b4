"""The README's own plugin example (section "Writing a plugin") passes the strategy conformance suite.

The code is read from README.md when the tests are collected, not copied here, so the example a
plugin author starts from cannot drift away from the contract the suite checks.
"""
from __future__ import annotations

import re
import sys
import types
from pathlib import Path

from framework.testing import TrafficStrategyContract

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Writing a plugin"
#: the module name the example's pyproject registers
MODULE = "acme_strategies"


def readme_example() -> str:
    """The first ```python block of the README section, verbatim."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n{SECTION}\n")
    end = text.find("\n## ", start + len(SECTION) + 1)
    section = text[start:end] if end != -1 else text[start:]
    block = re.search(r"^```python\n(.*?)^```", section, re.DOTALL | re.MULTILINE)
    assert block is not None, f"README.md: no ```python block in section '{SECTION}'"
    return block.group(1)


def load_example() -> types.ModuleType:
    module = types.ModuleType(MODULE)
    module.__file__ = str(README)
    sys.modules[MODULE] = module  # pickle finds the strategy class by its module, as Ray does
    exec(compile(readme_example(), f"README.md ({SECTION[3:]})", "exec"), module.__dict__)
    return module


acme = load_example()


class TestReadmeFirstArmContract(TrafficStrategyContract):
    strategy_cls = acme.FirstArm


def test_example_registers_its_strategy_through_the_hook():
    assert acme.register_traffic_strategies() == [acme.FirstArm]
    assert acme.FirstArm.name == "first_arm"


def test_example_implements_choose_and_leaves_route_to_the_base():
    assert "choose" in vars(acme.FirstArm) and "route" not in vars(acme.FirstArm)
