"""The benchmark harness (``make bench``): the standard saga workload run on this product, on
a hand-written floor with the same durability, and on peers (DBOS, Celery), side by side in
one run. See ``python -m bench --help``."""
