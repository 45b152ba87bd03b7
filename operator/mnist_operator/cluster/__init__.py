"""The operator on a cluster: kopf registrations (handlers.py), the runtime that
carries out the core's Decisions through the API server, the watch-fed cache,
the pass queue and the metrics. Imports core and api, never local or tools."""
