"""The CPU baseline: the same PromQL queries with nothing but requests and json.

One GET per query on a kept-alive session, the JSON decoded, each result
folded into ``{(namespace, deployment): value}``: the least any poller must
do to look at every Deployment's value. No retries, no thresholds, no state.
"""

from __future__ import annotations

from collections.abc import Sequence

import requests


class MinimalPoller:
    def __init__(self, url: str, queries: Sequence[str], timeout: float = 60.0) -> None:
        self._url = url.rstrip("/") + "/api/v1/query"
        self._queries = list(queries)
        self._timeout = timeout
        self._session = requests.Session()

    def cycle(self) -> list[dict[tuple[str, str], float]]:
        """Run every query once; the folded results, in query order."""
        folded = []
        for expr in self._queries:
            response = self._session.get(self._url, params={"query": expr}, timeout=self._timeout)
            response.raise_for_status()
            result = response.json()["data"]["result"]
            folded.append(
                {
                    (item["metric"]["namespace"], item["metric"]["deployment"]): float(
                        item["value"][1]
                    )
                    for item in result
                }
            )
        return folded

    def close(self) -> None:
        self._session.close()
