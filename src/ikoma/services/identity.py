"""Who is calling: the admin key, an API client or a signed-in user, with the role they act with and
their server scope."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ikoma.domain.errors import Forbidden, NotFound
from ikoma.domain.roles import Role

PrincipalKind = Literal["admin", "api_client", "user"]


@dataclass(frozen=True)
class Principal:
    kind: PrincipalKind
    id: str
    name: str
    role: Role  # the role this request acts with (after X-Role)
    granted_role: Role  # the credential's own role
    token_prefix: str
    # None: every server; otherwise the only servers this client may see or act on
    server_ids: frozenset[str] | None = None

    @property
    def actor(self) -> str:
        """How timelines and events name who did it: `admin`, `api_client:<id>` or `user:<id>`."""
        return "admin" if self.kind == "admin" else f"{self.kind}:{self.id}"

    def allows(self, needed: Role) -> bool:
        return self.role >= needed

    def require(self, needed: Role, action: str) -> None:
        if not self.allows(needed):
            raise Forbidden(
                f"{action} needs role {needed.label}; this request acts as {self.role.label}",
                reason="forbidden",
                required=needed.label,
                role=self.role.label,
            )

    def can_see_server(self, server_id: str) -> bool:
        return self.server_ids is None or server_id in self.server_ids

    def require_server(self, server_id: str) -> None:
        """A scoped client learns nothing of servers outside its scope: they are simply not found."""
        if not self.can_see_server(server_id):
            raise NotFound("server not found", reason="server_not_found", serverId=server_id)
