"""Ports handed to servers that bind later stay out of the way of outgoing connections."""

from __future__ import annotations

import socket

import pytest

from rollbackd.testing import promstack
from rollbackd.testing.promstack import free_port


def test_a_port_is_picked_below_the_ephemeral_range_and_is_bindable() -> None:
    low = promstack._ephemeral_low()
    if low <= promstack._PICK_FLOOR:
        pytest.skip("this kernel's ephemeral range starts too low to pick below it")
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
