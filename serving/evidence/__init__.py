"""Pure statistics the controllers act on: evaluation windows and tests, the experiment report,
cost per request, input drift. No database, no settings, no I/O; clocks are passed in."""
