"""Calls between the router and the model services: the rows/cascade client and server halves
(`rows`), and the BentoML API as their fallback (`adapters`)."""
