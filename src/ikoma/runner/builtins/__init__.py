"""The built-in playbooks (system, apt, docker): importing this package registers them.

Each module decorates its functions with ``@playbook(key)``; the keys match the catalog seeded
by migration 0002, so the runner announces exactly what the server offers.
"""

from ikoma.runner.builtins import apt, docker, system

__all__ = ["apt", "docker", "system"]
