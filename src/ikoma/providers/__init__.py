"""Cloud providers (issue 16): the one interface (`base.py`) and its adapters (`mock/`, `scaleway/`)."""
