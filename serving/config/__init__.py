"""Flags and settings: pydantic models validated at load; imports nothing else of serving."""
