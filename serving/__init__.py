"""The traffic router's brain: flag config, routing policy, circuit breaker, prediction cache."""
