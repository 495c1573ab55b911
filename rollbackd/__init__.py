"""rollbackd: undo a bad Kubernetes rollout, prove the undo worked, page when it did not."""

__version__ = "0.1.0"
