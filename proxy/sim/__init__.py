"""The simulated engine: vLLM serving Llama-3.1-8B, with no GPU.

``cost`` (step times), ``queues`` and ``engine`` (the pure scheduler model, reused by the
discrete-event simulator and benchmarks), ``text`` (token counts, answers, request parsing),
``config`` and ``server`` (the OpenAI-compatible HTTP engine, ``create_sim_app``).
"""
