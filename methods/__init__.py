"""Model-free math of Confidence Distillation: ``losses`` (torch), ``samplers`` and ``metrics`` (NumPy).

Importing the package registers the built-in methods (``catalogue``) in the method registry. Neither module imports
torch (each loss loads it when it first trains), so the NumPy-only evaluation code does not pull it in.
"""

from condi_pipe.methods.registry import METHODS, get_method, list_methods, method_names, register_method

# The built-ins register after the registry exists: the catalogue imports it.
from condi_pipe.methods import catalogue  # noqa: E402,F401  isort: skip

__all__ = ["METHODS", "get_method", "list_methods", "method_names", "register_method"]
