"""Simulation, in two halves.

``engine``: the simulated engine, vLLM serving Llama-3.1-8B with no GPU: the pure engine model
and its cost model, and the OpenAI-compatible HTTP server around them (``autellix sim-engine``
and the proxy's embedded engine).

``simulator``: the discrete-event simulator and the benchmark (``autellix bench``): the event
loop, workloads, the sweep and its results. It runs the engine half's model in virtual time.

The simulator imports the engine half, never the reverse, so serving a simulated engine never
loads the event loop, the sweep or plotting.
"""
