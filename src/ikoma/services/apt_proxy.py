"""apt's proxy handed to a runner with an apt order (issue 14 item 6, seed 003's aptProxyMode).

An agent machine learns its server's proxy from the claim answer of an apt order only: one small read
by server id in the claim's transaction, so claims of other playbooks pay nothing. The SSH executor
reads the same setting itself (ssh/hostkeys.py).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, select

from ikoma.storage.database import Tx
from ikoma.storage.prepared import Prepared
from ikoma.storage.tables import servers

# The playbooks that run apt-get: the built-in `apt.analyze` and `apt.upgrade`.
APT_PLAYBOOK_PREFIX = "apt."
_PROXY_OF_SERVER = Prepared(
    select(servers.c.apt_proxy_mode, servers.c.apt_proxy_url).where(servers.c.id == bindparam("p_server_id"))
)


async def add_to_claim(tx: Tx, claimed: dict[str, Any]) -> None:
    """Put the server's proxy URL into a claimed apt order (`aptProxyUrl` in the claim answer) when
    its mode is `proxy`; leave every other claim as it is."""
    if not str(claimed["playbook_key"]).startswith(APT_PLAYBOOK_PREFIX):
        return
    row = (await tx.execute(_PROXY_OF_SERVER, {"p_server_id": claimed["server_id"]})).first()
    if row is not None and row.apt_proxy_mode == "proxy" and row.apt_proxy_url:
        claimed["apt_proxy_url"] = row.apt_proxy_url
