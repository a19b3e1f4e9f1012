"""Where a request goes: the router core, the routing policy, arms, cache, coalescer, breaker,
shadow.
"""
