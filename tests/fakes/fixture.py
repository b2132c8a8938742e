"""``FakeSnpe``: set up and inspect the fake adb / SNPE SDK of ``tests/fakes`` from a test.

Use the pytest fixture ``fake_snpe`` (importing it under the name ``fake_snpe_fixture`` keeps ruff's F811
quiet at every test parameter named ``fake_snpe``)::

    from tests.fakes.fixture import FakeSnpe, fake_snpe_fixture  # noqa: F401

    def test_something(fake_snpe: FakeSnpe) -> None:
        fake_snpe.add_device("SERIAL1", soc="SM8550", noise=[1.0, 1.2])
        ...  # code under test calls adb / snpe-* found first on PATH

or build one by hand with ``FakeSnpe(tmp_path)`` and pass ``fake.env()`` to subprocesses.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import snpe_fake

FAKES_DIR = Path(__file__).resolve().parent


class FakeSnpe:
    """A fake SNPE SDK and fake adb devices whose behaviour lives in a state directory under ``root``."""

    bin_dir: Path = FAKES_DIR / "bin"
    sdk_root: Path = FAKES_DIR / "snpe_root"

    def __init__(self, root: Path) -> None:
        self.state_dir = Path(root) / "fake_snpe_state"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        snpe_fake.write_state(self.state_dir, snpe_fake.default_state())

    # -- environment ------------------------------------------------------------------------------

    @property
    def path_value(self) -> str:
        """PATH with the fakes first, then the interpreter's bin dir (so ``python3`` has numpy/onnx)."""
        venv_bin = str(Path(sys.executable).parent)
        return os.pathsep.join([str(self.bin_dir), venv_bin, os.environ.get("PATH", os.defpath)])

    def env(self) -> dict[str, str]:
        """A copy of ``os.environ`` under which the fakes are found and read this state."""
        env = dict(os.environ)
        env.pop("ANDROID_SERIAL", None)
        env["PATH"] = self.path_value
        env[snpe_fake.STATE_ENV] = str(self.state_dir)
        return env

    def activate(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Make this process (and its children) see the fakes, undone at the end of the test."""
        monkeypatch.delenv("ANDROID_SERIAL", raising=False)
        monkeypatch.setenv("PATH", self.path_value)
        monkeypatch.setenv(snpe_fake.STATE_ENV, str(self.state_dir))

    # -- configuration ----------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return snpe_fake.read_state(self.state_dir)

    def add_device(self, serial: str, **behaviour: Any) -> None:
        """Attach a device: ``behaviour`` (keys of ``snpe_fake.DEVICE_DEFAULTS``) over the defaults."""
        _check_keys(behaviour)
        with snpe_fake.edit_state(self.state_dir) as state:
            state["devices"][serial] = {**snpe_fake.DEVICE_DEFAULTS, **behaviour}
        snpe_fake.device_fs(self.state_dir, serial).joinpath("data", "local", "tmp").mkdir(
            parents=True, exist_ok=True
        )

    def update_device(self, serial: str, **changes: Any) -> None:
        _check_keys(changes)
        with snpe_fake.edit_state(self.state_dir) as state:
            if serial not in state["devices"]:
                raise KeyError(f"no fake device {serial!r}; add_device it first")
            state["devices"][serial].update(changes)

    def set_tools(self, **changes: Any) -> None:
        """Tool failure modes: ``convert_error``, ``quantize_error`` (text or None), ``info_malformed``."""
        unknown = set(changes) - set(snpe_fake.TOOLS_DEFAULTS)
        if unknown:
            raise TypeError(f"unknown fake SNPE tool settings: {sorted(unknown)}")
        with snpe_fake.edit_state(self.state_dir) as state:
            state["tools"].update(changes)

    def set_version(self, version: str) -> None:
        with snpe_fake.edit_state(self.state_dir) as state:
            state["sdk_version"] = version

    # -- inspection -------------------------------------------------------------------------------

    def device(self, serial: str) -> dict[str, Any]:
        """The device's current behaviour (e.g. ``state`` becomes "gone" after an unplug)."""
        dev = snpe_fake.device_config(self.state(), serial)
        if dev is None:
            raise KeyError(f"no fake device {serial!r}")
        return dev

    def runs(self, serial: str) -> int:
        """How many times the device's snpe-net-run has been started."""
        return int(snpe_fake.read_runs(self.state_dir, serial)["runs"])

    def run_history(self, serial: str) -> list[dict[str, Any]]:
        """One entry per completed device run: run number, runtime, avg_us, inputs."""
        history: list[dict[str, Any]] = snpe_fake.read_runs(self.state_dir, serial).get("history", [])
        return history

    def commands(self, serial: str) -> list[list[str]]:
        """The argv (after ``adb``, ``-s SERIAL`` included) of every adb call that reached this device."""
        return snpe_fake.read_commands(self.state_dir, serial)

    def device_path(self, serial: str, remote: str) -> Path:
        """Where the device path ``remote`` lives on the host."""
        return snpe_fake.device_path(self.state_dir, serial, remote)


def _check_keys(behaviour: dict[str, Any]) -> None:
    unknown = set(behaviour) - set(snpe_fake.DEVICE_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown fake device settings: {sorted(unknown)}")
    state = behaviour.get("state")
    if state is not None and state not in snpe_fake.DEVICE_STATES:
        raise ValueError(f"device state must be one of {snpe_fake.DEVICE_STATES}, not {state!r}")
    diag = behaviour.get("diag")
    if diag is not None and diag not in snpe_fake.DIAG_MODES:
        raise ValueError(f"diag must be one of {snpe_fake.DIAG_MODES}, not {diag!r}")


@pytest.fixture(name="fake_snpe")
def fake_snpe_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeSnpe:
    """A fresh fake SDK (no devices) active in this process for the test's duration."""
    fake = FakeSnpe(tmp_path)
    fake.activate(monkeypatch)
    return fake


#: The same fixture under its own name. Importing this one makes ruff report F811 at every test that takes
#: ``fake_snpe`` as a parameter; import ``fake_snpe_fixture`` instead to stay clean.
fake_snpe = fake_snpe_fixture
