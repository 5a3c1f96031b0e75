"""The simulated engine: vLLM serving Llama-3.1-8B, with no GPU.

``cost`` (step times), ``request``, ``queues``, ``steps`` and ``engine`` (the pure scheduler
model, reused by the discrete-event simulator and benchmarks), ``text`` (token counts,
deterministic answers), ``tools`` (when and how the model calls a tool), ``call`` and ``wire``
(requests validated into a ``SimBatch`` of ``SimCall``s), ``respond`` (response shapes),
``config``, and the OpenAI-compatible HTTP engine: ``server`` (``create_sim_app``), ``state``
and ``metrics``. Nothing here imports ``proxy.sim.simulator``.
"""
