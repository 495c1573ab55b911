"""The postmortem draft: ``rollbackd report ID`` and ``GET /api/v1/rollbacks/{id}/report``.

Built from the journal (the durable facts: timeline, plan, phases) plus, for
the impact, Prometheus over the incident window. Modules, one concern each:
``times`` (window and durations), ``change`` (the template diff, journaled
at plan time), ``actions`` (action items), ``impact`` (the PromQL),
``draft`` (the data and its JSON), ``markdown`` (the paste-ready text),
``service`` (journal and Prometheus in, text out). This package module
imports nothing: the executor imports ``change`` without the rest.
"""
