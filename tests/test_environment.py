"""The locked environment: requirements.lock pins every direct requirement at its requirements.txt version, and
setup.sh installs under it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^\s;]+)", line)
        if match:
            pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    return pins


def test_lock_pins_every_requirement_at_its_version() -> None:
    direct, locked = _pins(ROOT / "requirements.txt"), _pins(ROOT / "requirements.lock")
    assert direct and len(locked) > len(direct)
    assert {name: locked.get(name) for name in direct} == direct
    header = (ROOT / "requirements.lock").read_text().splitlines()[:2]
    assert header[1].strip().startswith("#    uv pip compile requirements.txt") and "-o requirements.lock" in header[1]


def test_setup_installs_with_the_lock_as_constraints() -> None:
    setup = (ROOT / "setup.sh").read_text()
    assert '-r "$root/requirements.txt" -c "$root/requirements.lock"' in setup
    assert '"$root/requirements.txt" "$root/requirements.lock" | sha256sum' in setup  # a new lock reinstalls
