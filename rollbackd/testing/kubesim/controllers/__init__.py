"""The controllers of a real cluster over a ``Store``, one module per concern, as upstream.

- ``deployment`` (sync.go: new ReplicaSet, scaling, history cleanup),
  ``rolling`` (rolling.go), ``recreate`` (recreate.go) and ``progress``
  (progress.go: status and conditions), over the pure rules of
  ``deploymentutil`` and ``podtemplate`` (pkg/controller/deployment/util);
- ``replicaset`` (pkg/controller/replicaset): pods to match the spec, status;
- ``kubelet``: a created pod's status and its readiness later;
- ``endpoints`` (pkg/controller/endpoint): Endpoints of selector Services;
- ``events``: client-go's aggregating event recorder;
- ``rollouts`` (Argo Rollouts' basic canary and abort, over the pure
  ``canary`` arithmetic and the ``rolloutspec`` checks) and ``custom`` (which
  changes wake them, and the HTTPRoute status of ``..httproutes``);
- ``context``, ``workqueue``: what the controllers share (store, clock, owner
  indexes, the de-duplicating queue and its timers).

``rollbackd.testing.kubesim.controller.Controller`` runs them all. The
disruption controller (PodDisruptionBudgets) lives beside the Eviction API it
serves, in ``..disruption``.
"""
