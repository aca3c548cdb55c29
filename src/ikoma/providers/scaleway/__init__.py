"""The Scaleway provider (issue 16): `client.py` (an async httpx client of the Instance API, with
timeouts and bounded retries) and `adapter.py` (the `Provider` over it, and its settings)."""
