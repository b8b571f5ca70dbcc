"""Checkpoints load without running foreign code: only the benchmark's and torch's classes are constructed."""

from __future__ import annotations

import hashlib
import importlib
import os
import sys

import pytest
import torch

import methods
from bench.harness.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from methods import METHODS


class _RunsACommand:
    """What a malicious pickle looks like: unpickling it calls `os.system`."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _digest_of(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_checkpoint_that_would_run_a_command_is_refused_and_the_command_never_runs(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "model.pt"
    torch.save({"model": _RunsACommand(f"touch {marker}")}, path)
    # The digest matches (as it would if the record itself had been edited): the content check must still hold.
    with pytest.raises(CheckpointError, match=r"names (posix|os|nt)\.system.*refused"):
        load_checkpoint(path, _digest_of(path))
    assert not marker.exists()


def test_a_checkpoint_naming_a_function_of_a_trusted_package_is_refused(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"call": methods.register}, path)
    with pytest.raises(CheckpointError, match="not a class"):
        load_checkpoint(path, _digest_of(path))


class _Fitted:
    """A stand-in for a fitted method: a network and the optimiser a later phase continues with."""

    def __init__(self):
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=0.1)
        self.device = torch.device("cpu")

    def step(self) -> None:
        self.optimizer.zero_grad()
        self.net(torch.linspace(-1, 1, 6).reshape(2, 3)).pow(2).sum().backward()
        self.optimizer.step()


@pytest.fixture
def fitted_class(monkeypatch):
    """`_Fitted` as a class of a registered plugin's package, as a method's own classes are."""
    monkeypatch.setattr(_Fitted, "__module__", "methods.vae")
    monkeypatch.setattr(importlib.import_module("methods.vae"), "_Fitted", _Fitted, raising=False)
    return _Fitted


def test_an_optimiser_comes_back_with_its_state_tied_to_the_loaded_parameters(tmp_path, fitted_class):
    fitted = fitted_class()
    fitted.step()  # Adam now has moments and a step count
    path = tmp_path / "model.pt"
    loaded = load_checkpoint(path, save_checkpoint(path, fitted))

    params = list(loaded.net.parameters())
    assert [p for group in loaded.optimizer.param_groups for p in group["params"]] == params
    assert set(map(id, loaded.optimizer.state)) == set(map(id, params))
    # Continuing from the stored copy steps exactly as continuing the original does.
    fitted.step()
    loaded.step()
    for original, restored in zip(fitted.net.parameters(), params):
        torch.testing.assert_close(restored, original, rtol=0, atol=0)


def test_a_checkpoint_of_code_that_has_since_moved_is_refused_with_the_reason(tmp_path, monkeypatch):
    (tmp_path / "gone_plugin.py").write_text("class GonePlugin:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import gone_plugin

    METHODS.names()  # discover the built-in methods first, so the copy below holds them all
    monkeypatch.setattr(METHODS, "_entries", {**METHODS._entries, "gone-plugin": gone_plugin.GonePlugin})
    path = tmp_path / "model.pt"
    digest = save_checkpoint(path, gone_plugin.GonePlugin())
    del sys.modules["gone_plugin"]
    (tmp_path / "gone_plugin.py").unlink()
    with pytest.raises(CheckpointError, match="moved or changed"):
        load_checkpoint(path, digest)


def test_a_file_that_is_not_a_torch_file_is_refused(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"not a zip archive")
    with pytest.raises(CheckpointError, match="not a readable torch file"):
        load_checkpoint(path, _digest_of(path))


def test_saving_twice_writes_the_same_bytes(tmp_path, fitted_class):
    fitted = fitted_class()
    fitted.step()
    assert save_checkpoint(tmp_path / "a.pt", fitted) == save_checkpoint(tmp_path / "b.pt", fitted)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
