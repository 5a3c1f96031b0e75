"""The scheduling core: the one copy of the mechanism around a policy.

Pure and synchronous (DESIGN.md rules 1, 2 and 11): no asyncio, no clock reads, no I/O. The
live gate (``proxy.gate``), the simulator's engine queue (``proxy.sim``) and the vLLM plug-in
(``proxy.backends.vllm_plugin``) all call it, so queueing, admission, the preemption rule,
anti-starvation re-ranking, service accounting and the order of the policy's lifecycle hooks
exist once:

- ``cost``: ``ServiceCost``, the service unit (estimated engine seconds);
- ``lifecycle``: the measurements of one call (waits, admission, finish) in the order the
  Policy contract documents;
- ``queue``: ``RankedQueue``, the waiting calls by priority, re-ranked incrementally;
- ``preempt``: ``PreemptRule`` (margin, minimum quantum) and the victim planners;
- ``admission``: ``Admission``, per-engine caps and the running sets;
- ``concurrency``: ``CapConfig`` and ``CapController``, the admission cap (k running calls per
  engine, fixed or set by a Vegas-style controller from step times and waiting calls).
"""
