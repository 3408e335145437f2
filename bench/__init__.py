"""siocluster's benchmark harness: the same workloads through the cluster and direct.

Run ``python -m bench --help`` from the repository root; see ``bench/README.md``.
"""

__all__: list[str] = []
