"""The `ikoma` command line: admin commands over the HTTP API."""
