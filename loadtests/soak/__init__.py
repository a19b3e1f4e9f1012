"""The soak test: a fixed arrival rate for a long time; zero errors, no p99 drift, bounded memory.

    python -m loadtests.soak ...   (the CLI: __main__.py; `--help` for the options)

Modules: __main__ (the CLI: runs Locust and samples the server, or --reanalyze), locustfile (the
fixed-rate Locust file with a log of every request), sampling (the server's process tree: RSS, fds,
threads per process), analysis (windows, p99 drift, memory growth, the verdict; pure functions) and
report (reads the run directory's files, writes report.md, soak.json and soak.png).
"""
