"""Infrastructure around the stages: where work runs and where runs are stored.

- `dask_cluster`: the coarse stage's fits on a dask.distributed cluster (`search.backend=dask`).
- `tuner_workers`: KerasTuner's chief and workers for a distributed fine stage (`search.fine.workers`).
- `tracking_server`: PostgreSQL + `mlflow server` on this machine (`make server`).
- `ui`: the MLflow UI over a local store (`make ui`).
- `serve`: MLflow's model server for a searched model (`make serve`).
- `processes`: thread budgets of worker processes and ending process groups.

The stages (`searchlab.coarse`, `searchlab.fine`) and the pipeline import these only when asked to use them.
"""
