"""The built-in playbooks (system, apt, docker): importing this package registers them.

Each module decorates its functions with ``@playbook(key)``; the keys match the catalog seeded
by migration 0002, so the runner announces exactly what the server offers.
"""

# apps, db, deploy, platform: the operations tools of issue 5 (apps.*, deploy.*, db.*,
# artifact.verify_release, platform.check), catalogued by migration 0005
from ikoma.runner.builtins import apps, apt, db, deploy, docker, platform, system

__all__ = ["apps", "apt", "db", "deploy", "docker", "platform", "system"]
