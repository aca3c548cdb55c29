"""How long a raw log artifact is kept: its retention policy and that policy's lifetime."""

from __future__ import annotations

from dataclasses import dataclass

POLICIES = ("default", "failed", "pinned", "short")
SUCCEEDED = "SUCCEEDED"


@dataclass(frozen=True)
class Retention:
    default_days: float = 30.0
    failed_days: float = 90.0
    short_days: float = 7.0
    # playbooks whose logs matter briefly (frequent scheduled collection)
    short_playbooks: frozenset[str] = frozenset({"system.metrics"})

    def policy_for(self, *, status: str, playbook_key: str) -> str:
        """A failed run's log is what someone will want to read later: it outlives the others."""
        if status != SUCCEEDED:
            return "failed"
        if playbook_key in self.short_playbooks:
            return "short"
        return "default"

    def lifetime_seconds(self, policy: str) -> float | None:
        """None: kept until unpinned."""
        days = {"default": self.default_days, "failed": self.failed_days, "short": self.short_days}
        if policy == "pinned":
            return None
        return days[policy] * 86400.0
