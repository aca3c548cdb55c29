"""Agentless machines (issue 14): servers in `ssh` mode run their orders over SSH from the API process.

`credentials` seals and opens a server's secrets, `connection` opens one SSH connection with a pinned
host key and names what went wrong, `remote` runs one step on it, `playbooks` are the built-ins over
SSH, `executor` drives the order lifecycle for ssh servers exactly as a runner would.
"""
