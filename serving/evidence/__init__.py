"""Pure statistics behind the product's verdicts: evaluation windows and tests, anytime-valid
sequential tests and the sample-ratio check, the experiment report, cost per request, input drift.
No database, no settings, no I/O; clocks are passed in, and controllers in `serving.delivery` call
it with counts they read from the shared store."""
