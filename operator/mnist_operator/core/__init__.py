"""The core that decides for every substrate: reconcile(cr, observed, now) ->
Decision, the stage graph, the object builders, status and conditions. Pure
(no Kubernetes client, no kopf, no clock); imports only api."""
