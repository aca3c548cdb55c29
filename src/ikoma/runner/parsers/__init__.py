"""Pure parsers for what built-in playbooks collect (apt, system probe, docker).

Text in, typed dicts out (camelCase keys, JSON-ready).  No subprocess and no file access,
except the few helpers that take an explicit root directory (``reboot_required``,
``read_device_tree_model``) so tests can point them at fixture trees.
"""

from ikoma.runner.parsers import apt, docker, system

__all__ = ["apt", "docker", "system"]
