"""IKOMA Control Plane: runners pull orders (runs of named playbooks) from one API."""

__version__ = "0.1.0"
