"""Call traces live in ``proxy.trace`` (the live proxy writes them). This alias remains only
for ``proxy.sim.des``, until it imports from there."""

from proxy.trace import TraceRecorder

__all__ = ["TraceRecorder"]
