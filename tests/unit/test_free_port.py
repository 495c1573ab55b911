"""Ports handed to servers that bind later stay out of the way of outgoing connections,
and of each other."""

from __future__ import annotations

import multiprocessing
import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from rollbackd.testing import promstack
from rollbackd.testing.promstack import free_port


@pytest.fixture
def low() -> int:
    """Where this kernel's ephemeral range starts; the specs that pick below it need room."""
    start = promstack._ephemeral_low()
    if start <= promstack._PICK_FLOOR:
        pytest.skip("this kernel's ephemeral range starts too low to pick below it")
    return start


def test_a_port_is_picked_below_the_ephemeral_range_and_is_bindable(low: int) -> None:
    ports = {free_port() for _ in range(20)}
    assert all(promstack._PICK_FLOOR <= p < low for p in ports)
    assert len(ports) > 1  # random, so two servers started together rarely meet
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", ports.pop()))


def test_without_a_readable_range_the_kernel_picks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(promstack, "_EPHEMERAL_RANGE", "/nonexistent/ip_local_port_range")
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))


def _pick_in_child(picked_dir: str, floor: int, ceiling: int, out: Any) -> None:
    promstack._PICKED_DIR = Path(picked_dir)
    promstack._PICK_FLOOR = floor
    promstack._ephemeral_low = lambda: ceiling  # type: ignore[assignment]
    out.put(sorted(free_port() for _ in range(10)))


def test_processes_picking_at_once_never_hand_out_the_same_port(tmp_path: Path, low: int) -> None:
    """Four processes pick ten ports each from a range of sixty: without the
    record of picks, each pair shares a port almost every time."""
    floor = low - 100  # sixty ports just below the ephemeral range
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    pickers = [
        context.Process(target=_pick_in_child, args=(str(tmp_path), floor, floor + 60, out))
        for _ in range(4)
    ]
    for picker in pickers:
        picker.start()
    picks = [out.get(timeout=30) for _ in pickers]
    for picker in pickers:
        picker.join(timeout=30)
    every = [port for ports in picks for port in ports]
    assert len(every) == 40
    assert len(set(every)) == 40, picks


def test_a_pick_is_held_for_a_while_then_free_to_take_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(promstack, "_PICKED_DIR", tmp_path)
    assert promstack._claim(20_001)
    assert not promstack._claim(20_001), "picked a moment ago, by this or another process"
    held = time.time() - promstack._PICK_HELD_SECONDS - 1
    os.utime(tmp_path / "20001", (held, held))
    assert promstack._claim(20_001), "an old pick: its server bound the port, or never will"
    assert not promstack._claim(20_001)


def test_where_picks_cannot_be_recorded_ports_are_still_picked_and_bindable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, low: int
) -> None:
    """A read-only or missing temp directory costs the record, never a port."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    # The record's directory cannot be created under a regular file, even by root.
    monkeypatch.setattr(promstack, "_PICKED_DIR", blocker / "picked")
    assert promstack._claim(20_002), "nowhere to record: every port may be tried"
    ports = [free_port() for _ in range(5)]
    assert all(promstack._PICK_FLOOR <= p < low for p in ports), ports
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", ports[0]))
    assert not (blocker / "picked").exists()
