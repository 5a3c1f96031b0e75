"""The engine-side Autellix scheduler for vLLM (V1), loaded into the engine with

    --scheduler-cls proxy.backends.vllm_plugin.scheduler.AutellixScheduler

It runs the proxy's own policy objects (PLAS, ATLAS, ...) inside vLLM's EngineCore: it orders
the waiting queue by the policy's priority, demotes calls as they are served, and preempts
running calls for waiting ones that outrank them, which stock vLLM never does. See docs/vllm.md.

Modules: ``queue`` (pure: the engine's call book, the policy-ordered queue, the preemption
decision), ``victims`` (the preemption rule), ``inflight`` (what vLLM's async-scheduling counters
say about a request), ``control`` (the engine's end of the proxy's control channel),
``scheduler`` (the vLLM subclass) and its two mix-ins, ``preemption`` (the preemption rule
applied to vLLM's requests) and ``diagnostics`` (warnings, contained failures, the event
record). Only ``scheduler`` and ``preemption`` import vLLM. Nothing here is imported by the
proxy.
"""
