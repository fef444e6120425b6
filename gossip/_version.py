"""The package's version, in a module of its own: read by setuptools without importing the
package, and by modules that report it without importing the package root."""

__version__ = "0.1.0"
"""This release of gossip-cluster."""
