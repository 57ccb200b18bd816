"""Everything in kgc that imports Ray, and nothing else does.

- `cluster`: connect to (or start) Ray, and the environment forwarded to workers;
- `pool`: the one Ray Data actor pool, with its stall watchdog;
- `extract`: the extraction actor and its driver;
- `train`: the Ray Train driver and worker loop;
- `icl`: the ICL request pool;
- `graph`: the graph build's map/reduce as Ray tasks.
"""
