"""The discrete-event simulator and ``autellix bench``.

``des`` (the event loop) with ``bookkeeping`` and ``runs``, ``policy_queue`` (the engine's
waiting queue ordered by a policy, over the scheduling core) and ``balancer``; ``simconfig``
(settings), ``workloads`` (synthetic programs and recorded traces), ``results`` (metrics of a
run), ``summary`` (throughput ratios and the table), ``sweep``, ``replay``, ``bench`` (the
CLI), ``progress`` and ``plot``. Engines are the simulated engine's own model
(``proxy.sim.engine``), run in virtual time.
"""
