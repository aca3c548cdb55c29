"""`python -m ikoma` is the `ikoma` command."""

from ikoma.cli.main import app

app(prog_name="ikoma")
