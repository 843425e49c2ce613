"""Request data shared by the serving layers (no HTTP here): which model version a request names."""

from __future__ import annotations


class ModelRequest:
    """What a /v1 URL asks for: model, version or label, and the method."""

    __slots__ = ("model", "version", "label", "method", "subresource")

    def __init__(self, model, version=None, label=None, method=None, subresource=None):
        self.model, self.version, self.label = model, version, label
        self.method, self.subresource = method, subresource

    def spec_str(self) -> str:
        """TF Serving's servable request text: ``Latest(m)`` / ``Specific(m, v)``."""
        if self.version is not None:
            return f"Specific({self.model}, {self.version})"
        return f"Latest({self.model})"
