"""The Mock provider (issue 16): a simulated cloud, stateful in IKOMA's database, with a clock tests
control and named failure scenarios; a booted machine runs a real `ikoma runner`.

`machines.py` (clock, states, types, the machine record), `simulator.py` (pure: how machines move,
the IP pool), `scenarios.py` (the failure scenarios and their rules), `store.py` (the world in the
database or in memory), `cloud.py` (the service: one store session per call), `adapter.py` (the
`Provider`), `boot.py` (runner processes), `user_data.py` (cloud-init). docs/providers.md explains it.
"""
