"""Former home of Dask evaluation; it lives in :mod:`hf_symbolic.evaluate.dask` now.

Kept so that ``hf_symbolic.distributed.WorkerLostError`` and the other names
cited by release 0.1's documentation keep working.
"""

from hf_symbolic.evaluate.dask import DaskEvaluator, ShardServer, WorkerLostError, _worker_addresses, check_client

__all__ = ["DaskEvaluator", "ShardServer", "WorkerLostError", "check_client", "_worker_addresses"]
