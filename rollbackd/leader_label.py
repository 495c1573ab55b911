"""Old import path of :mod:`rollbackd.kube.leader_label` (the daemon and the chart tests use it)."""

from rollbackd.kube.leader_label import LEADER_LABEL, LeaderLabel

__all__ = ["LEADER_LABEL", "LeaderLabel"]
